"""Request messages into typed inputs: the columnar ``PackedVariants`` decoded with
``numpy.frombuffer`` (no per-variant object), the per-message form for tools such as grpcurl, and
the size rules checked before anything is decoded.

Size rules (bytes of one serialized request message):

- ``max_request_bytes(max_variants)``: a varfx.v1 request of at most ``max_variants`` variants
  (or sequence pairs) takes at most 512 B per variant on average plus ``MAX_REQUEST_BYTES`` (what
  the client puts in one request, whatever its count); anything larger cannot be legal.
- ``max_infer_bytes(max_batch, length)``: a KServe ModelInferRequest holds at most ``max_batch``
  windows of ``length`` positions, at most 16 B each (one-hot FP32, 4 channels), plus 1 MiB.
- ``receive_limit(...)``: the largest of those over the served models, capped at the message
  limit: gRPC core's ``grpc.max_receive_message_length`` for the port. Core compares it with a
  message's 5-byte length prefix and fails the call (RESOURCE_EXHAUSTED "Received message larger
  than max") before the body is read (grpcio >= 1.85; bench/soak.py scenario B measures it), so
  an oversized request costs neither its upload nor server memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from varfx.core.variants import MAX_REQUEST_BYTES, VariantBatch, VariantBatchError
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.errors import InvalidRequestError

__all__ = [
    "decode_message",
    "max_infer_bytes",
    "max_request_bytes",
    "receive_limit",
    "variants_of",
]

M = TypeVar("M")

# Bytes one variant may take in a request message on average (alleles, name, id).
_BYTES_PER_VARIANT = 512
# Bytes one window position may take in a ModelInferRequest (FP32 one-hot: 4 channels x 4 B).
_BYTES_PER_POSITION = 16
_INFER_SLACK = 1 << 20  # names, shapes and parameters of a ModelInferRequest


def max_request_bytes(max_variants: int) -> int:
    """The largest legal varfx.v1 request of at most ``max_variants`` inputs, in bytes."""
    return max_variants * _BYTES_PER_VARIANT + MAX_REQUEST_BYTES


def max_infer_bytes(max_batch: int, length: int) -> int:
    """The largest legal KServe ModelInferRequest of ``max_batch`` windows of ``length``, in bytes."""
    return max_batch * length * _BYTES_PER_POSITION + _INFER_SLACK


def receive_limit(
    max_message_bytes: int, max_variants: int, max_batch: int, lengths: Sequence[int]
) -> int:
    """gRPC core's receive limit for the serving port: the largest legal request of any served
    method (``lengths``: the served models' window lengths), at most ``max_message_bytes``."""
    legal = max(
        [max_request_bytes(max_variants), *(max_infer_bytes(max_batch, n) for n in lengths)]
    )
    return min(max_message_bytes, legal)


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
