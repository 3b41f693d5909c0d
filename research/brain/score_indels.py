#!/usr/bin/env python
"""Score a VCF with a varfx ONNX model directly in ONNX Runtime (no server), every record out.

    .venv/bin/python research/brain/score_indels.py --model models/brain-hg19/1/model.onnx \
        --genome ../shared/data/real/hg19_ref_debian/vt-examples.20.fa.gz \
        --vcf ../shared/data/real/hg19_ref_debian/vt-examples.normalize_IN.chr20_indels.vcf.gz \
        --out runs/brain/indels.tsv --top 10

Scored with the product's in-process verb (``varfx.server.scoring.score``: its window rule,
indel normalisation and statuses), without a server: the source of the docs table.
Output TSV: one row per (record, ALT): chrom, pos, ref, alt, status, max_abs_diff, top_feature, then
diff per feature. Status is "ok" or why it was not scored (never dropped).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np


def read_vcf(path: str) -> list[tuple[str, int, str, list[str]]]:
    """(chrom, 1-based pos, REF, ALTs) per data line of a VCF (plain, gzip or bgzip)."""
    opener = gzip.open if path.endswith((".gz", ".bgz")) else open
    out = []
    with opener(path, "rt") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 5 or not cols[1].isdigit():
                raise ValueError(f"{path}:{lineno}: not a VCF data line: {line[:80]!r}")
            out.append((cols[0], int(cols[1]), cols[3], cols[4].split(",")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--genome", required=True)
    ap.add_argument("--vcf", required=True)
    ap.add_argument("--out", required=True, help="TSV")
    ap.add_argument("--top", type=int, default=10, help="print a markdown table of the N largest")
    args = ap.parse_args(argv)
    from varfx.core.variants import VariantBatch
    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.server.genome import Genome
    from varfx.server.repository import ModelEntry
    from varfx.server.runtime import ModelRunner
    from varfx.server.scoring import ScoringOptions, score

    runner = ModelRunner(ModelEntry("model", 1, (1,), Path(args.model)), "cpu")
    feats = list(runner.spec.features)
    rows = [
        [chrom, str(pos), ref, alt] for chrom, pos, ref, alts in read_vcf(args.vcf) for alt in alts
    ]
    batch = VariantBatch.from_columns(
        [r[0] for r in rows], [int(r[1]) for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    )
    with Genome(args.genome) as genome:
        result = score(runner, genome, batch, ScoringOptions())
    names = {v.number: v.name.lower() for v in pb.StatusCode.DESCRIPTOR.values}
    for r, code in zip(rows, result.status.tolist(), strict=True):
        r.append(names[code])
    scored = result.ok_index.tolist()
    pr, pa, diff = result.ref, result.alt, result.diff
    out_rows = [r + ["", ""] + [""] * len(feats) for r in rows]
    for k, i in enumerate(scored):
        j = int(np.abs(diff[k]).argmax())
        out_rows[i] = rows[i] + [f"{abs(diff[k, j]):.5f}", feats[j]] + [f"{v:.5f}" for v in diff[k]]
    head = ["chrom", "pos", "ref", "alt", "status", "max_abs_diff", "top_feature", *feats]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join("\t".join(r) for r in [head, *out_rows]) + "\n")
    statuses = {s: sum(r[4] == s for r in rows) for s in {r[4] for r in rows}}
    sys.stdout.write(f"{len(rows)} records/alleles written to {args.out}: {statuses}\n")
    if args.top and scored:
        order = np.argsort(-np.abs(diff).max(1))[: args.top]
        sys.stdout.write(
            "\n| variant | ref prob | alt prob | diff | feature |\n|---|---:|---:|---:|---|\n"
        )
        for k in order:
            chrom, pos, ref, alt = rows[scored[k]][:4]
            j = int(np.abs(diff[k]).argmax())
            name = f"{chrom}:{pos} {ref[:12]}>{alt[:12]}"
            sys.stdout.write(
                f"| {name} | {pr[k, j]:.3f} | {pa[k, j]:.3f} | {diff[k, j]:+.3f} | {feats[j]} |\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
