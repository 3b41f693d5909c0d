"""auROC / auPRC with bootstrap replicates, vectorized over replicates.

Scores are sorted once per (labels, scores) pair; every replicate is a row of per-example weights
(multinomial counts of a resample with replacement), so a replicate costs two cumulative sums.
Ties are grouped as sklearn does (one ROC/PR point per distinct score), so with unit weights the
values equal ``roc_auc_score`` and ``average_precision_score``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_counts", "interval", "weighted_auc"]


def bootstrap_counts(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Resample counts int32 [replicates, n]: how often each of n examples was drawn."""
    out = np.empty((replicates, n), dtype=np.int32)
    for b in range(replicates):
        out[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def weighted_auc(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """auROC and auPRC (average precision) per weight row.

    Args:
        labels: bool/0-1 [n]; scores: float [n] (higher = more likely positive).
        weights: [B, n] non-negative example weights (None = one row of ones).
        chunk: replicates per pass (bounds memory to ~chunk x n float64).

    Returns:
        (auroc [B], auprc [B]) float64; NaN for a row without positive or negative weight.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(weights)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    ends = np.concatenate([np.flatnonzero(np.diff(s) != 0), [len(s) - 1]]).astype(np.int64)
    roc = np.full(len(w), np.nan)
    prc = np.full(len(w), np.nan)
    for i in range(0, len(w), chunk):
        ww = w[i : i + chunk][:, order].astype(np.float64)
        tp = np.cumsum(ww * y, axis=1)[:, ends]
        fp = np.cumsum(ww * ~y, axis=1)[:, ends]
        p, n = tp[:, -1:], fp[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = np.concatenate([np.zeros_like(p), tp / p], axis=1)
            fpr = np.concatenate([np.zeros_like(n), fp / n], axis=1)
            auroc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
            precision = tp / np.maximum(tp + fp, 1e-300)
            auprc = np.sum(np.diff(tpr, axis=1) * precision, axis=1)
        bad = (p[:, 0] <= 0) | (n[:, 0] <= 0)
        auroc[bad] = np.nan
        auprc[bad] = np.nan
        roc[i : i + chunk] = auroc
        prc[i : i + chunk] = auprc
    return roc, prc


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaNs ignored); (nan, nan) when all are NaN."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))
