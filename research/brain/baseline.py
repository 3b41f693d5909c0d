#!/usr/bin/env python
"""k-mer + logistic-regression baseline on the SAME windows and splits as the CNN (issue 7).

    .venv/bin/python research/brain/baseline.py --index runs/brain/index.npz --out runs/brain/kmer

Fits ``varfx.training.kmer_baseline.KmerBaseline`` (canonical k = 1..6 frequencies, standardized,
one L2 logistic regression per feature) on the train split (optionally subsampled with
``--max-train``), picks C on the valid split, and writes per-feature test auROC/auPRC to
OUT/summary.json and the test probabilities to OUT/test_predictions.npz.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from brainlib import gather_windows, load_genome, load_index

from varfx.training.kmer_baseline import KmerBaseline, per_feature_metrics

log = logging.getLogger("baseline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--C", type=float, nargs="+", default=[0.01, 0.1], help="grid, picked on valid")
    ap.add_argument("--max-train", type=int, default=0, help="subsample train windows (0 = all)")
    ap.add_argument("--max-valid", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    idx = load_index(args.index)
    genome: dict[str, np.ndarray] = {}
    for c, fasta in idx.meta["fasta"].items():
        genome.update(load_genome(fasta, [c]))
    parts = {s: idx.subset(s) for s in ("train", "valid", "test")}

    def take(split: str, cap: int) -> tuple[np.ndarray, np.ndarray]:
        p = parts[split]
        rows = np.arange(len(p.start))
        if cap and len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        return gather_windows(genome, p.contig[rows], p.start[rows], idx.length), p.labels[rows]

    xtr, ytr = take("train", args.max_train)
    xva, yva = take("valid", args.max_valid)
    best: tuple[float, float, KmerBaseline] | None = None
    grid = {}
    for c in args.C:
        model = KmerBaseline(ks=tuple(args.ks), C=c).fit(xtr, ytr)
        mv = per_feature_metrics(yva, model.predict_proba(xva), idx.features)
        score = float(np.nanmean([m.auprc for m in mv]))
        grid[str(c)] = score
        log.info("C=%g valid mean auPRC %.4f (%.0fs)", c, score, time.time() - t0)
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None  # the grid is non-empty (argparse nargs="+")
    _, c_best, model = best
    xte, yte = take("test", 0)
    pte = model.predict_proba(xte)
    mt = per_feature_metrics(yte, pte, idx.features)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "test_predictions.npz", prob=pte, labels=yte)
    summary = {
        "model": f"canonical k-mer frequencies k={args.ks}, standardized, logistic regression (L2)",
        "C": c_best,
        "valid_mean_auprc_by_C": grid,
        "train_windows": len(xtr),
        "test": {m.feature: m._asdict() for m in mt},
        "test_mean_auroc": float(np.nanmean([m.auroc for m in mt])),
        "test_mean_auprc": float(np.nanmean([m.auprc for m in mt])),
        "split": idx.meta["split"],
        "seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "test mean auROC %.4f auPRC %.4f in %.0fs",
        summary["test_mean_auroc"],
        summary["test_mean_auprc"],
        summary["seconds"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
