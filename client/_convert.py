"""Between the client's typed values and the varfx.v1 protobuf messages."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from varfx.client.types import (
    SCORE_KINDS,
    ModelInfo,
    RefPolicy,
    ScoreTable,
    SequencePair,
    Variant,
)
from varfx.proto.v1 import varfx_pb2 as pb

__all__ = [
    "build_options",
    "model_info",
    "parse_kinds",
    "sequence_request",
    "table_from_response",
    "variant_request",
]

_KIND_ENUM = {
    "ref": pb.SCORE_KIND_REF,
    "alt": pb.SCORE_KIND_ALT,
    "diff": pb.SCORE_KIND_DIFF,
    "log2fc": pb.SCORE_KIND_LOG2FC,
}


def parse_kinds(scores: Iterable[str] | str | None) -> tuple[str, ...]:
    """Score kinds in API order from names (``"diff,log2fc"`` or a list); None/empty = all four."""
    if scores is None:
        return SCORE_KINDS
    names = scores.split(",") if isinstance(scores, str) else list(scores)
    wanted = {n.strip().lower() for n in names if n.strip()}
    bad = sorted(wanted - set(SCORE_KINDS))
    if bad:
        raise ValueError(f"unknown score kind(s) {bad}; expected some of {list(SCORE_KINDS)}")
    return tuple(k for k in SCORE_KINDS if k in wanted) or SCORE_KINDS


def build_options(
    scores: Iterable[str] | str | None,
    reverse_complement: bool,
    ref_policy: RefPolicy | str | int,
    features: Sequence[str] | None,
) -> pb.ScoreOptions:
    kinds = parse_kinds(scores)
    return pb.ScoreOptions(
        scores=[_KIND_ENUM[k] for k in kinds],
        reverse_complement=bool(reverse_complement),
        ref_policy=int(RefPolicy.parse(ref_policy)),  # type: ignore[arg-type]
        features=list(features or ()),
        packed=True,
    )


def variant_request(
    variants: Sequence[Variant], model: str, options: pb.ScoreOptions, model_version: int
) -> pb.ScoreVariantsRequest:
    return pb.ScoreVariantsRequest(
        model=model,
        model_version=model_version,
        options=options,
        variants=[
            pb.Variant(id=v.id, chrom=v.chrom, pos=v.pos, ref=v.ref, alt=v.alt) for v in variants
        ],
    )


def sequence_request(
    pairs: Sequence[SequencePair], model: str, options: pb.ScoreOptions, model_version: int
) -> pb.ScoreSequencesRequest:
    return pb.ScoreSequencesRequest(
        model=model,
        model_version=model_version,
        options=options,
        pairs=[pb.SequencePair(id=p.id, ref=p.ref, alt=p.alt) for p in pairs],
    )


def table_from_response(
    response: pb.ScoreVariantsResponse | pb.ScoreSequencesResponse,
    items: Sequence[Variant | SequencePair],
    kinds: Sequence[str],
) -> ScoreTable:
    """A ScoreTable from one response (scores in the order of ``items``): from its packed
    arrays when the server sent them (ScoreOptions.packed), else from per-input messages."""
    if response.HasField("packed"):
        return _table_from_packed(response, items, kinds)
    n = len(items)
    scores: Any = response.scores
    if len(scores) != n:
        raise ValueError(f"server answered {len(scores)} scores for {n} inputs")
    features = tuple(response.features)
    f = len(features)
    status = np.fromiter((s.status.code for s in scores), dtype=np.int8, count=n)
    ok = status == 0
    mad = np.fromiter((s.max_abs_diff for s in scores), dtype=np.float32, count=n)
    mad[~ok] = np.nan
    idx = np.fromiter((s.max_abs_diff_index for s in scores), dtype=np.int32, count=n)
    idx[~ok] = -1
    arrays: dict[str, np.ndarray] = {}
    rows = np.flatnonzero(ok)
    scored = list(scores) if rows.size == n else [scores[int(i)] for i in rows]
    for kind in kinds:
        arr = np.full((n, f), np.nan, dtype=np.float32)
        if rows.size and f:
            flat = list(itertools.chain.from_iterable(getattr(s, kind) for s in scored))
            if len(flat) != rows.size * f:
                raise ValueError(f"server returned {kind} arrays of the wrong length (want {f})")
            arr[rows] = np.array(flat, dtype=np.float32).reshape(rows.size, f)
        arrays[kind] = arr
    return ScoreTable(
        model=response.model,
        model_version=int(response.model_version),
        features=features,
        items=tuple(items),
        status=status,
        messages=tuple(s.status.message for s in scores),
        max_abs_diff=mad,
        max_index=idx,
        **arrays,
    )


def _buffer(data: bytes, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A writable array of ``shape`` from little-endian ``data``; ValueError if it does not fit."""
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != want:
        raise ValueError(f"server sent {len(data)} bytes of {what}, expected {want} for {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype[1:], copy=True)


def _table_from_packed(
    response: pb.ScoreVariantsResponse | pb.ScoreSequencesResponse,
    items: Sequence[Variant | SequencePair],
    kinds: Sequence[str],
) -> ScoreTable:
    packed = response.packed
    n = len(items)
    if len(packed.status) != n:
        raise ValueError(f"server answered {len(packed.status)} statuses for {n} inputs")
    features = tuple(response.features)
    shape = (n, len(features))
    arrays = {k: _buffer(getattr(packed, k), "<f4", shape, k) for k in kinds}
    messages = [""] * n
    for i, text in packed.messages.items():
        if not 0 <= i < n:
            raise ValueError(f"server sent a status message for input {i} of {n}")
        messages[i] = text
    return ScoreTable(
        model=response.model,
        model_version=int(response.model_version),
        features=features,
        items=tuple(items),
        status=np.array(packed.status, dtype=np.int8),
        messages=tuple(messages),
        max_abs_diff=_buffer(packed.max_abs_diff, "<f4", (n,), "max_abs_diff"),
        max_index=_buffer(packed.max_abs_diff_index, "<i4", (n,), "max_abs_diff_index"),
        **arrays,
    )


def model_info(m: pb.ModelInfo) -> ModelInfo:
    try:
        metadata = json.loads(m.metadata_json) if m.metadata_json else {}
    except ValueError:
        metadata = {"raw": m.metadata_json}
    return ModelInfo(
        name=m.name,
        version=int(m.version),
        versions=tuple(int(v) for v in m.versions),
        features=tuple(m.features),
        sequence_length=int(m.sequence_length),
        assembly=m.assembly,
        device=m.device,
        input_kind=m.input_kind,
        output_kind=m.output_kind,
        alphabet=m.alphabet,
        is_default=bool(m.is_default),
        max_batch=int(m.max_batch),
        metadata=metadata if isinstance(metadata, dict) else {"value": metadata},
    )
