"""The errors of ``varfx score`` (one root, ``ScoreError``; ``VcfFormatError`` names input lines)."""

from __future__ import annotations

__all__ = ["GenomeMismatchError", "PartialMismatchError", "ScoreError", "ScoreUsageError"]


class ScoreError(Exception):
    """A ``varfx score`` job cannot run or finish (exit status 1)."""


class ScoreUsageError(ScoreError):
    """The command is wrong: unknown format or model, several models and no ``--model``, an
    option that does not fit the input or output (exit status 2)."""


class PartialMismatchError(ScoreError):
    """``OUT.partial`` was written by another run (other settings, manifest or input)."""


class GenomeMismatchError(ScoreError):
    """The VCF header names another genome than the model's (the message says which contig)."""
