"""What every RPC gets, in one place: metrics, error mapping and request logging, as a grpc.aio
server interceptor.

- Metrics: ``varfx_requests_total{method, code}`` and ``varfx_request_duration_seconds`` are
  recorded when the call is done (``context.add_done_callback``), with the code the client saw:
  OK only when the response went out; CANCELLED or DEADLINE_EXCEEDED when the client went away
  or the deadline passed first, whatever the handler returned.
- Errors: a ``VarfxServerError`` becomes its gRPC code (``errors.grpc_code``) with its message;
  anything else is INTERNAL with the exception's type and message, logged once with its
  traceback. Malformed requests (INVALID_ARGUMENT) are logged at most once per
  ``log_every_s`` seconds, with a count of those not logged.
- Only the services named in ``services`` are instrumented (varfx.v1 and KServe v2; the health
  and reflection services pass through untouched).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from varfx.server.errors import VarfxServerError, grpc_code
from varfx.server.metrics import Metrics

__all__ = ["CallInterceptor"]

log = logging.getLogger(__name__)


class _RateLimitedLog:
    """One log line per ``every_s`` seconds; the lines dropped in between are counted."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = -float("inf")
        self._dropped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._dropped += 1
            return
        if self._dropped:
            message += f" ({self._dropped} more like it not logged)"
        self._dropped = 0
        self._last = now
        log.warning(message, *args)


def _final_code(context: Any) -> grpc.StatusCode:
    """The status the client saw, read when the call is done: a call past its deadline is
    DEADLINE_EXCEEDED and one the client dropped CANCELLED, whatever the handler returned."""
    code = context.code()
    remaining = context.time_remaining()
    if code is None or context.cancelled():
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        if context.cancelled():
            return grpc.StatusCode.CANCELLED
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Metrics, error mapping and logging for every call of ``services`` (see the module)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        services: Sequence[str],
        log_requests: bool = False,
        log_every_s: float = 10.0,
    ) -> None:
        self._metrics = metrics
        self._services = tuple(f"/{s}/" for s in services)
        self._log_requests = log_requests
        self._bad_requests = _RateLimitedLog(log_every_s)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method or ""
        if handler is None or not full.startswith(self._services):
            return handler
        method = full.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # stream-unary: none in these services

    # -- the wrappers ------------------------------------------------------------------------

    def _begin(self, method: str, context: Any) -> None:
        m = self._metrics
        m.inflight.inc()
        t0 = time.perf_counter()

        def done(ctx: Any) -> None:
            seconds = time.perf_counter() - t0
            code = _final_code(ctx)
            m.inflight.dec()
            m.requests.labels(method=method, code=code.name).inc()
            m.request_duration.labels(method=method).observe(seconds)
            if self._log_requests:
                log.info("%s %s %.1f ms", method, code.name, seconds * 1000)

        context.add_done_callback(done)

    def _status(self, method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
        """The status a failure is answered with (logged as the module docstring says)."""
        if isinstance(exc, VarfxServerError):
            code = grpc_code(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self._bad_requests.warning("%s: INVALID_ARGUMENT: %s", method, exc)
            return code, str(exc)
        log.error("%s failed", method, exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"

    # The abort happens outside the ``except`` block: the exception (and through its traceback
    # the request it was raised over, megabytes for a refused large request) is then freed at
    # once instead of living on as the abort's __context__.

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Any) -> Any:
            self._begin(method, context)
            try:
                return await behavior(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                status = self._status(method, exc)
            del request
            await context.abort(*status)

        return call

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            self._begin(method, context)
            try:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a handler that answers without streaming (e.g. an auth refusal)
                    await result
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                status = self._status(method, exc)
            else:
                return
            del request
            await context.abort(*status)

        return call
