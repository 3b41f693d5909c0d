"""Reference genome access: a pysam FASTA with chromosome-name aliasing and N padding."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from types import TracebackType

import pysam

__all__ = ["Genome", "chrom_aliases"]

_MITO = ("chrM", "MT", "chrMT", "M")
_MAX_CACHED = 10_000


def chrom_aliases(chrom: str) -> list[str]:
    """Names a chromosome may go by, in order of preference: itself, with/without ``chr``,
    and the mitochondrial synonyms chrM / MT / chrMT / M."""
    names = [chrom]
    if chrom in _MITO:
        names += [m for m in _MITO if m != chrom]
    elif chrom.startswith("chr"):
        names.append(chrom[3:])
    else:
        names.append("chr" + chrom)
    return names


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
        self._resolved: dict[str, str | None] = {}

    def _handle(self) -> pysam.FastaFile:
        fasta = getattr(self._local, "fasta", None)
        if fasta is None:
            fasta = pysam.FastaFile(self.path)
            self._local.fasta = fasta
            with self._lock:
                self._handles.append(fasta)
        return fasta

    def resolve(self, chrom: str) -> str | None:
        """The genome's name for ``chrom`` (exact, then chr-prefix both ways, chrM<->MT), or None."""
        try:
            return self._resolved[chrom]
        except KeyError:
            pass
        found = next((name for name in chrom_aliases(chrom) if name in self.contigs), None)
        if found is not None or len(self._resolved) < _MAX_CACHED:
            self._resolved[chrom] = found  # unknown names from callers must not grow it unbounded
        return found

    def fetch(self, contig: str, start: int, end: int) -> bytes:
        """Bases [start, end) of ``contig`` (0-based, half-open), uppercase ASCII.

        Positions outside the contig come back as ``N``, so the result is always ``end - start``
        bytes long.
        """
        length = self.contigs[contig]
        lo, hi = max(start, 0), min(end, length)
        seq = self._handle().fetch(contig, lo, hi).upper().encode("ascii") if hi > lo else b""
        left = min(lo - start, end - start)
        right = end - start - left - len(seq)
        if left or right:
            seq = b"N" * left + seq + b"N" * right
        return seq

    def close(self) -> None:
        """Close the FASTA handles of every thread (call when no fetch is running)."""
        with self._lock:
            handles, self._handles = self._handles, []
        for fasta in handles:
            fasta.close()
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
