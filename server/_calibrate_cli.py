"""``varfx calibrate``: a model's null distribution of effects (stdlib-only at import time)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]

# varfx.server.background.MIN_CLASS, restated so that this module imports nothing heavy
# (tests/server/test_calibration.py checks that they agree)
MIN_CLASS = 1000


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="compute a model's calibration background (quantile and p-value scores)",
        description=(
            "Score a background of variants with the model and store, per variant class "
            "(SNVs/MNVs, indels), the per-feature null distributions of diff, |diff| and "
            "|log2fc| beside it (calibration.npz + calibration.json in REPO/NAME/VERSION, tied "
            "to the model.onnx SHA-256). The server then returns QUANTILE, SIGNED_QUANTILE and "
            "PVALUE scores for that model, each variant ranked against its own class."
        ),
    )
    p.add_argument("model_dir", metavar="REPO/NAME/VERSION", help="model version directory")
    p.add_argument("--genome", required=True, help="the model's reference FASTA")
    p.add_argument(
        "-n",
        type=int,
        default=100_000,
        help="random background SNVs (3 alleles per site; default 100000)",
    )
    p.add_argument(
        "--indels",
        type=int,
        default=None,
        help="random background indels (half insertions, half deletions, 1-20 bp; default: as "
        "many as -n; 0: none, indels are then ranked against the SNVs and the calibration "
        "says so)",
    )
    p.add_argument(
        "--background",
        metavar="VCF",
        default=None,
        help="score the variants of this VCF (e.g. common variants) instead of random ones; "
        "its SNVs/MNVs and its indels become separate nulls",
    )
    p.add_argument(
        "--min-class",
        type=int,
        default=MIN_CLASS,
        help="with --background: a class (SNVs/MNVs, indels) with fewer scored variants gets "
        "no null of its own and is ranked against the other, which the calibration and each "
        f"such variant's message say (default {MIN_CLASS})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the background (default 0)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from varfx.server.background import BackgroundError, calibrate_model
    from varfx.server.calibration import CalibrationFileError
    from varfx.server.repository import ModelRepositoryError

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\rscored {done}/{total} background variants")
        sys.stderr.flush()

    try:
        calibration, (npz, desc) = calibrate_model(
            args.model_dir,
            args.genome,
            n=args.n,
            indels=args.indels,
            background_vcf=args.background,
            min_class=args.min_class,
            seed=args.seed,
            threads=args.threads,
            progress=progress if sys.stderr.isatty() else None,
        )
    except (
        BackgroundError,
        CalibrationFileError,
        ModelRepositoryError,
        FileNotFoundError,
        OSError,
    ) as exc:
        sys.stderr.write(f"varfx calibrate: {exc}\n")
        return 2
    sys.stderr.write(
        f"\nvarfx calibrate: {calibration.description}\nwrote {npz} and {desc} "
        f"({npz.stat().st_size / 1024:.0f} KiB)\n"
    )
    return 0
