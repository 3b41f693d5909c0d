"""Between the client's typed values and the varfx.v1 protobuf messages, written once for
Client and AsyncClient: requests from a VariantBatch (packed arrays, or one message per variant
when asked), responses (packed or per-message) to a ScoreTable, ListModels to ModelInfo."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from varfx.client.types import (
    ALL_SCORE_KINDS,
    SCORE_KINDS,
    Manifest,
    ModelInfo,
    RefPolicy,
    ScoreTable,
    SequencePair,
    Variant,
)
from varfx.core.genomes import ContigIdentity, GenomeIdentity
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb

__all__ = [
    "build_options",
    "manifest",
    "model_info",
    "packed_variants",
    "parse_kinds",
    "sequence_request",
    "table_from_response",
    "variant_request",
]

_U32_MAX = 2**32 - 1

_KIND_ENUM = {
    "ref": pb.SCORE_KIND_REF,
    "alt": pb.SCORE_KIND_ALT,
    "diff": pb.SCORE_KIND_DIFF,
    "log2fc": pb.SCORE_KIND_LOG2FC,
    "quantile": pb.SCORE_KIND_QUANTILE,
    "signed_quantile": pb.SCORE_KIND_SIGNED_QUANTILE,
    "pvalue": pb.SCORE_KIND_PVALUE,
}


def parse_kinds(scores: Iterable[str] | str | None) -> tuple[str, ...]:
    """Score kinds in API order from names (``"diff,quantile"`` or a list; the calibrated
    ``quantile``, ``signed_quantile``, ``pvalue`` need a calibrated model); None/empty = the
    four raw kinds."""
    if scores is None:
        return SCORE_KINDS
    names = scores.split(",") if isinstance(scores, str) else list(scores)
    wanted = {n.strip().lower() for n in names if n.strip()}
    bad = sorted(wanted - set(ALL_SCORE_KINDS))
    if bad:
        raise ValueError(f"unknown score kind(s) {bad}; expected some of {list(ALL_SCORE_KINDS)}")
    return tuple(k for k in ALL_SCORE_KINDS if k in wanted) or SCORE_KINDS


def build_options(
    scores: Iterable[str] | str | None,
    reverse_complement: bool,
    ref_policy: RefPolicy | str | int,
    features: Sequence[str] | None,
    indels_as_written: bool = False,
) -> pb.ScoreOptions:
    """ScoreOptions asking for packed responses (the client always reads those)."""
    kinds = parse_kinds(scores)
    return pb.ScoreOptions(
        scores=[_KIND_ENUM[k] for k in kinds],
        reverse_complement=bool(reverse_complement),
        ref_policy=int(RefPolicy.parse(ref_policy)),  # type: ignore[arg-type]
        features=list(features or ()),
        packed=True,
        indels_as_written=bool(indels_as_written),
    )


def _u32(offsets: np.ndarray, what: str) -> bytes:
    if len(offsets) and int(offsets[-1]) > _U32_MAX:
        raise ValueError(
            f"{int(offsets[-1]):,} bytes of {what} in one batch: the wire allows at most "
            f"{_U32_MAX:,}; use smaller batches"
        )
    return offsets.astype("<u4").tobytes()


def packed_variants(batch: VariantBatch) -> pb.PackedVariants:
    """The batch as PackedVariants: whole arrays, no per-variant Python (ids are left out
    when every id is empty)."""
    with_ids = batch.id_offsets is not None and len(batch.ids) > 0
    return pb.PackedVariants(
        contigs=list(batch.contigs),
        contig_index=batch.contig_index.astype("<i4", copy=False).tobytes(),
        pos=batch.pos.astype("<i8", copy=False).tobytes(),
        alleles=batch.alleles,
        allele_offsets=_u32(batch.allele_offsets, "REF/ALT alleles"),
        ids=batch.ids if with_ids else b"",
        id_offsets=_u32(batch.id_offsets, "ids") if with_ids else b"",  # type: ignore[arg-type]
    )


def _slices(data: bytes, offsets: np.ndarray, encoding: str) -> list[str]:
    """``data[offsets[i]:offsets[i+1]]`` decoded, for every i (one decode of the buffer when
    every character is one byte)."""
    text = data.decode(encoding, "replace")
    off = offsets.tolist()
    if len(text) != len(data):  # multi-byte characters: offsets count bytes, not characters
        return [data[a:b].decode(encoding, "replace") for a, b in itertools.pairwise(off)]
    return [text[a:b] for a, b in itertools.pairwise(off)]


def string_columns(
    batch: VariantBatch,
) -> tuple[list[str], list[int], list[str], list[str], list[str]]:
    """``(chroms, pos, refs, alts, ids)`` of a batch as Python lists (ids "" without ids)."""
    alleles = _slices(batch.alleles, batch.allele_offsets, "ascii")
    ids = (
        _slices(batch.ids, batch.id_offsets, "utf-8")
        if batch.id_offsets is not None
        else [""] * len(batch)
    )
    chroms = [batch.contigs[i] for i in batch.contig_index.tolist()]
    return chroms, batch.pos.tolist(), alleles[0::2], alleles[1::2], ids


def variant_request(
    variants: VariantBatch | Sequence[Variant],
    model: str,
    options: pb.ScoreOptions,
    model_version: int,
    *,
    packed: bool = False,
) -> pb.ScoreVariantsRequest:
    """A ScoreVariantsRequest: ``packed`` sends ``packed_variants`` (columnar), otherwise one
    ``Variant`` message per variant (the form every server version reads)."""
    batch = variants if isinstance(variants, VariantBatch) else VariantBatch.from_variants(variants)
    request = pb.ScoreVariantsRequest(model=model, model_version=model_version, options=options)
    if packed:
        request.packed_variants.CopyFrom(packed_variants(batch))
    else:
        request.variants.extend(
            pb.Variant(id=i, chrom=c, pos=p, ref=r, alt=a)
            for c, p, r, a, i in zip(*string_columns(batch), strict=True)
        )
    return request


def sequence_request(
    pairs: Sequence[SequencePair], model: str, options: pb.ScoreOptions, model_version: int
) -> pb.ScoreSequencesRequest:
    return pb.ScoreSequencesRequest(
        model=model,
        model_version=model_version,
        options=options,
        pairs=[pb.SequencePair(id=p.id, ref=p.ref, alt=p.alt) for p in pairs],
    )


def _inputs(
    items: VariantBatch | Sequence[Variant | SequencePair],
) -> tuple[VariantBatch, tuple[SequencePair, ...]]:
    if isinstance(items, VariantBatch):
        return items, ()
    if items and isinstance(items[0], SequencePair):
        return VariantBatch.empty(), tuple(items)  # type: ignore[arg-type]
    return VariantBatch.from_variants(items), ()


def table_from_response(
    response: pb.ScoreVariantsResponse | pb.ScoreSequencesResponse,
    items: VariantBatch | Sequence[Variant | SequencePair],
    kinds: Sequence[str],
) -> ScoreTable:
    """A ScoreTable from one response (scores in the order of ``items``: the request's batch,
    or its Variant / SequencePair objects): from its packed arrays when the server sent them
    (ScoreOptions.packed), else from per-input messages."""
    batch, pairs = _inputs(items)
    if response.HasField("packed"):
        return _table_from_packed(response, batch, pairs, kinds)
    n = len(pairs) or len(batch)
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
    if "quantile" in kinds:
        max_q = np.fromiter((s.max_quantile for s in scores), dtype=np.float32, count=n)
        max_q[~ok] = np.nan
        q_idx = np.fromiter((s.max_quantile_index for s in scores), dtype=np.int32, count=n)
        q_idx[~ok] = -1
        arrays.update(max_quantile=max_q, max_quantile_index=q_idx)
    return ScoreTable(
        model=response.model,
        model_version=int(response.model_version),
        features=features,
        batch=batch,
        pairs=pairs,
        status=status,
        messages=tuple(s.status.message for s in scores),
        max_abs_diff=mad,
        max_index=idx,
        manifest=manifest(response),
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
    batch: VariantBatch,
    pairs: tuple[SequencePair, ...],
    kinds: Sequence[str],
) -> ScoreTable:
    packed = response.packed
    n = len(pairs) or len(batch)
    if len(packed.status) != n:
        raise ValueError(f"server answered {len(packed.status)} statuses for {n} inputs")
    features = tuple(response.features)
    shape = (n, len(features))
    arrays = {k: _buffer(getattr(packed, k), "<f4", shape, k) for k in kinds}
    if "quantile" in kinds:
        arrays["max_quantile"] = _buffer(packed.max_quantile, "<f4", (n,), "max_quantile")
        arrays["max_quantile_index"] = _buffer(
            packed.max_quantile_index, "<i4", (n,), "max_quantile_index"
        )
    messages = [""] * n
    for i, text in packed.messages.items():
        if not 0 <= i < n:
            raise ValueError(f"server sent a status message for input {i} of {n}")
        messages[i] = text
    return ScoreTable(
        model=response.model,
        model_version=int(response.model_version),
        features=features,
        batch=batch,
        pairs=pairs,
        status=np.array(packed.status, dtype=np.int8),
        messages=tuple(messages),
        max_abs_diff=_buffer(packed.max_abs_diff, "<f4", (n,), "max_abs_diff"),
        max_index=_buffer(packed.max_abs_diff_index, "<i4", (n,), "max_abs_diff_index"),
        manifest=manifest(response),
        **arrays,
    )


def manifest(response: pb.ScoreVariantsResponse | pb.ScoreSequencesResponse) -> Manifest | None:
    """The response's Manifest (None from a server that sends none)."""
    if not response.HasField("manifest"):
        return None
    m = response.manifest
    return Manifest(
        model=m.model,
        model_version=int(m.model_version),
        model_sha256=m.model_sha256,
        assembly=m.assembly,
        genome_digest=m.genome_digest,
        window_length=int(m.window_length),
        reverse_complement=bool(m.reverse_complement),
        ref_policy=RefPolicy.parse(int(m.ref_policy) or int(RefPolicy.STRICT)),
        server_version=m.server_version,
        genome_mismatch_allowed=bool(m.genome_mismatch_allowed),
        indel_normalization=m.indel_normalization,
        calibration=m.calibration,
    )


def _genome(g: pb.GenomeIdentity, present: bool) -> GenomeIdentity | None:
    if not present:
        return None
    contigs = tuple(ContigIdentity(c.name, int(c.length), c.md5) for c in g.contigs)
    return GenomeIdentity(assembly=g.assembly, contigs=contigs)


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
        sha256=m.sha256,
        genome=_genome(m.genome, m.HasField("genome")),
        training_genome=_genome(m.training_genome, m.HasField("training_genome")),
        genome_mismatch_allowed=bool(m.genome_mismatch_allowed),
        calibration=m.calibration,
    )
