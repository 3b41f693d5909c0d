"""Negative sampling policies for the window index and the locked evaluation protocol.

A negative is a bin with no label. ``random`` draws ``ratio`` x positives of them uniformly;
``gc-matched`` draws the same number so that their GC histogram (50 bins of 0.02 over the window's
GC fraction) follows the positives' one, so that GC content alone cannot separate the classes;
``all`` keeps every negative. GC fractions are of the window's A/C/G/T bases (N excluded).
"""

from __future__ import annotations

import math

import numpy as np

from varfx.training.errors import DataError

__all__ = ["GC_BINS", "NEGATIVE_POLICIES", "gc_fraction", "sample_negatives", "window_gc"]

NEGATIVE_POLICIES = ("random", "gc-matched", "all")
GC_BINS = 50


def window_gc(tokens: np.ndarray, win_lo: np.ndarray, length: int) -> np.ndarray:
    """GC fraction float32 [n] of windows [win_lo, win_lo + length) of one contig's tokens.

    tokens: uint8 [contig length] (A0 C1 G2 T3 N4); win_lo: int64 [n] (may reach past the ends,
    which count as N). Windows of N only get 0.
    """
    size = len(tokens)
    gc = np.concatenate([[0], np.cumsum((tokens == 1) | (tokens == 2), dtype=np.int32)])
    acgt = np.concatenate([[0], np.cumsum(tokens < 4, dtype=np.int32)])
    lo, hi = np.clip(win_lo, 0, size), np.clip(win_lo + length, 0, size)
    n = acgt[hi] - acgt[lo]
    return ((gc[hi] - gc[lo]) / np.maximum(n, 1)).astype(np.float32)


def gc_fraction(windows: np.ndarray) -> np.ndarray:
    """GC fraction float32 [n] of token windows uint8 [n, L] (N excluded; 0 for all-N rows)."""
    gc = ((windows == 1) | (windows == 2)).sum(1)
    n = (windows < 4).sum(1)
    return (gc / np.maximum(n, 1)).astype(np.float32)


def sample_negatives(
    policy: str,
    ratio: float,
    n_pos: int,
    pos_gc: np.ndarray,
    neg_gc: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """Pick negatives; returns (sorted int64 indices into neg_gc, shortfall).

    Args:
        policy: one of NEGATIVE_POLICIES.
        ratio: negatives per positive (random, gc-matched; inf = every negative).
        n_pos: positives of this split; pos_gc / neg_gc: float [n_pos] / [n_neg] GC fractions.
        rng: the sampling generator (seeded by the caller).

    The shortfall is how many wanted negatives were missing (a GC bin with too few negatives).
    """
    if policy not in NEGATIVE_POLICIES:
        raise DataError(f"negative policy must be one of {NEGATIVE_POLICIES}, got {policy!r}")
    n_neg = len(neg_gc)
    if policy == "all" or math.isinf(ratio):
        return np.arange(n_neg, dtype=np.int64), 0
    want = round(ratio * n_pos)
    if policy == "random":
        pick = rng.choice(n_neg, size=min(want, n_neg), replace=False)
        return np.sort(pick).astype(np.int64), max(0, want - n_neg)
    if n_pos == 0 or want == 0:
        return np.zeros(0, np.int64), 0
    edges = np.linspace(0.0, 1.0, GC_BINS + 1)
    pos_bin = np.clip(np.searchsorted(edges, pos_gc, side="right") - 1, 0, GC_BINS - 1)
    neg_bin = np.clip(np.searchsorted(edges, neg_gc, side="right") - 1, 0, GC_BINS - 1)
    share = np.bincount(pos_bin, minlength=GC_BINS) * (want / n_pos)
    target = np.floor(share).astype(np.int64)  # largest remainder, so the total is `want`
    rest = want - int(target.sum())
    if rest > 0:
        target[np.argsort(-(share - target), kind="stable")[:rest]] += 1
    order = np.argsort(neg_bin, kind="stable")
    bounds = np.searchsorted(neg_bin[order], np.arange(GC_BINS + 1))
    parts, short = [], 0
    for b in np.flatnonzero(target):
        pool = order[bounds[b] : bounds[b + 1]]
        k = min(int(target[b]), len(pool))
        short += int(target[b]) - k
        parts.append(rng.choice(pool, size=k, replace=False))
    pick = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.sort(pick).astype(np.int64), short
