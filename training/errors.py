"""Typed errors of the training pipeline (data, training, export); each message names the value."""

from __future__ import annotations

__all__ = ["DataError", "ExportError", "ParityError", "TrainingError"]


class TrainingError(Exception):
    """Base class of varfx.training errors."""


class DataError(TrainingError, ValueError):
    """Bad training input: peak file, FASTA, split specification or window settings."""


class ExportError(TrainingError):
    """An ONNX export could not be made or written."""


class ParityError(ExportError):
    """The exported ONNX model disagrees with the torch model beyond the tolerance."""
