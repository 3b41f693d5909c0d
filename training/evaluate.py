"""Evaluation: predictions over a dataset, per-feature auROC/auPRC (sklearn), ROC/PR and
learning-curve plots (PNG, matplotlib Agg)."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FeatureScore",
    "Metrics",
    "per_feature_metrics",
    "plot_learning_curves",
    "plot_roc_pr",
    "predict",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureScore:
    """One feature's test metrics (NaN when a split lacks positives or negatives)."""

    feature: str
    auroc: float
    auprc: float
    positives: int
    n: int


@dataclass(frozen=True)
class Metrics:
    """Per-feature scores and their means over features with a defined value."""

    features: tuple[FeatureScore, ...]
    mean_auroc: float
    mean_auprc: float

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "mean_auroc": num(self.mean_auroc),
            "mean_auprc": num(self.mean_auprc),
            "excluded_from_mean": [f.feature for f in self.features if math.isnan(f.auroc)],
            "per_feature": {
                f.feature: {
                    "auroc": num(f.auroc),
                    "auprc": num(f.auprc),
                    "positives": f.positives,
                    "n": f.n,
                }
                for f in self.features
            },
        }


def per_feature_metrics(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> Metrics:
    """auROC / auPRC per feature column.

    Args:
        labels: [N, F] 0/1; probs: [N, F] scores (any monotone scale); names: F feature names.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    out = []
    for f, name in enumerate(names):
        y = labels[:, f].astype(bool)
        pos = int(y.sum())
        if 0 < pos < len(y):
            auroc = float(roc_auc_score(y, probs[:, f]))
            auprc = float(average_precision_score(y, probs[:, f]))
        else:
            auroc = auprc = math.nan
        out.append(FeatureScore(name, auroc, auprc, pos, len(y)))
    rocs = [s.auroc for s in out if not math.isnan(s.auroc)]
    prcs = [s.auprc for s in out if not math.isnan(s.auprc)]
    return Metrics(
        tuple(out),
        float(np.mean(rocs)) if rocs else math.nan,
        float(np.mean(prcs)) if prcs else math.nan,
    )


def predict(model: Any, loader: Any, device: Any, *, progress: bool = False) -> np.ndarray:
    """Sigmoid outputs float32 [N, F] of a logits model over a DataLoader of (tokens, labels)."""
    import torch
    from tqdm import tqdm

    model.eval()
    parts = []
    with torch.no_grad():
        for tokens, _ in tqdm(loader, desc="predict", leave=False, disable=not progress):
            parts.append(torch.sigmoid(model(tokens.to(device))).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(metrics_csv: Path, out_png: Path) -> None:
    """Loss (train/valid) and validation auROC/auPRC per epoch from metrics.csv."""
    with metrics_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    plt = _pyplot()
    ep = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [float(r["train_loss"]) for r in rows], marker="o", label="train")
    a.plot(ep, [float(r["valid_loss"]) for r in rows], marker="o", label="valid")
    a.set(xlabel="epoch", ylabel="binary cross-entropy", title="loss")
    a.legend()
    b.plot(ep, [float(r["valid_auroc"]) for r in rows], marker="o", label="valid mean auROC")
    b.plot(ep, [float(r["valid_auprc"]) for r in rows], marker="o", label="valid mean auPRC")
    b.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0, 1.02))
    b.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_roc_pr(
    labels: np.ndarray, probs: np.ndarray, names: Sequence[str], out_dir: Path, prefix: str = "test"
) -> list[Path]:
    """Per-feature ROC and PR curves: ``<prefix>_roc.png`` and ``<prefix>_pr.png`` in out_dir."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    paths = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(6, 5))
        for f, name in enumerate(names):
            y = labels[:, f].astype(bool)
            if not 0 < y.sum() < len(y):
                continue
            if kind == "roc":
                x, yy, _ = roc_curve(y, probs[:, f])
                ax.plot(x, yy, lw=1, label=name)
            else:
                p, r, _ = precision_recall_curve(y, probs[:, f])
                ax.plot(r, p, lw=1, label=name)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{prefix} ROC")
        else:
            ax.set(xlabel="recall", ylabel="precision", title=f"{prefix} precision-recall")
        if len(names) <= 20:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{kind}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
