#!/usr/bin/env python
"""Build the labelled window index for the brain-hg19 model (issue 7).

DeepSEA-style: the genome is cut into ``--bin``-bp bins (default 200); each bin gets a label per
peak set (1 when >= half the bin is covered by that set's peaks); the example is the ``--length``-bp
window (default 1000) centred on the bin. Positives = bins with any label; negatives are sampled
from the unlabelled bins (``--neg-ratio`` x positives); windows with more than ``--max-n`` N are
dropped. Splits are by held-out REGIONS and a window must lie wholly inside its region, so no base
is shared between train, valid and test.

Writes one small ``.npz`` (no sequence): contig, start, labels [n, 12], split, and the recorded
split/params as JSON. Example (the full run)::

    .venv/bin/python research/brain/prepare.py \
        --genome ../shared/data/real/hg19_ref_debian/vt-examples.20.fa.gz \
        --genome ../shared/data/real/hg19_ref_debian/smalt-examples.hs37chrXtrunc.fa.gz \
        --peaks ../shared/data/real/hg19_nott_brain --out runs/brain/index.npz
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from brainlib import (
    FEATURE_ORDER,
    Region,
    bin_coverage,
    canonical_contig,
    load_genome,
    parse_region,
    read_bed,
)

log = logging.getLogger("prepare")

DEFAULT_TRAIN = ["X"]
DEFAULT_VALID = ["20:1-29500000"]  # chr20 p-arm (+ centromere gap)
DEFAULT_TEST = ["20:29500001-63025520"]  # chr20 q-arm


def _feature_files(peaks: list[str]) -> dict[str, Path]:
    """Map each feature name to its BED file; a directory must hold all 12 Nott sets."""
    files: list[Path] = []
    for p in map(Path, peaks):
        files.extend(sorted(p.glob("*.bed*")) if p.is_dir() else [p])
    out: dict[str, Path] = {}
    for f in files:
        assay = f.name.split("_")[0]
        cell = f.name.split("_")[1] if "_" in f.name else ""
        name = f"{assay}_{cell}"
        if name not in FEATURE_ORDER:
            raise ValueError(f"peak file {f} does not look like a Nott et al. set (ASSAY_CELL_...)")
        out[name] = f
    missing = [n for n in FEATURE_ORDER if n not in out]
    if missing:
        raise ValueError(f"peak sets missing for features {missing}")
    return out


def check_no_overlap(splits: dict[str, list[Region]]) -> None:
    """Refuse regions that share a base (across or within splits), before any data is read."""
    seen: list[tuple[str, int, float, str]] = []
    for split, regions in splits.items():
        for reg in regions:
            c = canonical_contig(reg.contig)
            hi = float("inf") if reg.end is None else reg.end
            for c2, lo2, hi2, other in seen:
                if c == c2 and reg.start <= hi2 and lo2 <= hi:
                    raise ValueError(f"region {reg} ({split}) overlaps {other}")
            seen.append((c, reg.start, hi, f"{reg} ({split})"))


def _contig_of(genome: dict[str, np.ndarray], name: str) -> str:
    for n in (name, canonical_contig(name)):
        if n in genome:
            return n
    raise ValueError(f"region contig {name!r} is not in the genome (has {sorted(genome)})")


def build_index(
    genome: dict[str, np.ndarray],
    peaks: dict[str, dict[str, np.ndarray]],
    splits: dict[str, list[Region]],
    *,
    length: int = 1000,
    bin_size: int = 200,
    neg_ratio: float = 1.0,
    max_n: float = 0.1,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict]:
    """Label bins and pick windows. Returns (arrays for np.savez, recorded stats)."""
    rng = np.random.default_rng(seed)
    contigs, starts, labels, split_codes = [], [], [], []
    seen: dict[str, list[tuple[int, int, str]]] = {}
    stats: dict[str, dict] = {}
    for code, (split, regions) in enumerate(splits.items()):
        for reg in regions:
            c = _contig_of(genome, reg.contig)
            seq = genome[c]
            lo, hi = reg.half_open(len(seq))
            for a, b, other in seen.get(c, []):
                if lo < b and a < hi:
                    raise ValueError(f"region {reg} ({split}) overlaps {other}")
            seen.setdefault(c, []).append((lo, hi, f"{reg} ({split})"))
            flank = (length - bin_size) // 2
            first = lo + flank
            bins = np.arange(first, hi - length + flank + 1, bin_size, dtype=np.int64)
            wstart = bins - flank
            lab = np.zeros((len(bins), len(FEATURE_ORDER)), dtype=np.uint8)
            for j, feat in enumerate(FEATURE_ORDER):
                iv = peaks[feat].get(c, np.zeros((0, 2), dtype=np.int64))
                lab[:, j] = bin_coverage(iv, bins, bin_size) * 2 >= bin_size
            ncum = np.concatenate([[0], np.cumsum(seq == 4, dtype=np.int64)])
            nfrac = (ncum[wstart + length] - ncum[wstart]) / length
            ok = nfrac <= max_n
            pos = np.flatnonzero(ok & lab.any(1))
            neg_pool = np.flatnonzero(ok & ~lab.any(1))
            n_neg = min(len(neg_pool), round(neg_ratio * len(pos)))
            neg = rng.choice(neg_pool, size=n_neg, replace=False)
            keep = np.sort(np.concatenate([pos, neg]))
            contigs.append(np.full(len(keep), c))
            starts.append(wstart[keep])
            labels.append(lab[keep])
            split_codes.append(np.full(len(keep), code, dtype=np.uint8))
            stats[str(reg)] = {
                "split": split,
                "bins": len(bins),
                "dropped_for_N": int((~ok).sum()),
                "positives": len(pos),
                "negatives": int(n_neg),
                "positives_per_feature": dict(
                    zip(FEATURE_ORDER, lab[pos].sum(0).tolist(), strict=True)
                ),
            }
            log.info("%s %s: %d positives, %d negatives", split, reg, len(pos), n_neg)
    arrays = {
        "contig": np.concatenate(contigs).astype("U8"),
        "start": np.concatenate(starts),
        "labels": np.concatenate(labels),
        "split": np.concatenate(split_codes),
    }
    return arrays, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--genome", action="append", required=True, help="indexed FASTA (repeat)")
    ap.add_argument("--peaks", action="append", required=True, help="peak dir or files")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--train-regions", nargs="+", default=DEFAULT_TRAIN)
    ap.add_argument("--valid-regions", nargs="+", default=DEFAULT_VALID)
    ap.add_argument("--test-regions", nargs="+", default=DEFAULT_TEST)
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--bin", type=int, default=200)
    ap.add_argument("--neg-ratio", type=float, default=1.0)
    ap.add_argument("--max-n", type=float, default=0.1, help="max N fraction per window")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.length % 2 or args.bin % 2 or args.bin > args.length:
        ap.error(f"--length {args.length} and --bin {args.bin} must be even, bin <= length")
    t0 = time.time()
    splits = {
        "train": [parse_region(r) for r in args.train_regions],
        "valid": [parse_region(r) for r in args.valid_regions],
        "test": [parse_region(r) for r in args.test_regions],
    }
    try:
        check_no_overlap(splits)
    except ValueError as exc:
        ap.error(str(exc))
    # which FASTA holds which contig
    import pysam

    wanted = {r.contig for rs in splits.values() for r in rs}
    genome: dict[str, np.ndarray] = {}
    fasta_of: dict[str, str] = {}
    for g in args.genome:
        with pysam.FastaFile(g) as fa:
            refs = set(fa.references)
            need = [c for c in wanted if c in refs or canonical_contig(c) in refs]
        for c, arr in load_genome(g, need).items():
            genome[c] = arr
            fasta_of[c] = str(Path(g).resolve())
    peak_files = _feature_files(args.peaks)
    peaks = {f: read_bed(p) for f, p in peak_files.items()}
    arrays, stats = build_index(
        genome,
        peaks,
        splits,
        length=args.length,
        bin_size=args.bin,
        neg_ratio=args.neg_ratio,
        max_n=args.max_n,
        seed=args.seed,
    )
    meta = {
        "features": FEATURE_ORDER,
        "length": args.length,
        "bin": args.bin,
        "neg_ratio": args.neg_ratio,
        "max_n": args.max_n,
        "seed": args.seed,
        "label_rule": "label 1 when >= half of the central bin is covered by the feature's peaks",
        "split": {k: [str(r) for r in v] for k, v in splits.items()},
        "fasta": fasta_of,
        "peak_files": {f: str(p.resolve()) for f, p in peak_files.items()},
        "regions": stats,
        "counts": {
            s: int((arrays["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))
        },
        "command": " ".join(sys.argv),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    log.info("wrote %s: %s in %.1fs", out, meta["counts"], time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
