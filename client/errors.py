"""The client's errors: every ``grpc.RpcError`` reaches the caller as a ``VarfxError``."""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "RETRYABLE_CODES",
    "InsecureTransportError",
    "ModelChoiceError",
    "VarfxError",
    "VcfFormatError",
    "from_rpc_error",
    "stream_status_lost",
]

#: Status codes the client retries with backoff. Scoring is idempotent, so a call is safe to
#: resend: UNAVAILABLE (no replica reachable, or one going away), RESOURCE_EXHAUSTED (a full
#: server queue) and CANCELLED as the client sees it when a draining replica's grace period
#: ends with the call still in flight (a cancel the caller itself asks for never reaches the
#: retry loop: it ends the call or generator without an RpcError to retry).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)


class VarfxError(Exception):
    """A failed call to the varfx server.

    ``code`` is the ``grpc.StatusCode`` (None when the failure did not come from gRPC),
    ``details`` the server's message. Raised ``from`` the original ``grpc.RpcError``.
    """

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, details: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    @property
    def code_name(self) -> str:
        return self.code.name if self.code is not None else "UNKNOWN"

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class InsecureTransportError(VarfxError, ValueError):
    """The client would send a secret (a bearer token) where others could read it."""


class ModelChoiceError(VarfxError, ValueError):
    """Which model to use cannot be decided: none served, an unknown name, or several and no
    default. The message lists the models the server has."""


class VcfFormatError(ValueError):
    """A VCF line that cannot be parsed; the message names the file and line number."""

    def __init__(self, path: str, line_number: int, reason: str) -> None:
        super().__init__(f"{path}:{line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


def rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a grpc.RpcError (sync or aio), None for anything else."""
    code_fn: Any = getattr(exc, "code", None)
    if not callable(code_fn):
        return None
    try:
        code = code_fn()
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


#: What grpc.aio reports, in place of the server's status, when a stream write fails because
#: the server has already ended the call (grpc/grpc#36066: the failed write overwrites the
#: status the server sent with this INTERNAL one).
_CORE_WRITE_FAILURE = "Internal error from Core"


def stream_status_lost(exc: BaseException) -> bool:
    """True when ``exc`` is grpc.aio's INTERNAL "Internal error from Core" for a stream write
    that raced the server's end of the call: the server's real status (for example UNAVAILABLE
    from a draining replica) was lost, so the break is treated like a retryable one. A server
    INTERNAL carries the server's own message and is not matched."""
    if rpc_code(exc) is not grpc.StatusCode.INTERNAL:
        return False
    details_fn: Any = getattr(exc, "details", None)
    try:
        details = details_fn() if callable(details_fn) else None
    except Exception:
        return False
    return details == _CORE_WRITE_FAILURE


def from_rpc_error(exc: BaseException, method: str, target: str, attempts: int = 1) -> VarfxError:
    """A VarfxError describing ``exc`` (raise it ``from exc``)."""
    code = rpc_code(exc)
    details_fn: Any = getattr(exc, "details", None)
    details = ""
    if callable(details_fn):
        try:
            details = details_fn() or ""
        except Exception:
            details = ""
    name = code.name if code is not None else type(exc).__name__
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    return VarfxError(
        f"{method} to {target} failed{tried}: {name}: {details or exc}", code=code, details=details
    )
