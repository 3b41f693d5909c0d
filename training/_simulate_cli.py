"""The ``varfx simulate`` subcommand (standard library only at import time)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_simulate_parser", "run_simulate"]


def add_simulate_parser(subparsers: Any) -> None:
    """Add ``simulate`` to the ``varfx`` sub-parsers; the parser's ``func`` runs it."""
    p = subparsers.add_parser(
        "simulate",
        help="write a simulated genome with planted JASPAR motifs, peaks, variants and truth",
        description=(
            "Write genome.fa(+.fai), peaks/<feature>.narrowPeak, features.tsv, sites.tsv, "
            "grammar_sites.tsv, summary.json, variants.vcf.gz(+.tbi) and truth.tsv into --out. "
            "The same seed gives byte-identical files."
        ),
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size",
        choices=("small", "default", "large"),
        default="default",
        help="preset: small 3x60 kb, default 5x400 kb, large 10x2 Mb (default: default)",
    )
    p.add_argument("--chroms", type=int, default=None, help="number of chromosomes (overrides)")
    p.add_argument(
        "--chrom-length", type=int, default=None, help="chromosome length in bp (overrides)"
    )
    p.add_argument("--variants", type=int, default=None, help="number of VCF records (overrides)")
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``varfx simulate``; returns the exit status (2 on invalid settings)."""
    import dataclasses
    import logging

    try:
        from varfx.training.simulate import SIZES, SimulationError, simulate
    except ImportError as exc:  # numpy / pysam missing
        sys.stderr.write(f"varfx simulate needs numpy and pysam (pip install varfx): {exc}\n")
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    changes: dict[str, int] = {}
    if args.chroms is not None:
        changes["n_chroms"] = args.chroms
    if args.chrom_length is not None:
        changes["chrom_length"] = args.chrom_length
    if args.variants is not None:
        changes["n_variants"] = args.variants
    try:
        config = dataclasses.replace(SIZES[args.size], **changes)
        result = simulate(args.out, seed=args.seed, config=config)
    except SimulationError as exc:
        sys.stderr.write(f"varfx simulate: {exc}\n")
        return 2
    c = result.counts
    sys.stdout.write(
        f"wrote {result.out_dir}: {len(result.chroms)} chromosomes, "
        f"{sum(n for _, n in result.chroms):,} bp, {c['planted_sites']} planted motif instances, "
        f"{len(result.features)} features, {c['records']} variants "
        f"({c['break']} break / {c['create']} create / {c['neutral']} neutral ALTs)\n"
    )
    for f in result.features:
        sys.stdout.write(f"  {f:<16} {c['sites:' + f]:>6} sites {c['peaks:' + f]:>6} peaks\n")
    return 0
