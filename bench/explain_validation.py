"""Validate calibration and ExplainVariant on a simulated genome's ground truth.

    varfx simulate --seed 1 --out /tmp/sim1          # a genome the model never saw
    python bench/explain_validation.py --sim /tmp/sim1 --model-dir models/sim-chromatin/1

For every variant of the truth file marked ``break`` (a planted motif instance broken):
the top motif call's name against the planted TF (exact name, case-insensitive), the ISM's
most important positions (ref background, the first affected feature, max over bases of |ISM|)
against the planted site (sites.tsv), and the variant's max quantile; for ``neutral`` variants
the median quantile. In process (the server's plan/finish code, no gRPC), one thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.calibration import load_calibration
from varfx.server.explain import plan_explain
from varfx.server.genome import Genome
from varfx.server.genome_identity import file_sha256
from varfx.server.motifs import motif_database
from varfx.server.repository import ModelEntry
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ALL_KINDS, CALIBRATED_KINDS, ScoringOptions, score


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _site_of(sites: list[dict[str, str]], chrom: str, pos: int, motif: str) -> tuple[int, int]:
    """1-based inclusive span of the planted site of ``motif`` holding ``pos`` (or (0, -1))."""
    best = (0, -1)
    for s in sites:
        if s["chrom"] == chrom and s["motif"] == motif and int(s["start"]) < pos <= int(s["end"]):
            best = (int(s["start"]) + 1, int(s["end"]))
    return best


def _in_any_site(sites: list[dict[str, str]], chrom: str, positions: np.ndarray) -> np.ndarray:
    """bool [P]: whether each 1-based position lies in any planted site (any motif)."""
    out = np.zeros(len(positions), dtype=bool)
    for s in sites:
        if s["chrom"] == chrom:
            out |= (positions > int(s["start"])) & (positions <= int(s["end"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", required=True, type=Path, help="varfx simulate output folder")
    ap.add_argument("--model-dir", required=True, type=Path, help="REPO/NAME/VERSION")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--limit", type=int, default=0, help="at most this many breakers (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()

    version = int(args.model_dir.name)
    onnx = args.model_dir / "model.onnx"
    runner = ModelRunner(ModelEntry(args.model_dir.parent.name, version, (version,), onnx), "cpu")
    spec = runner.spec
    calibration = load_calibration(
        args.model_dir, model_sha256=file_sha256(onnx), features=spec.features
    )
    if calibration is None:
        raise SystemExit(f"{args.model_dir}: no calibration (run varfx calibrate)")
    truth = _rows(args.sim / "truth.tsv")
    sites = _rows(args.sim / "sites.tsv")
    dbs = {"jaspar": motif_database("auto"), "shipped": motif_database("shipped")}
    t0 = time.monotonic()
    out: dict[str, object] = {
        "model": f"{spec.name}/{version}",
        "calibration": calibration.description,
        "motif_databases": {k: v.name for k, v in dbs.items()},
    }
    with Genome(args.sim / "genome.fa") as genome:
        # quantiles of every truth variant
        batch = VariantBatch.from_columns(
            [r["chrom"] for r in truth], [int(r["pos"]) for r in truth],
            [r["ref"] for r in truth], [r["alt"] for r in truth],
        )  # fmt: skip
        kinds = ALL_KINDS + CALIBRATED_KINDS
        result = score(runner, genome, batch, ScoringOptions(kinds=kinds), calibration=calibration)
        assert result.quantile is not None
        assert result.max_quantile is not None
        klass = np.array([truth[i]["class"] for i in result.ok_index.tolist()])
        out["scored"] = len(result.ok_index)
        brk = klass == "break"
        neu = klass == "neutral"
        out["break_max_quantile_gt_0.99"] = float(np.mean(result.max_quantile[brk] > 0.99))
        out["break_max_quantile_median"] = float(np.median(result.max_quantile[brk]))
        out["neutral_quantile_median"] = float(np.median(result.quantile[neu]))
        out["neutral_max_quantile_median"] = float(np.median(result.max_quantile[neu]))
        out["break_n"], out["neutral_n"] = int(brk.sum()), int(neu.sum())
        # explanations of the breakers
        breakers = [r for r in truth if r["class"] == "break"]
        if args.limit:
            breakers = breakers[: args.limit]
        hits: dict[str, list[bool]] = {k: [] for k in dbs}
        top3: dict[str, list[bool]] = {k: [] for k in dbs}
        inside_top1, inside_frac, vtypes, any_top1 = [], [], [], []
        by_motif: dict[str, list[int]] = {}
        options = ScoringOptions(indels_as_written=True)
        for r in breakers:
            v = pb.Variant(chrom=r["chrom"], pos=int(r["pos"]), ref=r["ref"], alt=r["alt"])
            plan = plan_explain(
                genome, v, length=spec.sequence_length, features=spec.features,
                model=spec.name, window=args.window, options=options,
            )  # fmt: skip
            if not plan.ok:
                continue
            vtypes.append(r["vtype"])
            res = plan.finish(runner.predict(plan.tokens))
            for k, db in dbs.items():
                names = [c.name.upper() for c, _ in plan.motif_calls(db, 3)]
                hits[k].append(bool(names) and names[0] == r["motif"].upper())
                top3[k].append(r["motif"].upper() in names)
            f = spec.features.index(r["affected_features"].split(",")[0])
            importance = np.abs(res.ref_ism[:, :, f]).max(axis=1)
            lo, hi = _site_of(sites, r["chrom"], int(r["pos"]), r["motif"])
            inside = (res.positions >= lo) & (res.positions <= hi)
            width = max(1, hi - lo + 1)
            top = np.argsort(-importance, kind="stable")[:width]
            inside_top1.append(bool(inside[top[0]]))
            any_top1.append(bool(_in_any_site(sites, r["chrom"], res.positions)[top[0]]))
            tally = by_motif.setdefault(r["motif"], [0, 0])
            tally[0] += 1
            tally[1] += int(inside[top[0]])
            inside_frac.append(float(inside[top].mean()))
    snv = np.array([t == "SNV" for t in vtypes])
    for k in dbs:
        h = np.array(hits[k])
        out[f"top_motif_is_planted_tf[{k}]"] = float(h.mean())
        out[f"top_motif_is_planted_tf[{k}]_snv"] = float(h[snv].mean())
        out[f"planted_tf_in_top3_calls[{k}]"] = float(np.mean(top3[k]))
    out["ism_top_position_in_site"] = float(np.mean(inside_top1))
    out["ism_top_position_in_site_snv"] = float(np.array(inside_top1)[snv].mean())
    out["ism_top_position_in_any_planted_site"] = float(np.mean(any_top1))
    out["ism_top_position_in_site_by_motif"] = {k: f"{v[1]}/{v[0]}" for k, v in by_motif.items()}
    out["ism_top_w_positions_in_site_mean"] = float(np.mean(inside_frac))
    out["explained"] = len(vtypes)
    out["explained_snv"] = int(snv.sum())
    out["seconds"] = round(time.monotonic() - t0, 1)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
