"""Real TF motifs (JASPAR matrices shipped in ``training/data``) and vectorized PWM scanning.

The matrices are JASPAR2024 CORE position frequency matrices (see ``data/jaspar_motifs.json`` and
``data/build_data.py`` for provenance); they are read with the standard library and numpy only.

Sequences are handled as uint8 tokens, A=0, C=1, G=2, T=3, N=4 (the DESIGN.md token alphabet).
Scores are log2-odds in bits against a uniform background, with a pseudocount of 0.8 spread evenly
over the four bases (JASPAR's convention); a window that contains N scores ``-inf``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

import numpy as np

__all__ = [
    "Motif",
    "MotifScanner",
    "load_motifs",
]

_PSEUDOCOUNT = 0.8
_N_SCORE = -1.0e4


@dataclass(frozen=True, eq=False)
class Motif:
    """One JASPAR motif.

    Attributes:
        id: JASPAR matrix ID (e.g. "MA0139.2").
        name: TF name as JASPAR spells it (e.g. "CTCF", "FOS::JUN").
        counts: float64 [W, 4] position frequency matrix (columns A, C, G, T).
    """

    id: str
    name: str
    counts: np.ndarray

    @property
    def width(self) -> int:
        return int(self.counts.shape[0])

    @property
    def probs(self) -> np.ndarray:
        """float64 [W, 4] base probabilities with the pseudocount."""
        c = self.counts + _PSEUDOCOUNT / 4.0
        return c / c.sum(axis=1, keepdims=True)

    @property
    def log_odds(self) -> np.ndarray:
        """float64 [W, 4] log2(p / 0.25) per position and base, in bits."""
        return np.log2(self.probs / 0.25)

    @property
    def information(self) -> np.ndarray:
        """float64 [W] information content per position, in bits."""
        p = self.probs
        return 2.0 + (p * np.log2(p)).sum(axis=1)

    @property
    def max_score(self) -> float:
        return float(self.log_odds.max(axis=1).sum())

    @property
    def consensus(self) -> np.ndarray:
        """uint8 [W] the highest-scoring instance."""
        return self.log_odds.argmax(axis=1).astype(np.uint8)

    def threshold(self, pvalue: float) -> float:
        """Smallest score (bits) reached by at most ``pvalue`` of uniform random W-mers.

        Exact up to a 0.01-bit grid (dynamic programming over the score distribution).
        The result never exceeds ``max_score`` (short motifs cannot reach tiny p-values).
        """
        grid = 100.0
        lo = np.round(self.log_odds * grid).astype(np.int64)
        offset = int(-lo.min(axis=1).sum())
        size = int(lo.max(axis=1).sum()) + offset + 1
        dist = np.zeros(size, dtype=np.float64)
        dist[0] = 1.0
        base = lo.min(axis=1)
        for j in range(self.width):  # loop over motif positions (<= ~20), vectorized over scores
            nxt = np.zeros(size, dtype=np.float64)
            for b in range(4):
                shift = int(lo[j, b] - base[j])
                nxt[shift:] += 0.25 * dist[: size - shift]
            dist = nxt
        tail = np.cumsum(dist[::-1])[::-1]  # P(score >= k)
        ok = np.nonzero(tail <= pvalue)[0]
        k = int(ok[0]) if len(ok) else size - 1
        # the grid rounds each position; never ask for more than the consensus reaches
        return min((k - offset) / grid, self.max_score - 1e-6)

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 [W, 5] forward and reverse-complement score tables (position x token)."""
        lo = self.log_odds.astype(np.float32)
        n_col = np.full((self.width, 1), _N_SCORE, dtype=np.float32)
        return np.hstack([lo, n_col]), np.hstack([lo[::-1, ::-1], n_col])

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """float64 [n] forward-strand scores of uint8 windows [n, W] (N -> very negative)."""
        table = np.vstack([self.log_odds.T, np.full((1, self.width), _N_SCORE)])  # [5, W]
        return table[windows, np.arange(self.width)[None, :]].sum(axis=1)

    def scan(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every window of a uint8 token array.

        Returns:
            (forward, reverse): float32 [max(0, n - W + 1)] each; element i scores the window
            starting at i on the forward strand, and its reverse complement (the motif read on
            the minus strand). Windows with N score about -1e4.
        """
        n = len(tokens) - self.width + 1
        if n <= 0:
            empty = np.zeros(0, dtype=np.float32)
            return empty, empty.copy()
        fwd_t, rev_t = self._tables
        if n <= 4096:  # short sequence: one gather over all windows
            win = np.lib.stride_tricks.sliding_window_view(tokens, self.width)
            pos = np.arange(self.width)[None, :]
            return fwd_t[pos, win].sum(axis=1), rev_t[pos, win].sum(axis=1)
        fwd = np.zeros(n, dtype=np.float32)
        rev = np.zeros(n, dtype=np.float32)
        for j in range(self.width):  # loop over motif positions, vectorized over the sequence
            seg = tokens[j : j + n]
            fwd += fwd_t[j][seg]
            rev += rev_t[j][seg]
        return fwd, rev

    def sample(self, rng: np.random.Generator, n: int, min_score: float) -> np.ndarray:
        """uint8 [n, W] instances sampled from the matrix, kept only when scoring >= min_score.

        ``min_score`` is capped at the consensus score. Sampling is rejection in blocks of
        4,096; when acceptance is low the probabilities are sharpened (p**k, renormalized) so
        that short, degenerate motifs still yield instances; past k = 16 the rest are consensus.
        """
        floor = min(float(min_score), self.max_score - 1e-6)
        out: list[np.ndarray] = []
        have = 0
        sharpen = 1.0
        while have < n and sharpen <= 16.0:
            p = self.probs**sharpen
            cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # [W, 4]
            u = rng.random((4096, self.width))
            idx = (u[:, :, None] > cum[None, :, :]).sum(axis=2).clip(0, 3).astype(np.uint8)
            keep = idx[self.score_windows(idx) >= floor]
            out.append(keep)
            have += len(keep)
            if len(keep) < 64:
                sharpen *= 2.0
        if have < n:
            out.append(np.tile(self.consensus, (n - have, 1)))
        return np.concatenate(out)[:n]


class MotifScanner:
    """Scores every window of a sequence under several motifs on both strands at once.

    One numpy gather per motif position (up to the widest motif) covers all motifs and
    strands, in chunks of ``chunk`` windows, so long chromosomes and short local sequences are
    both cheap.
    """

    def __init__(self, motifs: tuple[Motif, ...], chunk: int = 65_536) -> None:
        self.motifs = motifs
        self.widths = np.array([m.width for m in motifs], dtype=np.int64)
        self.max_width = int(self.widths.max())
        self.chunk = chunk
        # [2 * n_motifs, max_width, 6]: rows 2k (forward) and 2k+1 (reverse) of motif k;
        # token 5 pads past the end of the sequence; positions past a motif's width score 0.
        table = np.zeros((2 * len(motifs), self.max_width, 6), dtype=np.float32)
        for k, m in enumerate(motifs):
            fwd, rev = m._tables
            table[2 * k, : m.width, :5] = fwd
            table[2 * k + 1, : m.width, :5] = rev
            table[2 * k : 2 * k + 2, : m.width, 5] = _N_SCORE
        self._table = table

    def scan(self, tokens: np.ndarray) -> np.ndarray:
        """float32 [2 * n_motifs, len(tokens)]: row 2k scores motif k forward, row 2k+1 its
        reverse complement, for the window starting at each position (about -1e4 where the
        window holds N or runs past the end)."""
        n = len(tokens)
        padded = np.concatenate(
            [np.asarray(tokens, dtype=np.uint8), np.full(self.max_width, 5, dtype=np.uint8)]
        )
        out = np.empty((self._table.shape[0], n), dtype=np.float32)
        for lo in range(0, n, self.chunk):  # chunks of windows, vectorized inside
            hi = min(n, lo + self.chunk)
            acc = np.zeros((self._table.shape[0], hi - lo), dtype=np.float32)
            for j in range(self.max_width):  # loop over motif positions
                acc += self._table[:, j, :][:, padded[lo + j : hi + j]]
            out[:, lo:hi] = acc
        return out


@cache
def load_motifs() -> tuple[Motif, ...]:
    """The shipped JASPAR motifs, in file order."""
    text = resources.files("varfx.training").joinpath("data/jaspar_motifs.json").read_text()
    data = json.loads(text)
    return tuple(
        Motif(m["id"], m["name"], np.asarray(m["pfm"], dtype=np.float64)) for m in data["motifs"]
    )
