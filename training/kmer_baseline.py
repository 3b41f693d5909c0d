"""k-mer count baseline: normalized k-mer frequencies + one logistic regression per feature.

The reference a chromatin CNN must beat (issue 7). Features are computed fully vectorized: each
k-mer is a rolling base-4 code over the token matrix and counts come from one ``np.bincount`` per
k over (row, code) pairs; with ``canonical=True`` a k-mer and its reverse complement share a
column. k-mers that touch an N are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = [
    "FeatureMetrics",
    "KmerBaseline",
    "kmer_counts",
    "kmer_dimension",
    "per_feature_metrics",
    "select_kmer_baseline",
]

log = logging.getLogger(__name__)


def _canonical_map(k: int) -> tuple[np.ndarray, int]:
    """code -> column for canonical k-mers (k-mer and reverse complement share one column)."""
    codes = np.arange(4**k, dtype=np.int64)
    rc = np.zeros_like(codes)
    x = codes.copy()
    for _ in range(k):
        rc = rc * 4 + (3 - x % 4)
        x //= 4
    canon = np.minimum(codes, rc)
    uniq, col = np.unique(canon, return_inverse=True)
    return col.astype(np.int64), len(uniq)


def kmer_dimension(ks: Sequence[int], canonical: bool = True) -> int:
    """Number of columns ``kmer_counts`` returns for these k."""
    return sum(_canonical_map(k)[1] if canonical else 4**k for k in ks)


def kmer_counts(
    tokens: np.ndarray, ks: Sequence[int] = (1, 2, 3, 4, 5, 6), canonical: bool = True
) -> np.ndarray:
    """k-mer frequencies of each sequence.

    tokens: uint8 ``[n, L]`` (A0 C1 G2 T3, 4 = N). Returns float32 ``[n, kmer_dimension(ks)]``:
    for each k (in the order given) the counts of every k-mer divided by the number of N-free
    k-mer positions in that row (0 for a row with none).
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n, L], got shape {tokens.shape}")
    if any(k < 1 or k > 12 for k in ks):
        raise ValueError(f"k must be in 1..12, got {list(ks)}")
    n, length = tokens.shape
    t = tokens.astype(np.int64)
    blocks = []
    for k in ks:
        if k > length:
            raise ValueError(f"k={k} is longer than the sequences (L={length})")
        width = length - k + 1
        code = np.zeros((n, width), dtype=np.int64)
        valid = np.ones((n, width), dtype=bool)
        for j in range(k):  # k shifts, not a per-base loop
            sl = t[:, j : j + width]
            code = code * 4 + np.minimum(sl, 3)
            valid &= sl < 4
        if canonical:
            col, dim = _canonical_map(k)
            code = col[code]
        else:
            dim = 4**k
        rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], code.shape)
        flat = (rows * dim + code)[valid]
        counts = np.bincount(flat, minlength=n * dim).reshape(n, dim).astype(np.float32)
        total = valid.sum(1, keepdims=True).astype(np.float32)
        blocks.append(np.divide(counts, total, out=np.zeros_like(counts), where=total > 0))
    return np.concatenate(blocks, axis=1)


class FeatureMetrics(NamedTuple):
    """Per-feature test metrics (NaN when the feature has only one class in the data)."""

    feature: str
    auroc: float
    auprc: float
    positives: int


