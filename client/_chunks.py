"""Cutting a job's variants into requests: at most ``batch_size`` variants and at most
``max_bytes`` bytes each (so long alleles or ids never exceed a message limit), read lazily."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from varfx.client.types import Variant, VariantLike
from varfx.core.variants import MAX_REQUEST_BYTES, VariantBatch

__all__ = ["MAX_REQUEST_BYTES", "batch_bytes", "batches", "chunked", "split_batch"]

# MAX_REQUEST_BYTES (varfx.core.variants): the bound on the variant bytes (alleles, ids, contig
# names, ~24 bytes of fields each) of one request the client cuts; the server accepts any
# request this large unparsed.
_PER_VARIANT = 24


def chunked(
    variants: Iterable[VariantLike], size: int, max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[list[Variant]]:
    """Lists of at most ``size`` Variants (coerced from tuples/dicts) and at most ``max_bytes``
    of variant bytes (a single larger variant goes alone)."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    chunk: list[Variant] = []
    used = 0
    for value in variants:
        v = Variant.coerce(value)
        cost = len(v.chrom) + len(v.ref) + len(v.alt) + len(v.id) + _PER_VARIANT
        if chunk and used + cost > max_bytes:
            yield chunk
            chunk, used = [], 0
        chunk.append(v)
        used += cost
        if len(chunk) == size:  # out as soon as full: the input is not read ahead
            yield chunk
            chunk, used = [], 0
    if chunk:
        yield chunk


def batch_bytes(batch: VariantBatch) -> np.ndarray:
    """int64 [n]: each variant's bytes as ``chunked`` counts them."""
    alleles = np.diff(batch.allele_offsets).reshape(-1, 2).sum(axis=1)
    ids = np.diff(batch.id_offsets) if batch.id_offsets is not None else 0
    names = np.array([len(c) for c in batch.contigs] + [0], dtype=np.int64)[batch.contig_index]
    return np.asarray(alleles + ids + names + _PER_VARIANT, dtype=np.int64)


def split_batch(
    batch: VariantBatch, size: int, max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[VariantBatch]:
    """Consecutive slices of ``batch`` of at most ``size`` variants and ``max_bytes`` bytes."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    ends = np.cumsum(batch_bytes(batch))
    start, n = 0, len(batch)
    while start < n:
        base = int(ends[start - 1]) if start else 0
        fit = int(np.searchsorted(ends, base + max_bytes, side="right"))
        stop = min(start + size, max(fit, start + 1), n)
        yield batch.take(start, stop)
        start = stop


def batches(
    variants: VariantBatch | Iterable[VariantLike], size: int, max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[VariantBatch]:
    """VariantBatches of at most ``size`` variants and ``max_bytes`` bytes, read lazily: slices
    of a VariantBatch, or Variants / tuples / dicts coerced as they are read."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    if isinstance(variants, VariantBatch):
        return split_batch(variants, size, max_bytes)
    return (VariantBatch.from_variants(c) for c in chunked(variants, size, max_bytes))
