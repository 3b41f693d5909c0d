"""`varfx` subcommands of varfx.training: ``simulate``, ``train``, ``export``, ``conv2d``.

Standard library only at import time; torch, onnx etc. are imported when a subcommand runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the top-level `varfx` parser."""
    try:
        from varfx.training._simulate_cli import add_simulate_parser
    except ImportError:  # simulate not available in this build
        pass
    else:
        add_simulate_parser(subparsers)
    _add_train(subparsers)
    _add_export(subparsers)
    _add_conv2d(subparsers)
    _add_evaluate(subparsers)
    from varfx.training._fp16_cli import add_fp16_parser

    add_fp16_parser(subparsers)


def _add_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a chromatin-feature CNN on a FASTA + peak files",
        description=(
            "Build DeepSEA-style labelled windows from --genome and --peaks, train a CNN and "
            "evaluate it on the held-out test chromosomes/regions. The run directory gets "
            "config.json, index.npz, metrics.csv, last.pt/best.pt checkpoints, PNG plots and "
            "summary.json."
        ),
    )
    p.add_argument(
        "--genome",
        required=True,
        nargs="+",
        help="indexed FASTA(s) (plain or bgzip, with .fai); several files form one genome",
    )
    p.add_argument(
        "--peaks", required=True, nargs="+", help="peak files (BED/narrowPeak[.gz]) or folders"
    )
    p.add_argument(
        "--feature-names", nargs="+", default=None, help="one name per peak file (default: file)"
    )
    p.add_argument("--out", required=True, help="run directory")
    d = p.add_argument_group("data")
    d.add_argument("--length", type=int, default=1000, help="window length L in bp (default 1000)")
    d.add_argument("--bin-size", type=int, default=200, help="labelled centre bin (default 200)")
    d.add_argument("--stride", type=int, default=None, help="bin step in bp (default: bin size)")
    d.add_argument(
        "--min-overlap", type=float, default=0.5, help="bin fraction a peak must cover (0.5)"
    )
    d.add_argument(
        "--negative-ratio",
        type=float,
        default=1.0,
        help="negatives sampled per positive per split; 'inf' = all (default 1)",
    )
    d.add_argument(
        "--negatives",
        choices=("random", "gc-matched", "all"),
        default="random",
        help="negative bins: random, gc-matched (GC histogram of the positives) or all",
    )
    d.add_argument(
        "--allow-peaks-past-end",
        action="store_true",
        help="drop peaks past their contig's end (a truncated FASTA) instead of refusing them",
    )
    d.add_argument(
        "--max-n-fraction", type=float, default=0.1, help="drop windows with more N (0.1)"
    )
    d.add_argument(
        "--blacklist", default=None, help="BED of regions; windows overlapping it are excluded"
    )
    d.add_argument("--valid-chroms", nargs="*", default=[], help="validation chromosomes")
    d.add_argument("--test-chroms", nargs="*", default=[], help="test chromosomes")
    d.add_argument(
        "--valid-regions", nargs="*", default=[], help="validation regions, e.g. 20:1-30000000"
    )
    d.add_argument(
        "--test-regions", nargs="*", default=[], help="test regions, e.g. chr20:29500001-"
    )
    d.add_argument("--rc-augment", action="store_true", help="random reverse-complement")
    d.add_argument("--assembly", default="unknown", help="genome assembly name for the metadata")
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=("deepsea", "basset", "dilated"), default="deepsea")
    m.add_argument("--channels", type=int, nargs="+", default=None, help="filters per conv layer")
    m.add_argument("--hidden", type=int, default=None, help="dense units (0 = none)")
    m.add_argument("--kernel-size", type=int, default=None, help="first conv kernel (bp)")
    m.add_argument("--pool", type=int, default=None, help="max-pool width (deepsea/dilated)")
    m.add_argument("--dropout", type=float, default=0.2)
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=10)
    o.add_argument("--batch-size", type=int, default=64)
    o.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    o.add_argument("--weight-decay", type=float, default=1e-6, help="L2 coefficient")
    o.add_argument("--scheduler", choices=("plateau", "cosine"), default="plateau")
    o.add_argument(
        "--patience", type=int, default=3, help="early stop after N epochs w/o auPRC gain"
    )
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    o.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    o.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    o.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    o.add_argument(
        "--skip-test",
        action="store_true",
        help="hold the test split out but do not score it (the locked protocol: varfx evaluate)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import math

    from varfx.training.dataset import IndexConfig, SplitSpec
    from varfx.training.errors import TrainingError
    from varfx.training.models import ModelConfig
    from varfx.training.train import TrainConfig, train

    try:
        cfg = TrainConfig(
            genome=tuple(args.genome),
            peaks=tuple(args.peaks),
            feature_names=tuple(args.feature_names) if args.feature_names else None,
            allow_peaks_past_end=args.allow_peaks_past_end,
            out=args.out,
            model=ModelConfig(
                arch=args.arch,
                sequence_length=args.length,
                channels=tuple(args.channels) if args.channels else None,
                hidden=args.hidden,
                kernel_size=args.kernel_size,
                pool=args.pool,
                dropout=args.dropout,
            ),
            index=IndexConfig(
                length=args.length,
                bin_size=args.bin_size,
                stride=args.stride or args.bin_size,
                min_overlap=args.min_overlap,
                negative_ratio=math.inf if math.isinf(args.negative_ratio) else args.negative_ratio,
                max_n_fraction=args.max_n_fraction,
                blacklist=args.blacklist,
                seed=args.seed,
                negatives=args.negatives,
            ),
            split=SplitSpec.from_args(
                args.valid_chroms, args.test_chroms, args.valid_regions, args.test_regions
            ),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            scheduler=args.scheduler,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
            resume=args.resume,
            evaluate_test=not args.skip_test,
            reverse_complement=args.rc_augment,
            num_workers=args.workers,
            threads=args.threads,
            assembly=args.assembly,
            progress=not args.no_progress,
            command=shlex.join(["varfx", *sys.argv[1:]]),
        )
        result = train(cfg)
    except (TrainingError, ValueError) as exc:
        sys.stderr.write(f"varfx train: {exc}\n")
        return 2
    t = result.test if result.test is not None else result.valid
    which = "test" if result.test is not None else "valid (test not scored)"
    sys.stdout.write(
        f"{result.run_dir}: {result.epochs_run} epochs, best epoch {result.best_epoch}; "
        f"{which} mean auROC {t.mean_auroc:.4f}, mean auPRC {t.mean_auprc:.4f}\n"
    )
    for f in t.features:
        sys.stdout.write(
            f"  {f.feature:<24} auROC {f.auroc:.4f}  auPRC {f.auprc:.4f}  ({f.positives} pos)\n"
        )
    return 0


def _add_export(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a training run to ONNX in a model repository",
        description=(
            "Write RUN's best checkpoint as REPO/NAME/VERSION/model.onnx (uint8 tokens [batch, L] "
            "-> probabilities float32 [batch, F], contract metadata). The ONNX Runtime output is "
            "checked against torch first; a model that disagrees is not written."
        ),
    )
    p.add_argument("--run", required=True, help="run directory of varfx train")
    p.add_argument("--repo", required=True, help="model repository folder")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--version", type=int, default=None, help="version (default: next free)")
    p.add_argument("--fp16", action="store_true", help="store weights as float16")
    p.add_argument(
        "--no-fp16-graph",
        action="store_true",
        help="do not write model.fp16.onnx (float16 arithmetic, checked on validation windows)",
    )
    p.add_argument(
        "--conv1d",
        action="store_true",
        help="keep 1-D conv layers as 1-D (default: 2-D over [N, C, 1, L], faster on ORT's CPU)",
    )
    p.add_argument("--tolerance", type=float, default=1e-5, help="parity max abs diff (1e-5)")
    p.add_argument("--assembly", default=None, help="override the run's assembly name")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument(
        "--calibration-n",
        type=int,
        default=100_000,
        help="random background SNVs of the calibration written beside the model, and as many "
        "random indels, on the run's (first) training FASTA (varfx calibrate; default 100000)",
    )
    p.add_argument(
        "--no-calibrate", action="store_true", help="do not calibrate (no quantile scores)"
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from varfx.training.errors import TrainingError
    from varfx.training.export import export_run

    try:
        r = export_run(
            args.run,
            args.repo,
            args.name,
            version=args.version,
            fp16=args.fp16,
            conv2d=not args.conv1d,
            tolerance=args.tolerance,
            assembly=args.assembly,
            overwrite=args.overwrite,
            command=shlex.join(["varfx", *sys.argv[1:]]),
            fp16_graph=not args.no_fp16_graph,
        )
    except (TrainingError, ValueError) as exc:
        sys.stderr.write(f"varfx export: {exc}\n")
        return 2
    sys.stdout.write(
        f"wrote {r.path} (version {r.version}); ORT vs torch max abs diff {r.max_abs_diff:.2e}\n"
    )
    if r.fp16_max_abs_diff is not None:
        sys.stdout.write(
            f"fp16 weights: max abs diff {r.fp16_max_abs_diff:.2e}, "
            f"test mean auROC change {r.fp16_test_auroc_change:+.5f}\n"
        )
    if r.fp16_check is not None:
        c = {k: float("nan") if v is None else v for k, v in r.fp16_check.items()}
        sys.stdout.write(
            f"fp16 graph: {r.fp16_graph or 'not written (check failed)'}; max abs diff "
            f"{c['max_abs_diff_random']:.2e} random, {c['max_abs_diff_real']:.2e} validation; "
            f"validation auROC change {c['valid_auroc_change']:+.6f}\n"
        )
    return 0 if args.no_calibrate else _calibrate_export(args, r.path)


def _calibrate_export(args: argparse.Namespace, model_path: Any) -> int:
    """``varfx calibrate`` on the exported model, with the run's first training FASTA."""
    import json
    from pathlib import Path

    from varfx.server.background import calibrate_model
    from varfx.server.calibration import CalibrationFileError
    from varfx.server.repository import ModelRepositoryError

    try:
        fastas = json.loads((Path(args.run) / "config.json").read_text())["genome"]
        fasta = fastas if isinstance(fastas, str) else fastas[0]
        calibration, (npz, _) = calibrate_model(
            Path(model_path).parent, fasta, n=args.calibration_n
        )
    except (
        OSError,
        KeyError,
        IndexError,
        ValueError,
        CalibrationFileError,
        ModelRepositoryError,
    ) as exc:
        sys.stderr.write(
            f"varfx export: the model was written but not calibrated ({exc}); run "
            f"`varfx calibrate {Path(model_path).parent} --genome FASTA`\n"
        )
        return 2
    sys.stdout.write(f"calibrated: {calibration.description} ({npz})\n")
    return 0


def _add_conv2d(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "conv2d",
        help="rewrite an ONNX model's 1-D conv layers as 2-D ones (faster on ORT's CPU)",
        description=(
            "Rewrite MODEL (uint8 tokens [batch, L] in) so that its 1-D conv / pool layers run as "
            "2-D layers over [N, C, 1, L]: the same arithmetic, 1.3-1.7x faster on ONNX Runtime's "
            "CPU provider. Both graphs run on random tokens first; nothing is written unless "
            "they agree within --tolerance."
        ),
    )
    p.add_argument("model", help="model.onnx to read")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="where to write the rewritten model")
    out.add_argument("--in-place", action="store_true", help="replace MODEL")
    p.add_argument("--tolerance", type=float, default=1e-5, help="parity max abs diff (1e-5)")
    p.set_defaults(func=_run_conv2d)


def _run_conv2d(args: argparse.Namespace) -> int:
    from varfx.training.errors import TrainingError
    from varfx.training.export import convert_conv2d

    dst = args.model if args.in_place else args.out
    try:
        diff = convert_conv2d(args.model, dst, tolerance=args.tolerance)
    except (TrainingError, OSError, ValueError) as exc:
        sys.stderr.write(f"varfx conv2d: {exc}\n")
        return 2
    sys.stdout.write(f"wrote {dst}; 1-D vs 2-D graph max abs diff {diff:.2e}\n")
    return 0


def _add_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="the locked test protocol: evaluate one shipped ONNX model on its test region",
        description=(
            "Label every bin of the test region (blacklisted windows excluded), run MODEL on all "
            "of them and report per feature and mean auROC/auPRC with bootstrap 95%% intervals on "
            "every bin, a 1:1 random and a 1:1 GC-matched negative mix, beside GC-only, CpG-only "
            "and k-mer baselines on the same windows, and cell-type specificity. Writes "
            "OUT/protocol.json, OUT/protocol.md and OUT/predictions.npz. The test region is "
            "evaluated once per model: OUT already holding this model's evaluation is refused."
        ),
    )
    p.add_argument("--model", required=True, help="model.onnx (varfx metadata)")
    p.add_argument("--genome", required=True, nargs="+", help="indexed FASTA(s)")
    p.add_argument("--peaks", required=True, nargs="+", help="peak files or folders")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--test-regions", nargs="+", default=["chr20:29500001-"], help="(default chr20:29500001-)"
    )
    p.add_argument(
        "--valid-regions",
        nargs="*",
        default=[],
        help="kept out of the k-mer baseline's fit; its fit size and C are chosen here",
    )
    p.add_argument("--blacklist", default=None, help="BED of regions whose windows are excluded")
    p.add_argument("--bin-size", type=int, default=200)
    p.add_argument("--max-n-fraction", type=float, default=0.1)
    p.add_argument("--allow-peaks-past-end", action="store_true", help="truncated FASTA contigs")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (200)")
    p.add_argument(
        "--kmer-windows",
        type=int,
        nargs="+",
        default=[20000],
        help="k-mer baseline fit windows; several: chosen on --valid-regions (20000)",
    )
    p.add_argument(
        "--kmer-C",
        type=float,
        nargs="+",
        default=[1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0],
        help="k-mer baseline L2 C grid, chosen on --valid-regions (1e-5 ... 1, x10)",
    )
    p.add_argument("--kmer-k", type=int, default=6, help="k-mers of length 1..K (6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1)")
    p.add_argument("--again", action="store_true", help="re-evaluate a model OUT already holds")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from varfx.training.errors import TrainingError
    from varfx.training.protocol import ProtocolConfig, evaluate_model

    try:
        report = evaluate_model(
            ProtocolConfig(
                model=args.model,
                genome=tuple(args.genome),
                peaks=tuple(args.peaks),
                out=args.out,
                test_regions=tuple(args.test_regions),
                valid_regions=tuple(args.valid_regions),
                blacklist=args.blacklist,
                bin_size=args.bin_size,
                stride=args.bin_size,
                max_n_fraction=args.max_n_fraction,
                allow_peaks_past_end=args.allow_peaks_past_end,
                bootstrap=args.bootstrap,
                seed=args.seed,
                kmer_windows=tuple(args.kmer_windows),
                kmer_C=tuple(args.kmer_C),
                kmer_k=args.kmer_k,
                threads=args.threads,
                again=args.again,
                command=shlex.join(["varfx", *sys.argv[1:]]),
            )
        )
    except (TrainingError, ValueError, OSError) as exc:
        sys.stderr.write(f"varfx evaluate: {exc}\n")
        return 2
    for mix, m in report["mixes"].items():
        lo, hi = m["model"]["mean_auroc_ci"]
        sys.stdout.write(
            f"{mix:<11} {m['windows']:>7} windows: model mean auROC {m['model']['mean_auroc']:.4f} "
            f"({lo:.4f}-{hi:.4f}), k-mer {m['kmer']['mean_auroc']:.4f}, "
            f"GC {m['gc']['mean_auroc']:.4f}, CpG {m['cpg']['mean_auroc']:.4f}\n"
        )
    k = report["kmer_baseline"]
    sys.stdout.write(
        f"k-mer baseline: {k['fit_windows']} fit windows, C={k['C']:g} ({k['chosen_on']})\n"
    )
    sys.stdout.write(f"report: {args.out}/protocol.md\n")
    return 0
