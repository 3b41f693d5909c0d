"""``varfx fp16 MODEL_DIR --genome FASTA --peaks DIR``: the fp16-compute graph of a model already
in a repository (``model.fp16.onnx`` beside its ``model.onnx``), checked on random windows and
on validation windows of the model's recorded split (varfx.training.fp16).

Standard library only at import time.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_fp16_parser"]


def add_fp16_parser(subparsers: Any) -> None:
    """Add ``varfx fp16`` to the top-level parser."""
    from varfx.core.precision import FP16_AUROC_BOUND, FP16_DIFF_BOUND

    p = subparsers.add_parser(
        "fp16",
        help="write a model's float16-arithmetic graph (model.fp16.onnx) after checking it",
        description=(
            "Convert REPO/NAME/VERSION/model.onnx to float16 arithmetic (uint8 tokens in, float32 "
            "probabilities out) and compare it with the float32 graph on random windows and on "
            "validation windows (the split recorded in the model; never the test region) "
            "labelled from --peaks on --genome. The file is written only when the max abs "
            "difference of probabilities and the drop of the mean validation auROC are within "
            "the bounds; the numbers and bounds go into its metadata (fp16_check). The server "
            "serves it on CUDA with --precision auto."
        ),
    )
    p.add_argument("model_dir", help="model version folder, e.g. models/brain-hg19/2")
    p.add_argument("--genome", nargs="+", required=True, help="FASTA(s) of the validation region")
    p.add_argument("--peaks", nargs="+", required=True, help="peak files or folders, one/feature")
    p.add_argument("--max-windows", type=int, default=2000, help="validation windows (2000)")
    p.add_argument(
        "--diff-bound", type=float, default=FP16_DIFF_BOUND, help=f"({FP16_DIFF_BOUND:g})"
    )
    p.add_argument(
        "--auroc-bound",
        type=float,
        default=FP16_AUROC_BOUND,
        help=f"largest allowed drop of the mean validation auROC ({FP16_AUROC_BOUND:g})",
    )
    p.set_defaults(func=_run_fp16)


def _run_fp16(args: argparse.Namespace) -> int:
    import json

    from varfx.training.errors import TrainingError
    from varfx.training.fp16 import write_fp16

    if args.max_windows < 1:
        sys.stderr.write(f"varfx fp16: --max-windows must be >= 1, got {args.max_windows}\n")
        return 2
    try:
        path, check = write_fp16(
            args.model_dir,
            args.genome,
            args.peaks,
            max_windows=args.max_windows,
            diff_bound=args.diff_bound,
            auroc_bound=args.auroc_bound,
        )
    except (TrainingError, OSError, ValueError) as exc:
        sys.stderr.write(f"varfx fp16: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(check, indent=1) + "\n")
    if path is None:
        sys.stderr.write("varfx fp16: the check did not pass; nothing written\n")
        return 1
    sys.stdout.write(f"wrote {path}\n")
    return 0
