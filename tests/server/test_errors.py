"""The one mapping from server errors to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from varfx.server.errors import (
    GenomeUnavailableError,
    InferenceError,
    InvalidRequestError,
    ModelNotFoundError,
    QueueFullError,
    VarfxServerError,
    grpc_code,
)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ModelNotFoundError("m"), grpc.StatusCode.NOT_FOUND),
        (InvalidRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (QueueFullError("q"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (GenomeUnavailableError("g"), grpc.StatusCode.FAILED_PRECONDITION),
        (InferenceError("i"), grpc.StatusCode.INTERNAL),
        (VarfxServerError("base"), grpc.StatusCode.INTERNAL),
        (KeyError("unexpected"), grpc.StatusCode.INTERNAL),
    ],
)
def test_grpc_code(exc: BaseException, code: grpc.StatusCode) -> None:
    assert grpc_code(exc) == code


def test_subclasses_inherit_their_code() -> None:
    class TooManyFeatures(InvalidRequestError):
        pass

    assert grpc_code(TooManyFeatures("f")) == grpc.StatusCode.INVALID_ARGUMENT
    assert issubclass(QueueFullError, VarfxServerError)
