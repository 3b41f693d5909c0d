"""``VariantBatch``: n variants with one ALT each, held as whole arrays (the columnar form).

The client builds it from VCF blocks, the wire carries it as ``PackedVariants``, and the server
builds windows from it, so no part needs one Python object per variant on its hot path.

Layout (all arrays little-endian on the wire):

- ``contigs``: the contig names the batch uses; ``contig_index`` int32 [n] points into it;
- ``pos`` int64 [n]: 1-based positions (VCF POS);
- ``alleles``: REF and ALT of every variant as ASCII bytes in one buffer, ``allele_offsets``
  int64 [2n + 1]: REF of variant i is ``alleles[off[2i]:off[2i+1]]``, ALT ``alleles[off[2i+1]:off[2i+2]]``;
- ``ids`` / ``id_offsets`` int64 [n + 1] the same way (``id_offsets`` None: no ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_REQUEST_BYTES", "VariantBatch", "VariantBatchError"]

#: The request size rule client and server share: the client cuts requests to at most this many
#: variant bytes, and the server accepts, before parsing, any request up to this size plus
#: 512 bytes per variant of its limit (larger ones cannot be legal and are refused unparsed).
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class VariantBatchError(ValueError):
    """Arrays that do not form a batch (lengths, offsets, contig indices); names what is wrong."""


def _offsets(parts: Sequence[bytes]) -> np.ndarray:
    out = np.zeros(len(parts) + 1, dtype=np.int64)
    if parts:
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=out[1:])
    return out


@dataclass(frozen=True, eq=False)
class VariantBatch:
    """n variants with one ALT each; see the module docstring for the layout."""

    contigs: tuple[str, ...]
    contig_index: np.ndarray
    pos: np.ndarray
    alleles: bytes
    allele_offsets: np.ndarray
    ids: bytes = b""
    id_offsets: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.pos)
        if self.contig_index.shape != (n,) or self.allele_offsets.shape != (2 * n + 1,):
            raise VariantBatchError(
                f"{n} positions but {self.contig_index.shape[0]} contig indices and "
                f"{self.allele_offsets.shape[0]} allele offsets (want {n} and {2 * n + 1})"
            )
        off = self.allele_offsets
        if n and (off[0] != 0 or off[-1] != len(self.alleles) or np.any(np.diff(off) < 0)):
            raise VariantBatchError(
                f"allele offsets must rise from 0 to {len(self.alleles)} (the allele bytes)"
            )
        if n and (self.contig_index.min() < 0 or self.contig_index.max() >= len(self.contigs)):
            raise VariantBatchError(
                f"contig index outside the {len(self.contigs)} contig names of the batch"
            )
        if self.id_offsets is not None:
            ido = self.id_offsets
            if ido.shape != (n + 1,) or ido[0] != 0 or ido[-1] != len(self.ids):
                raise VariantBatchError(
                    f"id offsets must be {n + 1} values from 0 to {len(self.ids)}"
                )
            if np.any(np.diff(ido) < 0):
                raise VariantBatchError("id offsets must not decrease")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_columns(
        cls,
        chroms: Sequence[str],
        pos: Sequence[int] | np.ndarray,
        refs: Sequence[str | bytes],
        alts: Sequence[str | bytes],
        ids: Sequence[str] | None = None,
    ) -> VariantBatch:
        """A batch from per-variant columns (one Python pass over them)."""
        n = len(chroms)
        if not len(pos) == len(refs) == len(alts) == n or (ids is not None and len(ids) != n):
            raise VariantBatchError("columns of different lengths")
        names: dict[str, int] = {}
        index = np.fromiter(
            (names.setdefault(c, len(names)) for c in chroms), dtype=np.int32, count=n
        )
        parts: list[bytes] = []
        for r, a in zip(refs, alts, strict=True):
            parts.append(r if isinstance(r, bytes) else r.encode("ascii", "replace"))
            parts.append(a if isinstance(a, bytes) else a.encode("ascii", "replace"))
        id_parts = [i.encode("utf-8") for i in ids] if ids is not None else None
        return cls(
            contigs=tuple(names),
            contig_index=index,
            pos=np.asarray(pos, dtype=np.int64).reshape(n),
            alleles=b"".join(parts),
            allele_offsets=_offsets(parts),
            ids=b"".join(id_parts) if id_parts else b"",
            id_offsets=_offsets(id_parts) if id_parts is not None else None,
        )

    @classmethod
    def from_variants(cls, variants: Iterable[Any]) -> VariantBatch:
        """A batch from objects with ``chrom``, ``pos``, ``ref``, ``alt`` (and ``id``)."""
        items = list(variants)
        return cls.from_columns(
            [v.chrom for v in items],
            [int(v.pos) for v in items],
            [v.ref for v in items],
            [v.alt for v in items],
            [getattr(v, "id", "") or "" for v in items],
        )

    @classmethod
    def empty(cls) -> VariantBatch:
        return cls((), np.zeros(0, np.int32), np.zeros(0, np.int64), b"", np.zeros(1, np.int64))

    @classmethod
    def concat(cls, batches: Sequence[VariantBatch]) -> VariantBatch:
        """The batches one after the other (contig tables merged)."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        names: dict[str, int] = {}
        index_parts, offset_parts, id_parts = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        base = id_base = 0
        with_ids = all(b.id_offsets is not None for b in batches)
        for b in batches:
            remap = np.array([names.setdefault(c, len(names)) for c in b.contigs], dtype=np.int32)
            index_parts.append(remap[b.contig_index] if len(b) else b.contig_index)
            offset_parts.append(b.allele_offsets[1:] + base)
            base += len(b.alleles)
            if with_ids and b.id_offsets is not None:
                id_parts.append(b.id_offsets[1:] + id_base)
                id_base += len(b.ids)
        return cls(
            contigs=tuple(names),
            contig_index=np.concatenate(index_parts).astype(np.int32, copy=False),
            pos=np.concatenate([b.pos for b in batches]),
            alleles=b"".join(b.alleles for b in batches),
            allele_offsets=np.concatenate(offset_parts),
            ids=b"".join(b.ids for b in batches) if with_ids else b"",
            id_offsets=np.concatenate(id_parts) if with_ids else None,
        )

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def ref_lengths(self) -> np.ndarray:
        """int64 [n]: bytes of each REF."""
        return np.diff(self.allele_offsets)[0::2]

    @property
    def alt_lengths(self) -> np.ndarray:
        """int64 [n]: bytes of each ALT."""
        return np.diff(self.allele_offsets)[1::2]

    @property
    def chroms(self) -> np.ndarray:
        """object [n]: each variant's contig name."""
        return np.asarray(self.contigs + ("",), dtype=object)[self.contig_index]

    def ref(self, i: int) -> str:
        off = self.allele_offsets
        return self.alleles[off[2 * i] : off[2 * i + 1]].decode("ascii", "replace")

    def alt(self, i: int) -> str:
        off = self.allele_offsets
        return self.alleles[off[2 * i + 1] : off[2 * i + 2]].decode("ascii", "replace")

    def id(self, i: int) -> str:
        if self.id_offsets is None:
            return ""
        return self.ids[self.id_offsets[i] : self.id_offsets[i + 1]].decode("utf-8", "replace")

    def chrom(self, i: int) -> str:
        return self.contigs[int(self.contig_index[i])]

    def take(self, start: int, stop: int) -> VariantBatch:
        """Variants [start, stop) as a batch of their own (offsets rebased)."""
        stop = min(stop, len(self))
        off = self.allele_offsets[2 * start : 2 * stop + 1]
        a0 = int(off[0]) if len(off) else 0
        a1 = int(off[-1]) if len(off) else 0
        ids, id_off = b"", None
        if self.id_offsets is not None:
            io = self.id_offsets[start : stop + 1]
            ids = self.ids[int(io[0]) : int(io[-1])]
            id_off = io - io[0]
        return VariantBatch(
            contigs=self.contigs,
            contig_index=self.contig_index[start:stop],
            pos=self.pos[start:stop],
            alleles=self.alleles[a0:a1],
            allele_offsets=(off - a0) if len(off) else np.zeros(1, np.int64),
            ids=ids,
            id_offsets=id_off,
        )

    def rows(self) -> list[tuple[str, int, str, str, str]]:
        """Every variant as ``(chrom, pos, ref, alt, id)`` (per-variant Python: not for hot paths)."""
        return [
            (self.chrom(i), int(self.pos[i]), self.ref(i), self.alt(i), self.id(i))
            for i in range(len(self))
        ]
