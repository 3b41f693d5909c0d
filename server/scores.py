"""Variant-effect scores from reference and alternate predictions (DESIGN.md "Scores").

Per variant and feature f, with probabilities r = p(ref window), a = p(alt window):

- ``diff = a - r`` (probability difference, -1..1)
- ``log2fc = log2(a / (1 - a)) - log2(r / (1 - r))`` (log2 odds ratio; r, a clipped to [eps, 1-eps])
- ``max_abs_diff = max_f |diff|`` and the feature index where it occurs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_EPS", "ScoreArrays", "compute_scores"]

DEFAULT_EPS = 1e-6


@dataclass(frozen=True)
class ScoreArrays:
    """Scores of n variants over F features.

    Attributes:
        ref, alt: float32 [n, F] probabilities of the reference / alternate windows.
        diff: float32 [n, F] ``alt - ref``.
        log2fc: float32 [n, F] log2 odds ratio alt vs ref.
        max_abs_diff: float32 [n] max over features of |diff|.
        max_index: int64 [n] feature index of max_abs_diff.
    """

    ref: np.ndarray
    alt: np.ndarray
    diff: np.ndarray
    log2fc: np.ndarray
    max_abs_diff: np.ndarray
    max_index: np.ndarray


def _log2_odds(p: np.ndarray, eps: float) -> np.ndarray:
    q = np.clip(p.astype(np.float64), eps, 1.0 - eps)
    return np.log2(q) - np.log2(1.0 - q)


def compute_scores(
    ref_p: np.ndarray, alt_p: np.ndarray, eps: float = DEFAULT_EPS, *, log2fc: bool = True
) -> ScoreArrays:
    """Scores from probability arrays ref_p, alt_p: float [n, F] in [0, 1]; ``log2fc=False``
    skips the log odds (its array is then [n, 0])."""
    if ref_p.shape != alt_p.shape or ref_p.ndim != 2:
        raise ValueError(f"ref/alt shapes differ or are not [n, F]: {ref_p.shape} {alt_p.shape}")
    ref = ref_p.astype(np.float32, copy=False)
    alt = alt_p.astype(np.float32, copy=False)
    diff = alt - ref
    n, f = diff.shape
    lfc = (
        (_log2_odds(alt, eps) - _log2_odds(ref, eps)).astype(np.float32)
        if log2fc
        else np.zeros((n, 0), dtype=np.float32)
    )
    if f:
        max_index = np.abs(diff).argmax(axis=1)
        max_abs = np.abs(diff[np.arange(n), max_index])
    else:
        max_index = np.zeros(n, dtype=np.int64)
        max_abs = np.zeros(n, dtype=np.float32)
    return ScoreArrays(ref, alt, diff, lfc, max_abs.astype(np.float32), max_index.astype(np.int64))
