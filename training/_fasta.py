"""FASTA access for training: tokens (uint8, A0 C1 G2 T3 N4) with N padding, several files as
one genome, fork/worker-safe."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from varfx.core.tokens import encode
from varfx.training.errors import DataError

__all__ = ["FastaTokens"]


class FastaTokens:
    """One or more indexed FASTAs (plain or bgzip, .fai beside each) read as tokens.

    Several files act as one genome (e.g. GRCh37 chr20 in one file and chrX in another); a
    contig name may appear in only one of them. The pysam handles are opened lazily per process,
    so one object can be shared with DataLoader workers (each worker opens its own handles).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]) -> None:
        many = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not many:
            raise DataError("no FASTA given")
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in many)
        self.path = self.paths[0] if len(self.paths) == 1 else Path(", ".join(map(str, many)))
        self.lengths: dict[str, int] = {}
        self._file_of: dict[str, int] = {}
        handles = []
        for i, path in enumerate(self.paths):
            if not path.is_file():
                raise DataError(f"FASTA not found: {path}")
            handle = self._open(path)
            handles.append(handle)
            for name, size in zip(handle.references, handle.lengths, strict=True):
                if name in self.lengths:
                    raise DataError(
                        f"contig {name!r} is in both {self.paths[self._file_of[name]]} and {path}"
                    )
                self.lengths[name] = size
                self._file_of[name] = i
        self._handles: list[object] | None = handles
        self._pid = os.getpid()

    @staticmethod
    def _open(path: Path):  # type: ignore[no-untyped-def]
        import pysam

        try:
            return pysam.FastaFile(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot open FASTA {path}: {exc}") from exc

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_handles"] = None
        return state

    def _fasta(self, contig: str):  # type: ignore[no-untyped-def]
        if self._handles is None or self._pid != os.getpid():
            self._handles = [self._open(p) for p in self.paths]
            self._pid = os.getpid()
        return self._handles[self._file_of[contig]]

    def contig_tokens(self, contig: str) -> np.ndarray:
        """All of one contig as uint8 tokens [length]."""
        return encode(self._fasta(contig).fetch(contig), strict=False)

    def window(self, contig: str, start: int, length: int) -> np.ndarray:
        """Tokens of [start, start + length) on ``contig``; outside the contig is N (4).

        Returns:
            uint8 [length].
        """
        size = self.lengths[contig]
        lo, hi = max(start, 0), min(start + length, size)
        out = np.full(length, 4, dtype=np.uint8)
        if hi > lo:
            out[lo - start : hi - start] = encode(
                self._fasta(contig).fetch(contig, lo, hi), strict=False
            )
        return out
