"""The window rule: where a variant sits in the model's window, and how the alt window is made.

For window length L (even), the first base of the variant sits at 0-based index ``c = L/2 - 1``
(DeepSEA, ExPecto, Selene and Basenji put it there, so scores are comparable). With 1-based VCF
position p, REF r and ALT a:

- ref window = genome[p-1-c, p-1-c+L), 0-based half-open;
- alt window = genome[p-1-c, p-1) + a + genome[p-1+len(r), ...), cut to L: the left flank is
  shared, a deletion pulls in more right flank, an insertion pushes it out;
- outside a chromosome the window is N.

``tests/core`` reproduces every row of the pinned vectors (a toy contig, L = 10). Indels are
normalised first (``normalize_indel``: trim shared bases, left-align against the genome, as
``bcftools norm`` does) unless the caller asks to score them as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["WindowRule", "fit_sequence", "normalize_indel"]


@dataclass(frozen=True)
class WindowRule:
    """The window rule for one window length L (even, >= 2).

    Attributes:
        length: L, bases per window.
    """

    length: int

    def __post_init__(self) -> None:
        if self.length < 2 or self.length % 2:
            raise ValueError(f"window length must be even and >= 2, got {self.length}")

    @property
    def center(self) -> int:
        """c = L/2 - 1: 0-based index of the variant's first base in its window."""
        return self.length // 2 - 1

    @property
    def max_indel(self) -> int:
        """Longest allele change (bases) a window shows: L/2."""
        return self.length // 2

    def starts(self, pos: np.ndarray) -> np.ndarray:
        """int64 [n]: 0-based genome start of each window, for 1-based positions ``pos``."""
        return np.asarray(pos, dtype=np.int64) - 1 - self.center

    def span(self, ref_len: int, alt_len: int) -> int:
        """Genome bases to fetch from the window start to build both windows of one variant."""
        return self.length + max(0, ref_len - alt_len)

    def alt_window(self, seg: bytes, ref_len: int, alt: bytes) -> bytes:
        """The alt window from ``seg`` = genome[start, start + span) (see ``span``)."""
        c = self.center
        return (seg[:c] + alt + seg[c + ref_len :])[: self.length]

    def snv_alt(self, ref_tokens: np.ndarray, alt_tokens: np.ndarray) -> np.ndarray:
        """uint8 [k, L] alt windows of k SNVs: the ref windows with column c set to the alt
        tokens uint8 [k]."""
        out = ref_tokens.copy()
        out[:, self.center] = alt_tokens
        return out

    def fit(self, seq: bytes) -> bytes:
        """``fit_sequence`` to this rule's length."""
        return fit_sequence(seq, self.length)


def fit_sequence(seq: bytes | str, length: int) -> bytes:
    """Centre a sequence in L bases: pad with N on both sides, or keep the central L bases.
    Returns upper-case ASCII."""
    raw = (seq.encode("ascii", "replace") if isinstance(seq, str) else seq).upper()
    if len(raw) >= length:
        off = (len(raw) - length) // 2
        return raw[off : off + length]
    left = (length - len(raw)) // 2
    return b"N" * left + raw + b"N" * (length - len(raw) - left)


def normalize_indel(
    fetch: Callable[[int, int], bytes], pos: int, ref: bytes, alt: bytes, *, max_shift: int = 10_000
) -> tuple[int, bytes, bytes]:
    """Trim and left-align one indel or MNV against the genome (Tan et al. 2015, ``bcftools
    norm``): drop shared trailing bases, extend left while an allele would be empty, then drop
    shared leading bases while both alleles keep a base.

    Args:
        fetch: ``fetch(start, end)`` -> upper-case genome bases [start, end) of the contig
            (0-based, half-open).
        pos: 1-based position; ``ref``/``alt``: upper-case ASCII alleles; REF matches the genome.
        max_shift: most bases to move left (a guard for long repeats).

    Returns:
        (pos, ref, alt) of the normalised representation; unchanged for an SNV.
    """
    if len(ref) == 1 and len(alt) == 1:
        return pos, ref, alt
    shifted = 0
    while ref and alt and ref[-1] == alt[-1]:
        if len(ref) > 1 and len(alt) > 1:
            ref, alt = ref[:-1], alt[:-1]
            continue
        # trimming would empty an allele: take the base to the left into both (left-align)
        if pos <= 1 or shifted >= max_shift:
            break
        base = fetch(pos - 2, pos - 1)
        if len(base) != 1 or base not in b"ACGT":
            break  # an assembly gap or the contig start: stop here
        ref, alt = base + ref[:-1], base + alt[:-1]
        pos -= 1
        shifted += 1
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt = ref[1:], alt[1:]
        pos += 1
    return pos, ref, alt
