"""The ``varfx`` command: one entry point, one subcommand per job.

Each subcommand lives in its package's ``_cli`` module, which imports only the standard library
at import time; heavy dependencies are imported when the subcommand runs. When an optional
dependency is missing, the command names the extra that provides it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from varfx import __version__

# Subcommand registries, in --help order: module path of each `_cli` with a `register()`.
_CLI_MODULES = (
    "varfx.server._cli",
    "varfx.server._calibrate_cli",
    "varfx.client._cli",
    "varfx.client._explain_cli",
    "varfx.training._cli",
)

# Top-level module of a missing dependency -> the extra that installs it.
_EXTRA_FOR_MODULE = {
    "onnxruntime": "server",
    "prometheus_client": "server",
    "grpc_reflection": "server",
    "torch": "train",
    "onnx": "train",
    "matplotlib": "train",
    "sklearn": "train",
    "logomaker": "plot",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varfx",
        description="Score DNA variants for their effect on chromatin features.",
    )
    parser.add_argument("--version", action="version", version=f"varfx {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _CLI_MODULES:
        importlib.import_module(name).register(sub)
    for command in {id(p): p for p in sub.choices.values()}.values():
        _add_log_options(command)
    return parser


def _add_log_options(p: argparse.ArgumentParser) -> None:
    """-v / -q / --log-level on a subcommand (``varfx score -v``, ``varfx serve -q``); an
    option a subcommand defines itself is left to it."""
    g = p.add_argument_group("logging")
    for flags, kw in (
        (
            ("-v", "--verbose"),
            {
                "action": "count",
                "default": 0,
                "dest": "sub_verbose",
                "help": "more log output (-vv: debug)",
            },
        ),
        (
            ("-q", "--quiet"),
            {
                "action": "count",
                "default": 0,
                "dest": "sub_quiet",
                "help": "less log output (-qq: errors only)",
            },
        ),
        (
            ("--log-level",),
            {
                "dest": "sub_log_level",
                "default": None,
                "choices": ["DEBUG", "INFO", "WARNING", "ERROR"],
                "help": "log level of this command [VARFX_LOG_LEVEL; default INFO]",
            },
        ),
    ):
        try:
            g.add_argument(*flags, **kw)  # type: ignore[arg-type]
        except argparse.ArgumentError:
            continue


def log_level(args: argparse.Namespace) -> int:
    """The subcommand's --log-level, else VARFX_LOG_LEVEL, else the top-level --log-level
    moved by -v / -q (one step each)."""
    name = getattr(args, "sub_log_level", None) or os.environ.get("VARFX_LOG_LEVEL", "").upper()
    if name in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return int(getattr(logging, name))
    steps = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]
    here = steps.index(getattr(logging, args.log_level))
    shift = getattr(args, "sub_quiet", 0) - getattr(args, "sub_verbose", 0)
    return steps[max(0, min(len(steps) - 1, here + shift))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=log_level(args),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        extra = _EXTRA_FOR_MODULE.get(top)
        if extra is None:
            raise
        sys.stderr.write(
            f"varfx {args.command}: needs the '{extra}' extra (missing module {top!r}); "
            f"install it with: pip install 'varfx[{extra}]'\n"
        )
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return int(result or 0)
