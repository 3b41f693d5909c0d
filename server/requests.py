"""Request messages into typed inputs: the columnar ``PackedVariants`` decoded with
``numpy.frombuffer`` (no per-variant object), the per-message form for tools such as grpcurl, and
the size rules checked before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from varfx.core.variants import VariantBatch, VariantBatchError
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.errors import InvalidRequestError

__all__ = ["decode_message", "variants_of"]

M = TypeVar("M")


def decode_message(parse: Callable[[bytes], M], data: bytes, what: str) -> M:
    """``parse(data)``, with a malformed message turned into InvalidRequestError."""
    try:
        return parse(data)
    except DecodeError as exc:
        raise InvalidRequestError(f"malformed {what} ({len(data)} bytes): {exc}") from None


def _array(data: bytes, dtype: str, what: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if len(data) % size:
        raise InvalidRequestError(
            f"packed_variants.{what}: {len(data)} bytes is not a whole number of {size}-byte values"
        )
    return np.frombuffer(data, dtype=dtype)


def _packed(p: Any) -> VariantBatch:
    pos = _array(p.pos, "<i8", "pos")
    n = len(pos)
    index = _array(p.contig_index, "<i4", "contig_index")
    offsets = _array(p.allele_offsets, "<u4", "allele_offsets")
    if len(index) != n or len(offsets) != 2 * n + 1:
        raise InvalidRequestError(
            f"packed_variants: {n} positions need {n} contig_index values and {2 * n + 1} "
            f"allele_offsets, got {len(index)} and {len(offsets)}"
        )
    id_offsets = None
    if p.id_offsets or p.ids:
        id_offsets = _array(p.id_offsets, "<u4", "id_offsets").astype(np.int64)
        if len(id_offsets) != n + 1:
            raise InvalidRequestError(
                f"packed_variants: {n} variants need {n + 1} id_offsets, got {len(id_offsets)}"
            )
    try:
        return VariantBatch(
            contigs=tuple(p.contigs),
            contig_index=index.astype(np.int32),
            pos=pos.astype(np.int64),
            alleles=bytes(p.alleles),
            allele_offsets=offsets.astype(np.int64),
            ids=bytes(p.ids),
            id_offsets=id_offsets,
        )
    except VariantBatchError as exc:
        raise InvalidRequestError(f"packed_variants: {exc}") from None


def variants_of(request: pb.ScoreVariantsRequest, max_variants: int) -> VariantBatch:
    """The request's variants as a batch (packed or per-message form, not both), at most
    ``max_variants`` of them."""
    packed = request.HasField("packed_variants")
    n = len(request.packed_variants.pos) // 8 if packed else len(request.variants)
    if packed and len(request.variants):
        raise InvalidRequestError("set either 'variants' or 'packed_variants', not both")
    if n > max_variants:
        raise InvalidRequestError(
            f"{n} variants in one request; the limit is {max_variants} "
            "(use StreamScoreVariants for more)"
        )
    if packed:
        return _packed(request.packed_variants)
    return VariantBatch.from_variants(request.variants)
