#!/usr/bin/env python
"""Score a VCF with a varfx ONNX model directly in ONNX Runtime (no server), every record out.

    .venv/bin/python research/brain/score_indels.py --model models/brain-hg19/1/model.onnx \
        --genome ../shared/data/real/hg19_ref_debian/vt-examples.20.fa.gz \
        --vcf ../shared/data/real/hg19_ref_debian/vt-examples.normalize_IN.chr20_indels.vcf.gz \
        --out runs/brain/indels.tsv --top 10

Windows follow DESIGN.md (first variant base at L/2-1, shared left flank, alt cut to L, N outside
the contig). A cross-check for ``varfx score`` on the same file, and the source of the docs table.
Output TSV: one row per (record, ALT): chrom, pos, ref, alt, status, max_abs_diff, top_feature, then
diff per feature. Status is "ok" or why it was not scored (never dropped).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from brainlib import canonical_contig, encode_tokens
from evaluate import onnx_predict


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
    import onnx
    import pysam

    meta = json.loads({p.key: p.value for p in onnx.load(args.model).metadata_props}["varfx"])
    feats, length = meta["features"], int(meta["sequence_length"])
    c = length // 2 - 1
    fa = pysam.FastaFile(args.genome)
    refs = set(fa.references)
    rows: list[list[str]] = []
    ref_w, alt_w, scored = [], [], []
    for rec_chrom, rec_pos, rec_ref, alts in read_vcf(args.vcf):
        for alt in alts:
            row = [rec_chrom, str(rec_pos), rec_ref, alt]
            chrom = rec_chrom if rec_chrom in refs else canonical_contig(rec_chrom)
            ref = rec_ref.upper()
            if chrom not in refs:
                rows.append([*row, "unknown_chromosome"])
                continue
            if (
                not alt
                or alt in (".", "*")
                or alt.startswith("<")
                or not set(alt.upper()) <= set("ACGTN")
            ):
                rows.append([*row, "unsupported_allele"])
                continue
            n = fa.get_reference_length(chrom)
            p0 = rec_pos - 1
            if fa.fetch(chrom, p0, min(p0 + len(ref), n)).upper() != ref:
                rows.append([*row, "ref_mismatch"])
                continue
            lo, hi = p0 - c, p0 - c + length + len(ref) + length  # enough right flank for any indel
            seq = "N" * max(0, -lo) + fa.fetch(chrom, max(lo, 0), min(hi, n)).upper()
            seq += "N" * (hi - lo - len(seq))
            ref_w.append(encode_tokens(seq[:length]))
            alt_w.append(encode_tokens((seq[:c] + alt.upper() + seq[c + len(ref) :])[:length]))
            scored.append(len(rows))
            rows.append([*row, "ok"])
    pr = onnx_predict(args.model, np.stack(ref_w)) if ref_w else np.zeros((0, len(feats)))
    pa = onnx_predict(args.model, np.stack(alt_w)) if alt_w else np.zeros((0, len(feats)))
    diff = pa - pr
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
