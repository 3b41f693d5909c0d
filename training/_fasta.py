"""FASTA access for training: tokens (uint8, A0 C1 G2 T3 N4) with N padding, fork/worker-safe."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from varfx.training.errors import DataError

__all__ = ["TOKEN_LUT", "FastaTokens", "encode", "reverse_complement"]

# byte -> token: A/a 0, C/c 1, G/g 2, T/t 3, anything else (N, IUPAC, '-') 4
TOKEN_LUT = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    TOKEN_LUT[_b] = _i
    TOKEN_LUT[_b + 32] = _i  # lowercase (soft-masked)

_RC = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


def encode(seq: str | bytes) -> np.ndarray:
    """Sequence text -> uint8 tokens [len(seq)] (A0 C1 G2 T3, everything else N=4)."""
    raw = seq.encode("ascii") if isinstance(seq, str) else seq
    return TOKEN_LUT[np.frombuffer(raw, dtype=np.uint8)]


def reverse_complement(tokens: np.ndarray) -> np.ndarray:
    """Reverse complement of uint8 tokens [..., L] (N stays N)."""
    return _RC[tokens[..., ::-1]]


class FastaTokens:
    """An indexed FASTA (plain or bgzip, .fai beside it) read as tokens.

    The pysam handle is opened lazily per process, so one object can be shared with DataLoader
    workers (each worker opens its own handle after fork/spawn).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"FASTA not found: {self.path}")
        handle = self._open()
        self.lengths: dict[str, int] = dict(zip(handle.references, handle.lengths, strict=True))
        self._handle: object | None = handle
        self._pid = os.getpid()

    def _open(self):  # type: ignore[no-untyped-def]
        import pysam

        try:
            return pysam.FastaFile(str(self.path))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot open FASTA {self.path}: {exc}") from exc

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def _fasta(self):  # type: ignore[no-untyped-def]
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def contig_tokens(self, contig: str) -> np.ndarray:
        """All of one contig as uint8 tokens [length]."""
        return encode(self._fasta().fetch(contig))

    def window(self, contig: str, start: int, length: int) -> np.ndarray:
        """Tokens of [start, start + length) on ``contig``; outside the contig is N (4).

        Returns:
            uint8 [length].
        """
        size = self.lengths[contig]
        lo, hi = max(start, 0), min(start + length, size)
        out = np.full(length, 4, dtype=np.uint8)
        if hi > lo:
            out[lo - start : hi - start] = encode(self._fasta().fetch(contig, lo, hi))
        return out
