#!/usr/bin/env python
"""CNN (ONNX) vs k-mer baseline on the brain-hg19 test split: table + ROC/PR plots (issue 7).

    .venv/bin/python research/brain/evaluate.py --index runs/brain/index.npz \
        --model models/brain-hg19/1/model.onnx --baseline runs/brain/kmer --out docs/brain

Runs the exported model in ONNX Runtime (CUDA provider when present) on EVERY test window, so the
numbers are those of the shipped file, and reads the baseline's test predictions (same windows, same
order). Writes OUT/metrics.json, OUT/metrics.md (markdown table), OUT/roc.png, OUT/pr.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from brainlib import gather_windows, load_genome, load_index

from varfx.training.kmer_baseline import FeatureMetrics, per_feature_metrics

log = logging.getLogger("evaluate")


def onnx_predict(model: str | Path, tokens: np.ndarray, batch: int = 512) -> np.ndarray:
    """Probabilities float32 [n, F] from a varfx ONNX model (uint8 token input)."""
    import onnxruntime as ort

    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    sess = ort.InferenceSession(str(model), providers=providers)
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: tokens[i : i + batch]})[0] for i in range(0, len(tokens), batch)]
    )


def table(cnn: list[FeatureMetrics], base: list[FeatureMetrics]) -> str:
    lines = [
        "| feature | test positives | CNN auROC | k-mer auROC | CNN auPRC | k-mer auPRC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, b in zip(cnn, base, strict=True):
        lines.append(
            f"| {c.feature} | {c.positives} | {c.auroc:.3f} | {b.auroc:.3f} | "
            f"{c.auprc:.3f} | {b.auprc:.3f} |"
        )
    mean = lambda ms, k: float(np.nanmean([getattr(m, k) for m in ms]))  # noqa: E731
    lines.append(
        f"| **mean** | | **{mean(cnn, 'auroc'):.3f}** | **{mean(base, 'auroc'):.3f}** | "
        f"**{mean(cnn, 'auprc'):.3f}** | **{mean(base, 'auprc'):.3f}** |"
    )
    return "\n".join(lines)


def plots(y: np.ndarray, pc: np.ndarray, pb: np.ndarray, feats: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    for kind in ("roc", "pr"):
        fig, axes = plt.subplots(3, 4, figsize=(16, 12), sharex=True, sharey=True)
        for j, (f, ax) in enumerate(zip(feats, axes.ravel(), strict=True)):
            for p, lab, col in ((pc, "CNN", "C0"), (pb, "k-mer LR", "C1")):
                if kind == "roc":
                    a, b, _ = roc_curve(y[:, j], p[:, j])
                else:
                    b, a, _ = precision_recall_curve(y[:, j], p[:, j])
                ax.plot(a, b, color=col, label=lab, lw=1.2)
            if kind == "roc":
                ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            else:
                ax.axhline(y[:, j].mean(), color="k", ls=":", lw=0.8)
            ax.set_title(f)
            ax.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8)
        for ax in axes[-1]:
            ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        for ax in axes[:, 0]:
            ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        fig.suptitle(f"brain-hg19 test split (chr20 q-arm): {kind.upper()}, CNN vs k-mer baseline")
        fig.tight_layout()
        fig.savefig(out / f"{kind}.png", dpi=80)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--baseline", required=True, help="baseline.py output dir")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--max-test", type=int, default=0, help="evaluate a seeded random subset (0 = all)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    idx = load_index(args.index)
    test = idx.subset("test")
    genome: dict[str, np.ndarray] = {}
    for c in np.unique(test.contig):
        genome.update(load_genome(idx.meta["fasta"][str(c)], [str(c)]))
    rows = np.arange(len(test.start))
    if args.max_test and len(rows) > args.max_test:
        rows = np.sort(np.random.default_rng(0).choice(rows, args.max_test, replace=False))
    labels = test.labels[rows]
    x = gather_windows(genome, test.contig[rows], test.start[rows], idx.length)
    pc = onnx_predict(args.model, x)
    log.info("ONNX predictions for %d test windows in %.0fs", len(x), time.time() - t0)
    with np.load(Path(args.baseline) / "test_predictions.npz") as z:
        pb, yb = z["prob"], z["labels"]
    if not np.array_equal(yb, test.labels):
        raise ValueError("baseline predictions are not for this index's test windows")
    pb = pb[rows]
    cnn = per_feature_metrics(labels, pc, idx.features)
    base = per_feature_metrics(labels, pb, idx.features)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(cnn, base)
    (out / "metrics.md").write_text(md + "\n")
    res = {
        "cnn": {m.feature: m._asdict() for m in cnn},
        "kmer": {m.feature: m._asdict() for m in base},
        "cnn_mean_auroc": float(np.nanmean([m.auroc for m in cnn])),
        "kmer_mean_auroc": float(np.nanmean([m.auroc for m in base])),
        "cnn_mean_auprc": float(np.nanmean([m.auprc for m in cnn])),
        "kmer_mean_auprc": float(np.nanmean([m.auprc for m in base])),
        "test_windows": len(x),
        "test_windows_total": len(test.start),
        "split": idx.meta["split"],
        "model": str(args.model),
    }
    (out / "metrics.json").write_text(json.dumps(res, indent=2))
    plots(labels, pc, pb, idx.features, out)
    print(md)
    print(f"mean auROC CNN {res['cnn_mean_auroc']:.4f} vs k-mer {res['kmer_mean_auroc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
