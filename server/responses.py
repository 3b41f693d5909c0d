"""Score results into response messages: per-input messages, or whole packed arrays.

``fill_messages`` writes one VariantScore / SequenceScore per input (readable by any gRPC tool);
``fill_packed`` writes the response's ``PackedScores``: each score kind as one little-endian
float32 [n, F] buffer, so its cost does not grow with per-input Python (ScoreOptions.packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.scoring import ALL_KINDS, CALIBRATED_KINDS, KIND_FIELDS, ScoreResult

__all__ = ["fill_messages", "fill_packed", "response_bytes"]


_KINDS = ALL_KINDS + CALIBRATED_KINDS
_LE_F32 = np.dtype("<f4")
_LE_I32 = np.dtype("<i4")


def fill_messages(messages: Sequence[Any], result: ScoreResult, kinds: Sequence[int]) -> None:
    """Write status and score arrays into the per-input response messages (one per input)."""
    wanted = [(KIND_FIELDS[k], result.array(k).tolist()) for k in _KINDS if k in kinds]
    max_abs = result.max_abs_diff.tolist()
    max_index = result.max_index.tolist()
    features = result.features
    for i in result.noted:
        messages[i].status.message = result.messages[i]
    for i, code in enumerate(result.status.tolist()):
        if code:
            messages[i].status.code = code
    for row, i in enumerate(result.ok_index.tolist()):
        msg = messages[i]
        for name, values in wanted:
            getattr(msg, name).extend(values[row])
        msg.max_abs_diff = max_abs[row]
        msg.max_abs_diff_index = max_index[row]
        msg.max_abs_diff_feature = features[max_index[row]] if features else ""
    if pb.SCORE_KIND_QUANTILE in kinds and result.max_quantile is not None:
        max_q = result.max_quantile.tolist()
        q_index = (result.max_quantile_index if features else np.zeros(0, np.int64)).tolist()
        for row, i in enumerate(result.ok_index.tolist()):
            msg = messages[i]
            msg.max_quantile = max_q[row]
            if features:
                msg.max_quantile_index = q_index[row]
                msg.max_quantile_feature = features[q_index[row]]


def _expand(result: ScoreResult, rows: np.ndarray, fill: float | int, dtype: np.dtype) -> bytes:
    """Little-endian bytes of ``rows`` (the OK inputs) spread over all inputs, ``fill`` elsewhere."""
    n = len(result)
    if len(rows) == n:
        return np.ascontiguousarray(rows, dtype=dtype).tobytes()
    out = np.full((n,) + rows.shape[1:], fill, dtype=dtype)
    out[result.ok_index] = rows
    return out.tobytes()


def fill_packed(packed: Any, result: ScoreResult, kinds: Sequence[int]) -> None:
    """Write a response's PackedScores (see the proto): arrays over all n inputs, NaN rows
    (index -1) where the status is not OK."""
    packed.status.extend(result.status.tolist())
    for i in result.noted:
        packed.messages[i] = result.messages[i]
    for kind in _KINDS:
        if kind in kinds:
            setattr(packed, KIND_FIELDS[kind], _expand(result, result.array(kind), np.nan, _LE_F32))
    packed.max_abs_diff = _expand(result, result.max_abs_diff, np.nan, _LE_F32)
    packed.max_abs_diff_index = _expand(result, result.max_index, -1, _LE_I32)
    if pb.SCORE_KIND_QUANTILE in kinds and result.max_quantile is not None:
        packed.max_quantile = _expand(result, result.max_quantile, np.nan, _LE_F32)
        index = result.max_quantile_index
        packed.max_quantile_index = _expand(result, index, -1, _LE_I32)


def response_bytes(
    response: Any, result: ScoreResult, kinds: Sequence[int], packed: bool, make_row: Any
) -> bytes:
    """Fill ``response`` (a ScoreVariants/ScoreSequences response) from ``result`` and
    serialize it; ``make_row(i)`` adds the per-input message of input i (per-message form)."""
    response.features.extend(result.features)
    if packed:
        fill_packed(response.packed, result, kinds)
    else:
        fill_messages([make_row(i) for i in range(len(result))], result, kinds)
    return bytes(response.SerializeToString())
