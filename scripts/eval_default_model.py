"""Quality bars and CPU speed of the default model (issue 3), in bare ONNX Runtime.

1. held-out chromosome auROC (mean over features) on the default simulated genome (seed 0);
2. variant ranking: max |alt - ref| over features, break-motif vs neutral ALTs, auROC on a genome
   simulated with another seed, scored by the product's verb (``varfx.server.scoring.score``);
3. throughput: windows/s (and variants/s = windows/s / 2) on this machine's CPU.

    .venv/bin/python scripts/eval_default_model.py [--model models/sim-chromatin/1/model.onnx]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.genome import Genome
from varfx.server.repository import ModelEntry
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ScoringOptions, score
from varfx.training._fasta import FastaTokens
from varfx.training.dataset import IndexConfig, Region, SplitSpec, build_index
from varfx.training.evaluate import per_feature_metrics
from varfx.training.peaks import PeakSet
from varfx.training.simulate import simulate

REPO = Path(__file__).resolve().parents[1]


def run_batches(sess: ort.InferenceSession, tokens: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate(
        [sess.run(None, {"tokens": tokens[i : i + batch]})[0] for i in range(0, len(tokens), batch)]
    )


def heldout_auroc(
    sess: ort.InferenceSession, meta: dict, sim: Path, test_chroms: list[str] | None
) -> None:
    g = FastaTokens(sim / "genome.fa")
    peaks = PeakSet.load([sim / "peaks"], g.lengths)
    order = [peaks.features.index(f) for f in meta["features"]]
    split = SplitSpec.from_json(meta["training_summary"]["split"])
    if not test_chroms and any(r.contig not in g.lengths for r in split.test):
        test_chroms = ["chr5"]  # trained on another genome: all of this one is unseen
    if test_chroms:
        split = SplitSpec(valid=(), test=tuple(Region(c) for c in test_chroms))
    L = meta["sequence_length"]
    index = build_index(g, peaks, split, IndexConfig(length=L, negative_ratio=float("inf")))
    rows = index.rows("test")
    tokens = np.stack(
        [g.window(index.contigs[index.contig_ids[r]], int(index.starts[r]), L) for r in rows]
    )
    labels = index.labels[rows][:, order]
    m = per_feature_metrics(labels, run_batches(sess, tokens), meta["features"])
    print(f"held-out test split {split.to_json()['test']}: {len(rows)} windows (all bins, 200 bp)")
    for f in m.features:
        print(f"  {f.feature:<18} auROC {f.auroc:.4f}  auPRC {f.auprc:.4f}  ({f.positives} pos)")
    print(f"MEAN held-out auROC {m.mean_auroc:.4f}  auPRC {m.mean_auprc:.4f}  (bar: auROC >= 0.95)")


def variant_ranking(model_path: Path, sim: Path) -> None:
    """max |alt - ref| over features from the product's own scoring verb (its window rule,
    normalisation and statuses), break-motif vs neutral ALTs."""
    with (sim / "truth.tsv").open() as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["class"] in ("break", "neutral")]
    runner = ModelRunner(ModelEntry("eval", 1, (1,), model_path), "cpu")
    batch = VariantBatch.from_columns(
        [r["chrom"] for r in rows],
        [int(r["pos"]) for r in rows],
        [r["ref"] for r in rows],
        [r["alt"] for r in rows],
    )
    with Genome(sim / "genome.fa") as genome:
        result = score(runner, genome, batch, ScoringOptions(kinds=(pb.SCORE_KIND_DIFF,)))
    unscored = len(rows) - len(result.ok_index)
    if unscored:
        print(f"  ({unscored} truth variants not scored: {sorted(set(result.status.tolist()))})")
    score_ = np.full(len(rows), np.nan)
    score_[result.ok_index] = result.max_abs_diff
    keep = ~np.isnan(score_)
    rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
    score_ = score_[keep]
    y = np.array([r["class"] == "break" for r in rows])
    auc = roc_auc_score(y, score_)
    print(
        f"variant ranking on seed-1 genome: {y.sum()} break vs {(~y).sum()} neutral ALTs; "
        f"max|alt-ref| auROC {auc:.4f}  (bar: >= 0.90)"
    )
    for vt in sorted({r["vtype"] for r in rows}):
        m = np.array([r["vtype"] == vt for r in rows])
        if 0 < y[m].sum() < m.sum():
            print(
                f"  {vt:<6} auROC {roc_auc_score(y[m], score_[m]):.4f} ({y[m].sum()} break / {(~y[m]).sum()} neutral)"
            )


def throughput(path: Path, L: int, threads: int, batch: int = 256, seconds: float = 5.0) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 4, (batch, L), dtype=np.uint8)
    sess.run(None, {"tokens": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"tokens": x})
        n += batch
    rate = n / (time.perf_counter() - t0)
    print(
        f"throughput ({threads} ORT threads, batch {batch}, L={L}): {rate:,.0f} windows/s "
        f"= {rate / 2:,.0f} variants/s (bar: >= 1,000 variants/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(REPO / "models/sim-chromatin/1/model.onnx"))
    ap.add_argument("--sim0", default=None, help="existing seed-0 simulation (else made)")
    ap.add_argument("--sim1", default=None, help="existing seed-1 simulation (else made)")
    ap.add_argument(
        "--test-chroms", nargs="*", default=None, help="override the model's test chromosomes"
    )
    args = ap.parse_args()
    model = onnx_meta = None
    import onnx

    model = onnx.load(args.model)
    onnx_meta = json.loads({p.key: p.value for p in model.metadata_props}["varfx"])
    L = onnx_meta["sequence_length"]
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        sim0 = Path(args.sim0) if args.sim0 else simulate(Path(tmp) / "s0", seed=0).out_dir
        sim1 = Path(args.sim1) if args.sim1 else simulate(Path(tmp) / "s1", seed=1).out_dir
        heldout_auroc(sess, onnx_meta, sim0, args.test_chroms)
        variant_ranking(Path(args.model), sim1)
    for threads in (1, 2):
        throughput(Path(args.model), L, threads)


if __name__ == "__main__":
    main()
