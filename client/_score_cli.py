"""``varfx score`` on the command line (stdlib-only at import time).

Options come from, in order: the command line, ``VARFX_<OPTION>`` environment variables
(``VARFX_SERVER``, ``VARFX_MODEL``, ``VARFX_BATCH_SIZE``, ...), a TOML ``--config`` file (keys as
the long options with underscores, e.g. ``server = "varfx:50051"``, ``max_unscored = 0.1``), then
the defaults. Exit status: 0 scored; 1 failure (input error, server error, genome mismatch); 2
usage (bad option, unknown format or model, several models and no ``--model``); 3 more than
``--max-unscored`` of the ALTs could not be scored; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["OPTIONS", "register_score"]

#: Options that may come from the environment or the config file: name -> (type, default).
OPTIONS: dict[str, tuple[type, Any]] = {
    "server": (str, "localhost:50051"),
    "model": (str, ""),
    "format": (str, ""),
    "features": (str, ""),
    "scores": (str, ""),
    "ref_policy": (str, "strict"),
    "reverse_complement": (bool, False),
    "indels_as_written": (bool, False),
    "batch_size": (int, 2000),
    "batch_bytes": (int, 1 << 20),
    "max_in_flight": (int, 4),
    "parallel": (int, 1),
    "max_unscored": (float, 0.5),
    "skip_genome_check": (bool, False),
    "tsv_comments": (bool, False),
    "regions": (str, ""),
    "regions_file": (str, ""),
    "timeout": (float, 60.0),
    "retries": (int, 12),
}

EXAMPLES = """examples:
  varfx score in.vcf.gz -o scored.vcf.gz --server varfx:50051
  bcftools view in.vcf.gz | varfx score - -o - | bcftools view -Oz -o scored.vcf.gz
  varfx score in.vcf.gz -o scored.parquet --features DNase,CTCF --scores diff,log2fc
  varfx score in.vcf.gz -o scored.vcf.gz --features CTCF --scores diff,quantile,pvalue
  varfx score in.vcf.gz -o chr1.vcf.gz --regions chr1:1-5000000 --parallel 4
  varfx score big.vcf.gz -o big.scored.vcf.gz --resume      # after an interruption

