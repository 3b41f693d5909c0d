"""Calibrated quantiles and explanations of a real model on real variants.

    python bench/calibrated_real.py --model-dir models/brain-hg19/2 \\
        --genome /work/shared/data/real/hg19_ref_debian/vt-examples.20.fa.gz \\
        --vcf /work/shared/data/real/hg19_ref_debian/vt-examples.normalize_IN.chr20_indels.vcf.gz

Scores every ALT of the VCF and fresh random SNV and random indel sets (a seed other than the
calibration's) against the model's calibration (each variant against its class's null),
and explains the VCF's top variants (ISM + JASPAR motif calls).
In process, one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.background import random_indels, random_snvs, vcf_variants
from varfx.server.calibration import load_calibration
from varfx.server.explain import plan_explain
from varfx.server.genome import Genome
from varfx.server.genome_identity import file_sha256
from varfx.server.motifs import motif_database
from varfx.server.repository import ModelEntry
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ALL_KINDS, CALIBRATED_KINDS, ScoreResult, ScoringOptions, score


def _summary(result: ScoreResult) -> dict[str, object]:
    q, mq = result.quantile, result.max_quantile
    if q is None or mq is None or not len(mq):
        return {"scored": 0}
    return {
        "scored": len(mq),
        "median_quantile": round(float(np.median(q)), 4),
        "median_max_quantile": round(float(np.median(mq)), 4),
        "max_quantile_gt_0.99": int((mq > 0.99).sum()),
        "max_quantile_gt_0.999": int((mq > 0.999).sum()),
        "quantile_gt_0.99_per_feature": round(float((q > 0.99).mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--genome", required=True)
    ap.add_argument("--vcf", required=True)
    ap.add_argument(
        "--random",
        type=int,
        default=300,
        help="random SNVs and as many random indels (seed --seed)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--explain", type=int, default=3, help="explain the top N VCF variants")
    args = ap.parse_args()
    version = int(args.model_dir.name)
    onnx = args.model_dir / "model.onnx"
    runner = ModelRunner(ModelEntry(args.model_dir.parent.name, version, (version,), onnx), "cpu")
    spec = runner.spec
    cal = load_calibration(args.model_dir, model_sha256=file_sha256(onnx), features=spec.features)
    if cal is None:
        raise SystemExit(f"{args.model_dir}: no calibration")
    options = ScoringOptions(kinds=ALL_KINDS + CALIBRATED_KINDS)
    t0 = time.monotonic()
    out: dict[str, object] = {"model": f"{spec.name}/{version}", "calibration": cal.description}
    with Genome(args.genome) as genome:
        vcf = vcf_variants(args.vcf)
        res = score(runner, genome, vcf.variants, options, calibration=cal)
        out["vcf"] = {"variants": len(vcf.variants), **_summary(res)}
        bg = random_snvs(genome, args.random, spec.sequence_length, seed=args.seed)
        out["random_snvs"] = {
            "description": bg.description,
            **_summary(score(runner, genome, bg.variants, options, calibration=cal)),
        }
        bg = random_indels(genome, args.random, spec.sequence_length, seed=args.seed)
        out["random_indels"] = {
            "description": bg.description,
            **_summary(score(runner, genome, bg.variants, options, calibration=cal)),
        }
        db = motif_database()
        top = []
        if res.max_quantile is not None and args.explain:
            for row in np.argsort(-res.max_quantile, kind="stable")[: args.explain].tolist():
                i = int(res.ok_index[row])
                v = pb.Variant(
                    chrom=vcf.variants.chrom(i), pos=int(vcf.variants.pos[i]),
                    ref=vcf.variants.ref(i), alt=vcf.variants.alt(i),
                )  # fmt: skip
                plan = plan_explain(
                    genome, v, length=spec.sequence_length, features=spec.features,
                    model=spec.name, window=20, options=ScoringOptions(indels_as_written=True),
                )  # fmt: skip
                ex = plan.finish(runner.predict(plan.tokens))
                f = int(res.max_quantile_index[row]) if res.max_quantile_index is not None else 0
                imp = np.abs(ex.ref_ism[:, :, f]).max(axis=1)
                calls = plan.motif_calls(db, 3)
                top.append(
                    {
                        "variant": f"{v.chrom}:{v.pos}:{v.ref}:{v.alt}",
                        "feature": spec.features[f],
                        "diff": round(float(res.diff[row, f]), 4),
                        "max_quantile": round(float(res.max_quantile[row]), 5),
                        "ism_top_offset": int(ex.positions[imp.argmax()] - v.pos),
                        "motifs": [
                            f"{c.name} {c.ref_score:.1f}->{c.alt_score:.1f}" for c, _ in calls
                        ],
                    }
                )
        out["top_explained"] = top
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