def per_feature_metrics(
    labels: np.ndarray, probs: np.ndarray, features: Sequence[str]
) -> list[FeatureMetrics]:
    """auROC/auPRC per column. labels: {0,1} ``[n, F]``; probs: float ``[n, F]``."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if labels.shape != probs.shape or labels.shape[1] != len(features):
        raise ValueError(
            f"labels {labels.shape}, probs {probs.shape} and {len(features)} features disagree"
        )
    out = []
    for j, f in enumerate(features):
        y = labels[:, j]
        pos = int(y.sum())
        if 0 < pos < len(y):
            out.append(
                FeatureMetrics(
                    f,
                    float(roc_auc_score(y, probs[:, j])),
                    float(average_precision_score(y, probs[:, j])),
                    pos,
                )
            )
        else:
            out.append(FeatureMetrics(f, float("nan"), float("nan"), pos))
    return out


@dataclass
class KmerBaseline:
    """Standardized k-mer frequencies -> one L2 logistic regression per feature.

    ``fit(tokens [n, L] uint8, labels [n, F] {0,1})``; ``predict_proba(tokens) -> float32 [n, F]``.
    Sequences are featurized in chunks of ``chunk`` rows to bound memory.
    """

    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    canonical: bool = True
    C: float = 0.1
    max_iter: int = 300
    chunk: int = 4096
    models: list = field(default_factory=list)
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def features(self, tokens: np.ndarray) -> np.ndarray:
        """k-mer frequency matrix float32 ``[n, D]`` (unstandardized)."""
        parts = [
            kmer_counts(tokens[i : i + self.chunk], self.ks, self.canonical)
            for i in range(0, len(tokens), self.chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, kmer_dimension(self.ks)))

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("KmerBaseline is not fitted")
        return (x - self.mean_) / self.scale_

    def fit(self, tokens: np.ndarray, labels: np.ndarray) -> KmerBaseline:
        """Fit on uint8 tokens ``[n, L]`` and {0,1} labels ``[n, F]``."""
        if len(tokens) != len(labels):
            raise ValueError(f"{len(tokens)} sequences but {len(labels)} label rows")
        return self.fit_counts(self.features(tokens), labels)

    def fit_counts(self, x: np.ndarray, labels: np.ndarray) -> KmerBaseline:
        """Fit on a k-mer frequency matrix ``[n, D]`` (``features``, unstandardized)."""
        from sklearn.linear_model import LogisticRegression

        if len(x) != len(labels):
            raise ValueError(f"{len(x)} k-mer rows but {len(labels)} label rows")
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0) + 1e-6
        x = self._standardize(x)
        self.models = []
        for j in range(labels.shape[1]):
            y = labels[:, j]
            if y.min() == y.max():
                raise ValueError(f"label column {j} has a single class; cannot fit")
            m = LogisticRegression(C=self.C, max_iter=self.max_iter)
            m.fit(x, y)
            self.models.append(m)
            log.info("fitted k-mer baseline for feature %d/%d", j + 1, labels.shape[1])
        return self

    def predict_counts(self, x: np.ndarray) -> np.ndarray:
        """Probabilities float32 ``[n, F]`` from a k-mer frequency matrix ``[n, D]``."""
        if not self.models:
            raise RuntimeError("KmerBaseline is not fitted")
        z = self._standardize(x)
        out = np.zeros((len(x), len(self.models)), dtype=np.float32)
        for j, m in enumerate(self.models):
            out[:, j] = m.predict_proba(z)[:, 1]
        return out

    def predict_proba(self, tokens: np.ndarray) -> np.ndarray:
        """Probabilities float32 ``[n, F]`` for uint8 tokens ``[n, L]`` (in chunks)."""
        if not self.models:
            raise RuntimeError("KmerBaseline is not fitted")
        out = np.zeros((len(tokens), len(self.models)), dtype=np.float32)
        for i in range(0, len(tokens), self.chunk):
            x = kmer_counts(tokens[i : i + self.chunk], self.ks, self.canonical)
            out[i : i + len(x)] = self.predict_counts(x)
        return out


def select_kmer_baseline(
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    subsets: Sequence[np.ndarray],
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    cs: Sequence[float],
    ks: tuple[int, ...],
    canonical: bool = True,
) -> tuple[KmerBaseline, list[dict[str, float]]]:
    """Choose the fit size and C of a KmerBaseline by mean validation auROC over features.

    fit_x: k-mer frequencies ``[n, D]`` (``KmerBaseline.features``) of the fitting windows,
    fit_y: their labels ``[n, F]``; subsets: for each candidate fit size, the positions into
    fit_x to fit on; valid_x / valid_y: the same for the validation windows, the only rows the
    choice looks at. Every (subset, C) pair is fitted; the best mean auROC wins, ties going to the
    earlier subset and then the earlier C. Returns the chosen fitted baseline and one record per
    pair: ``{"fit_windows", "C", "valid_mean_auroc"}``.

    Raises:
        ValueError: an empty grid, or a feature with one class only in the validation rows.
    """
    if not subsets or not cs:
        raise ValueError("the k-mer grid needs at least one fit size and one C")
    single = [j for j in range(valid_y.shape[1]) if valid_y[:, j].min() == valid_y[:, j].max()]
    if single:
        raise ValueError(f"validation label columns {single} have a single class; cannot choose C")
    names = [str(j) for j in range(valid_y.shape[1])]
    fitted: list[KmerBaseline] = []
    scores: list[dict[str, float]] = []
    for sub in subsets:
        for c in cs:
            model = KmerBaseline(ks=ks, canonical=canonical, C=float(c))
            model.fit_counts(fit_x[sub], fit_y[sub])
            m = per_feature_metrics(valid_y, model.predict_counts(valid_x), names)
            score = float(np.mean([f.auroc for f in m]))
            scores.append({"fit_windows": len(sub), "C": float(c), "valid_mean_auroc": score})
            log.info("k-mer baseline: %d windows, C=%g: validation mean auROC %.4f",
                     len(sub), c, score)  # fmt: skip
            fitted.append(model)
    best = int(np.argmax([s["valid_mean_auroc"] for s in scores]))  # first of equal scores
    return fitted[best], scores
