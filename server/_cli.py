"""`varfx` subcommands of varfx.server (stdlib-only at import time)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add this package's subcommands to the top-level `varfx` parser."""
    del subparsers


def _unused(args: argparse.Namespace) -> int:
    return 0
