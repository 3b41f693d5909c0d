"""Score arrays into response messages: per-input messages, or whole packed arrays.

``fill_messages`` writes one VariantScore / SequenceScore per input (readable by any gRPC tool);
``fill_packed`` writes the response's ``PackedScores``: each score kind as one little-endian
float32 [n, F] buffer, so its cost does not grow with per-input Python (ScoreOptions.packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.windows import VariantWindows

__all__ = ["ALL_KINDS", "Scored", "fill_messages", "fill_packed"]

ALL_KINDS = (pb.SCORE_KIND_REF, pb.SCORE_KIND_ALT, pb.SCORE_KIND_DIFF, pb.SCORE_KIND_LOG2FC)
_FIELDS = {
    pb.SCORE_KIND_REF: "ref",
    pb.SCORE_KIND_ALT: "alt",
    pb.SCORE_KIND_DIFF: "diff",
    pb.SCORE_KIND_LOG2FC: "log2fc",
}
_LE_F32 = np.dtype("<f4")
_LE_I32 = np.dtype("<i4")


@dataclass(frozen=True)
class Scored:
    """Scores of the OK rows of a request, in request order (k = OK rows, F = features).

    Attributes:
        features: the F feature names the columns refer to.
        ref, alt, diff, log2fc: float32 [k, F].
        max_abs: float32 [k]; max_index: int64 [k].
    """

    features: tuple[str, ...]
    ref: np.ndarray
    alt: np.ndarray
    diff: np.ndarray
    log2fc: np.ndarray
    max_abs: np.ndarray
    max_index: np.ndarray

    def array(self, kind: int) -> np.ndarray:
        """The float32 [k, F] array of a ScoreKind."""
        return getattr(self, _FIELDS[kind])  # type: ignore[no-any-return]


def fill_messages(
    messages: Sequence[Any], windows: VariantWindows, scored: Scored, kinds: Sequence[int]
) -> None:
    """Write status and score arrays into the per-input response messages (one per input)."""
    wanted = [(_FIELDS[k], scored.array(k).tolist()) for k in ALL_KINDS if k in kinds]
    max_abs = scored.max_abs.tolist()
    max_index = scored.max_index.tolist()
    features = scored.features
    row = 0
    for i, msg in enumerate(messages):
        code = int(windows.status[i])
        msg.status.code = code
        if windows.messages[i]:
            msg.status.message = windows.messages[i]
        if code != pb.OK:
            continue
        for field, values in wanted:
            getattr(msg, field).extend(values[row])
        msg.max_abs_diff = max_abs[row]
        msg.max_abs_diff_index = max_index[row]
        msg.max_abs_diff_feature = features[max_index[row]] if features else ""
        row += 1


def _expand(ok: np.ndarray, rows: np.ndarray, fill: float | int, dtype: np.dtype) -> bytes:
    """Little-endian bytes of ``rows`` (the OK inputs) spread over all inputs, ``fill`` elsewhere."""
    if len(rows) == len(ok):
        return np.ascontiguousarray(rows, dtype=dtype).tobytes()
    out = np.full((len(ok),) + rows.shape[1:], fill, dtype=dtype)
    out[ok] = rows
    return out.tobytes()


def fill_packed(packed: Any, windows: VariantWindows, scored: Scored, kinds: Sequence[int]) -> None:
    """Write a response's PackedScores (see the proto): arrays over all n inputs, NaN rows
    (index -1) where the status is not OK."""
    ok = np.asarray(windows.ok, dtype=bool)
    packed.status.extend(np.asarray(windows.status, dtype=np.int32).tolist())
    for i, message in enumerate(windows.messages):
        if message:
            packed.messages[i] = message
    for kind in ALL_KINDS:
        if kind in kinds:
            setattr(packed, _FIELDS[kind], _expand(ok, scored.array(kind), np.nan, _LE_F32))
    packed.max_abs_diff = _expand(ok, scored.max_abs, np.nan, _LE_F32)
    packed.max_abs_diff_index = _expand(ok, scored.max_index, -1, _LE_I32)
