"""``varfx score``, ``varfx health`` and ``varfx report`` (stdlib-only at import time)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the top-level `varfx` parser."""
    from varfx.client._score_cli import register_score

    register_score(subparsers, _add_tls)

    h = subparsers.add_parser(
        "health",
        help="check a varfx server's health (exit 0 when SERVING)",
        description="grpc.health.v1 Check: prints the status; exit 0 when SERVING, 1 otherwise.",
    )
    h.add_argument("--server", default="localhost:50051", help="HOST:PORT (default: %(default)s)")
    h.add_argument("--service", default="", help="service name (default: the whole server)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds (default: %(default)s)")
    h.set_defaults(retries=1)
    _add_tls(h)
    h.set_defaults(func=_health)

    r = subparsers.add_parser(
        "report",
        help="one self-contained HTML page summarising a VCF annotated by varfx score",
        description=(
            "Read a VCF written by varfx score (plain, bgzipped, or - for stdin) in one streaming "
            "pass and write one HTML page that needs no network to view: the run's manifest, "
            "counts by status, per-feature score distributions, the top variants and a "
            "genome-position track of max |diff|."
        ),
    )
    r.add_argument("input", help="annotated VCF from varfx score (.vcf, .vcf.gz, or - for stdin)")
    r.add_argument("-o", "--output", required=True, help="output HTML path (- for stdout)")
    r.add_argument(
        "--top", type=int, default=50, help="variants in the top table (default: %(default)s)"
    )
    r.add_argument("--title", default="", help="page title (default: from the input name)")
    r.add_argument(
        "--explain",
        action="append",
        default=[],
        metavar="JSON",
        help="a varfx explain JSON file to draw on the page (repeatable)",
    )
    r.set_defaults(func=_report)


def _add_tls(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS and auth")
    g.add_argument("--tls", action="store_true", help="use TLS (system roots unless --ca-cert)")
    g.add_argument("--ca-cert", default=None, help="PEM file of root certificates")
    g.add_argument("--client-cert", default=None, help="PEM client certificate (mutual TLS)")
    g.add_argument("--client-key", default=None, help="PEM client key (mutual TLS)")
    g.add_argument("--token", default=None, help="bearer token (or env VARFX_TOKEN)")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="allow --token over plaintext to a host other than this one (trusted network)",
    )


def _client(args: argparse.Namespace, **kwargs: Any) -> Any:
    import os

    from varfx.client import Client, RetryPolicy

    return Client(
        args.server,
        tls=args.tls,
        root_certificates=args.ca_cert,
        client_certificate=args.client_cert,
        client_key=args.client_key,
        token=args.token or os.environ.get("VARFX_TOKEN"),
        insecure=args.insecure,
        timeout=args.timeout,
        # patient: a restarting server (model load + warm-up) is waited for, about a minute
        retry=RetryPolicy(max_attempts=args.retries, initial_backoff=0.25, max_backoff=10.0),
        **kwargs,
    )


def _health(args: argparse.Namespace) -> int:
    from varfx.client.errors import VarfxError

    try:
        with _client(args) as client:
            status = client.health(args.service, timeout=args.timeout)
    except VarfxError as exc:
        sys.stdout.write(f"{args.server}: {exc.code_name} ({exc.details or exc})\n")
        return 1
    sys.stdout.write(f"{args.server}: {status}\n")
    return 0 if status == "SERVING" else 1


def _report(args: argparse.Namespace) -> int:
    from varfx.client.report import ReportError, write_report

    try:
        summary = write_report(
            args.input, args.output, top=args.top, title=args.title, explain=args.explain
        )
    except (ReportError, OSError) as exc:
        sys.stderr.write(f"varfx report: error: {exc}\n")
        return 1
    if args.output != "-":
        sys.stdout.write(summary + "\n")
    return 0