exit status: 0 scored, 1 failure, 2 usage, 3 too many ALTs unscored (--max-unscored), 130
interrupted. Options also come from VARFX_<OPTION> variables and --config FILE (TOML)."""


def register_score(subparsers: Any, add_tls: Any) -> None:
    """Add the ``score`` subcommand (``add_tls`` adds the shared TLS/auth options)."""
    p = subparsers.add_parser(
        "score",
        help="annotate a VCF with variant-effect scores from a varfx server",
        description=(
            "Score every record of a VCF (plain or gzipped; - for standard input) against a "
            "varfx server and write an annotated VCF (bgzipped + tabix-indexed when OUT ends "
            "in .gz), a TSV or a Parquet table (- for standard output). Multi-allelic records "
            "are scored per ALT; every record comes out, unscorable ones with their status."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="input VCF (.vcf, .vcf.gz, a pipe, or - for standard input)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: .vcf, .vcf.gz, .tsv, .tsv.gz, .parquet, or - (standard output)",
    )
    p.add_argument("--config", default=None, help="TOML file of options (keys as the options)")
    p.add_argument(
        "--server",
        default=None,
        help="HOST:PORT or gRPC target [VARFX_SERVER; default localhost:50051]",
    )
    p.add_argument("--model", default=None, help="model name (default: the server's default)")
    p.add_argument(
        "--format",
        choices=["vcf", "tsv", "parquet"],
        default=None,
        help="output format (default: from the output name; vcf for - and pipes)",
    )
    p.add_argument(
        "--features",
        default=None,
        help="comma-separated features: VCF gets per-feature INFO keys; summary uses this subset",
    )
    p.add_argument(
        "--scores",
        default=None,
        help="score kinds per feature: diff,log2fc,ref,alt and, for a calibrated model, "
        "quantile,signed_quantile,pvalue (TSV/Parquet default: all the model has; VCF: diff, "
        "plus quantile when calibrated); a calibrated model's VARFX_MAX_QUANTILE is always written",
    )
    p.add_argument(
        "--ref-policy",
        choices=["strict", "warn", "flip"],
        default=None,
        help="when REF does not match the genome (default: strict = not scored); warn "
        "and flip notes go to VARFX_NOTE",
    )
    p.add_argument(
        "--reverse-complement",
        action="store_true",
        default=None,
        help="average each window with its reverse complement",
    )
    p.add_argument(
        "--indels-as-written",
        action="store_true",
        default=None,
        help="score indels as written (default: trimmed and left-aligned first)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from OUT.partial"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="variants per request (default 2000)"
    )
    p.add_argument(
        "--batch-bytes",
        type=int,
        default=None,
        help="REF+ALT bytes per request at most (default 1 MiB)",
    )
    p.add_argument(
        "--max-in-flight", type=int, default=None, help="requests in flight per stream (default 4)"
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="streams at once, merged back in input order (default 1)",
    )
    p.add_argument(
        "--max-unscored",
        type=float,
        default=None,
        help="exit 3 when more than this fraction of the ALTs is not scored "
        "(default 0.5; 1 never fails)",
    )
    p.add_argument(
        "--skip-genome-check",
        action="store_true",
        default=None,
        help="score even if the VCF header's contigs/assembly contradict the model's "
        "genome (recorded in the output)",
    )
    p.add_argument(
        "--tsv-comments",
        action="store_true",
        default=None,
        help="TSV: put the manifest in leading # lines (default: OUT.manifest.json)",
    )
    p.add_argument(
        "--regions",
        default=None,
        help="only records whose POS is in these regions, e.g. chr1:1-5000000,chr2 "
        "(a bgzipped, tabix-indexed input)",
    )
    p.add_argument(
        "--regions-file",
        default=None,
        help="BED file of regions (0-based, half-open), as --regions",
    )
    p.add_argument("--timeout", type=float, default=None, help="deadline of unary calls, seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="attempts on UNAVAILABLE/RESOURCE_EXHAUSTED/CANCELLED, backoff 0.25 s "
        "doubling to 10 s (default 12)",
    )
    add_tls(p)
    p.set_defaults(func=_score)


class ConfigError(ValueError):
    """A config file or VARFX_* variable that cannot be used; names the key."""


def resolve(args: argparse.Namespace, environ: dict[str, str] | None = None) -> None:
    """Fill every option left unset on the command line from VARFX_*, --config, defaults."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    if args.config:
        import tomllib

        try:
            with open(args.config, "rb") as fh:
                config = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {args.config}: {exc}") from None
        unknown = sorted(set(config) - set(OPTIONS) - {"tls", "ca_cert", "token"})
        if unknown:
            raise ConfigError(f"{args.config}: unknown key(s) {unknown}; known: {sorted(OPTIONS)}")
    for name, (kind, default) in OPTIONS.items():
        if getattr(args, name, None) is not None:
            continue
        raw = env.get(f"VARFX_{name.upper()}")
        if raw is not None and raw != "":
            value: Any = _parse(kind, raw, f"VARFX_{name.upper()}")
        elif name in config:
            value = config[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{args.config}: {name} = {value!r} should be {kind.__name__}")
        else:
            value = default
        setattr(args, name, value)


def _parse(kind: type, raw: str, where: str) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}={raw!r} is not a boolean (1/0, true/false)")
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{where}={raw!r} is not {kind.__name__}") from None


def _score(args: argparse.Namespace) -> int:
    from varfx.client._cli import _client

    try:
        resolve(args)
    except ConfigError as exc:
        sys.stderr.write(f"varfx score: error: {exc}\n")
        return 2
    from varfx.client._score_errors import ScoreError, ScoreUsageError
    from varfx.client.errors import VarfxError, VcfFormatError
    from varfx.client.score import score_vcf

    features = [f for f in args.features.split(",") if f] or None
    out = args.output
    try:
        with _client(args) as client:
            summary = score_vcf(
                client,
                args.input,
                out,
                model=args.model,
                fmt=args.format or None,
                features=features,
                scores=args.scores or None,
                ref_policy=args.ref_policy,
                reverse_complement=args.reverse_complement,
                indels_as_written=args.indels_as_written,
                resume=args.resume,
                batch_size=args.batch_size,
                batch_bytes=args.batch_bytes,
                max_in_flight=args.max_in_flight,
                parallel=args.parallel,
                skip_genome_check=args.skip_genome_check,
                tsv_comments=args.tsv_comments,
                regions=args.regions,
                regions_file=args.regions_file,
                progress=False if args.no_progress else None,
            )
    except ScoreUsageError as exc:
        sys.stderr.write(f"varfx score: error: {exc}\n")
        return 2
    except (ScoreError, VcfFormatError, VarfxError, ValueError, OSError) as exc:
        sys.stderr.write(f"varfx score: error: {exc}\n")
        if os.path.exists(f"{out}.partial"):
            sys.stderr.write(
                f"varfx score: complete records are in {out}.partial; after fixing the cause, "
                "run the same command with --resume\n"
            )
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(
            f"varfx score: interrupted; complete records are in {out}.partial, "
            "continue with the same command plus --resume\n"
        )
        return 130
    sys.stderr.write("\n".join(summary.lines()) + "\n")
    if summary.variants and summary.unscored_fraction > args.max_unscored:
        sys.stderr.write(
            f"varfx score: {summary.unscored_fraction:.1%} of {summary.variants} ALTs were not "
            f"scored (more than --max-unscored {args.max_unscored:g}); see the counts above\n"
        )
        return 3
    return 0
