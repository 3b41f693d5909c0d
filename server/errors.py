"""Typed server errors and their one mapping to gRPC status codes."""

from __future__ import annotations

import grpc

__all__ = [
    "CalibrationUnavailableError",
    "GenomeUnavailableError",
    "InferenceError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "QueueFullError",
    "VarfxServerError",
    "grpc_code",
]


class VarfxServerError(Exception):
    """Base of every error the service turns into a gRPC status."""


class ModelNotFoundError(VarfxServerError):
    """The request names a model or version the server does not hold."""


class InvalidRequestError(VarfxServerError):
    """The request is malformed: too many variants, an empty sequence pair, an unknown feature."""


class QueueFullError(VarfxServerError):
    """The model's queue has no room for the request's windows."""


class GenomeUnavailableError(VarfxServerError):
    """Variants were sent to a server started without a reference genome."""


class InferenceError(VarfxServerError):
    """ONNX Runtime failed on a batch."""


class CalibrationUnavailableError(VarfxServerError):
    """Calibrated score kinds were asked of a model without a (current) calibration."""


_CODES: dict[type[VarfxServerError], grpc.StatusCode] = {
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    GenomeUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,
    InferenceError: grpc.StatusCode.INTERNAL,
    CalibrationUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,
}


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception (INTERNAL for anything unexpected)."""
    for cls in type(exc).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL
