"""Reference genome access: a pysam FASTA with chromosome-name aliasing and N padding."""

from __future__ import annotations

import itertools
import mmap
import os
import threading
from collections.abc import Mapping
from types import TracebackType

import numpy as np
import pysam

from varfx.core.contigs import ContigResolver
from varfx.core.tokens import TOKEN_TABLE

__all__ = ["Genome"]

_SPAN = 1 << 20  # most bases read in one span when gathering windows


def _open_problem(path: str) -> str:
    """Why pysam could not open ``path`` as an indexed FASTA, as far as we can tell."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:2] == b"\x1f\x8b" and not (head[3:4] == b"\x04" and head[12:14] == b"BC"):
        return (
            f"genome {path} is gzip-compressed but not with bgzip; recompress it:"
            f" gunzip {path} && bgzip {path.removesuffix('.gz')}"
        )
    if head[:2] != b"\x1f\x8b" and not head.lstrip().startswith(b">"):
        return f"genome {path} is not a FASTA file (it does not start with '>')"
    return (
        f"cannot open genome FASTA {path}: its .fai (and .gzi) index is missing or broken and"
        " could not be built (is the directory writable?)"
    )


class Genome:
    """A reference genome read with pysam (plain FASTA, or bgzipped with .fai and .gzi).

    ``fetch`` is thread-safe (one pysam handle per thread): the server builds windows in worker
    threads.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"genome FASTA not found: {self.path}")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[pysam.FastaFile] = []  # every thread's handle, closed by close()
        try:
            fasta = self._handle()
        except OSError as exc:
            raise OSError(_open_problem(self.path)) from exc
        self.contigs: Mapping[str, int] = dict(zip(fasta.references, fasta.lengths, strict=True))
        self._resolver = ContigResolver(self.contigs)
        self._map = _PlainFastaMap.open(self.path, self.contigs)
        self._plain = self._map is not None  # close() unmaps; fetch_windows maps it again

    def _handle(self) -> pysam.FastaFile:
        fasta = getattr(self._local, "fasta", None)
        if fasta is None:
            fasta = pysam.FastaFile(self.path)
            self._local.fasta = fasta
            with self._lock:
                self._handles.append(fasta)
        return fasta

    def resolve(self, chrom: str) -> str | None:
        """The genome's name for ``chrom`` (``varfx.core.contigs``: exact, then with/without
        ``chr``, chrM<->MT), or None."""
        return self._resolver.resolve(chrom)

    def fetch(self, contig: str, start: int, end: int) -> bytes:
        """Bases [start, end) of ``contig`` (0-based, half-open), uppercase ASCII.

        Positions outside the contig come back as ``N``, so the result is always ``end - start``
        bytes long.
        """
        lo, hi = max(start, 0), min(end, self.contigs[contig])
        seq = self._handle().fetch(contig, lo, hi).upper().encode("ascii") if hi > lo else b""
        return _n_padded(seq, start, end, lo)

    def fetch_windows(
        self, contig: str, starts: np.ndarray, length: int, *, tokens: bool = False
    ) -> np.ndarray:
        """Bases [s, s + length) of ``contig`` for every start s (0-based): uint8 [k, length],
        uppercase ASCII (``N`` outside the contig; the same bases as ``fetch``), or with
        ``tokens`` the varfx tokens (A0 C1 G2 T3, N and anything else 4).

        Nearby windows are read as one span (a slice of the memory-mapped file for a plain
        FASTA, one pysam fetch for a bgzipped one) and cut out of it with one gather, so the
        cost per window is a row copy, not a Python call."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=np.uint8)
        if not len(starts):
            return out
        fmap = self._map if self._map is not None or not self._plain else self._remap()
        order = np.argsort(starts, kind="stable")
        ordered = starts[order]
        # a new span where the gap to the previous window is large, or the span would be long
        gaps = np.flatnonzero(np.diff(ordered) > max(4 * length, 4096)) + 1
        bounds = [0, *gaps.tolist(), len(ordered)]
        for first, stop in itertools.pairwise(bounds):
            i = first
            while i < stop:
                lo = int(ordered[i])
                j = int(np.searchsorted(ordered[i:stop], lo + _SPAN - length, side="right")) + i
                j = max(j, i + 1)
                hi = int(ordered[j - 1]) + length
                if fmap is not None:
                    seg = fmap.span(contig, lo, hi, tokens)
                else:
                    seg = self.fetch(contig, lo, hi)
                    if tokens:
                        seg = seg.translate(_TOKEN_BYTES)
                rows = np.lib.stride_tricks.sliding_window_view(
                    np.frombuffer(seg, dtype=np.uint8), length
                )
                out[order[i:j]] = rows[ordered[i:j] - lo]
                i = j
        return out

    def _remap(self) -> _PlainFastaMap | None:
        with self._lock:
            if self._map is None:
                self._map = _PlainFastaMap.open(self.path, self.contigs)
            return self._map

    def close(self) -> None:
        """Close the FASTA handles of every thread and unmap a plain FASTA (call when no fetch
        is running). A later fetch opens what it needs again."""
        with self._lock:
            handles, self._handles = self._handles, []
            fmap, self._map = self._map, None
        for fasta in handles:
            fasta.close()
        if fmap is not None:
            fmap.close()
        self._local = threading.local()

    def __enter__(self) -> Genome:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _n_padded(seq: bytes, start: int, end: int, lo: int, pad: bytes = b"N") -> bytes:
    """``seq``, the bases from ``lo`` on that lie inside the contig, padded with ``N`` to the
    ``end - start`` bases of [start, end) (``lo = max(start, 0)``; ``seq`` may be empty)."""
    left = min(lo - start, end - start)
    right = end - start - left - len(seq)
    return pad * left + seq + pad * right if left or right else seq


_TOKEN_BYTES = TOKEN_TABLE.tobytes()  # bytes.translate table: any byte -> its varfx token
# bytes.translate table: ASCII upper case (a C loop); with ``delete=b"\r\n"`` it also drops line ends
_UPPER = bytes(b - 32 if ord("a") <= b <= ord("z") else b for b in range(256))


class _PlainFastaMap:
    """A plain FASTA memory-mapped read-only, addressed through its ``.fai`` rows
    (offset of the first base, bases per line, bytes per line): a window is one slice of the
    file and one ``bytes.translate`` that upper-cases it and drops the line ends."""

    def __init__(self, data: mmap.mmap, rows: dict[str, tuple[int, int, int, int]]) -> None:
        self._data = data
        self._rows = rows  # contig -> (length, offset, line_bases, line_bytes)

    @classmethod
    def open(cls, path: str, contigs: Mapping[str, int]) -> _PlainFastaMap | None:
        """The map of a plain FASTA whose .fai agrees with pysam, else None (bgzip, odd index)."""
        try:
            with open(path, "rb") as fh:
                if fh.read(2) == b"\x1f\x8b":
                    return None
                rows: dict[str, tuple[int, int, int, int]] = {}
                with open(path + ".fai", encoding="ascii") as fai:
                    for line in fai:
                        name, size, offset, bases, width = line.split("\t")[:5]
                        rows[name] = (int(size), int(offset), int(bases), int(width))
                if any(rows.get(name, (-1,))[0] != size for name, size in contigs.items()):
                    return None
                if any(r[2] <= 0 or r[3] < r[2] for r in rows.values() if r[0]):
                    return None
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        return cls(data, rows)

    def span(self, contig: str, start: int, end: int, tokens: bool) -> bytes:
        """Bases [start, end) of ``contig``: uppercase ASCII (N-padded outside the contig), or
        varfx tokens (padded with the N token); one slice and one ``bytes.translate``."""
        size, offset, bases, width = self._rows[contig]
        lo, hi = max(start, 0), min(end, size)
        seq = b""
        if hi > lo:
            a = offset + (lo // bases) * width + lo % bases
            last = hi - 1
            b = offset + (last // bases) * width + last % bases + 1
            seq = self._data[a:b].translate(_TOKEN_BYTES if tokens else _UPPER, b"\r\n")
            if len(seq) != hi - lo:  # the file does not match its .fai
                raise OSError(f"{contig}: the FASTA does not match its .fai index")
        return _n_padded(seq, start, end, lo, b"\x04" if tokens else b"N")

    def close(self) -> None:
        self._data.close()
