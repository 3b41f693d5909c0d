"""Chunked, flow-controlled, resumable StreamScoreVariants for the synchronous client.

The input is cut into chunks of ``batch_size`` variants; at most ``max_in_flight`` chunks are
sent without a response (backpressure: the input iterator is only advanced when a slot frees).
Responses come back one per chunk, in order. When the stream breaks with UNAVAILABLE or
RESOURCE_EXHAUSTED (server restart, replica gone), a new stream is opened after a backoff and
starts again from the first chunk that had no response; nothing answered is sent twice.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from varfx.client._retry import RetryPolicy
from varfx.client.errors import RETRYABLE_CODES, from_rpc_error, rpc_code
from varfx.client.types import Variant, VariantLike

__all__ = ["chunked", "stream_chunks"]

log = logging.getLogger(__name__)


def chunked(variants: Iterable[VariantLike], size: int) -> Iterator[list[Variant]]:
    """Lists of at most ``size`` Variants (coerced from tuples/dicts)."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    it = iter(variants)
    while True:
        chunk = [Variant.coerce(v) for v in itertools.islice(it, size)]
        if not chunk:
            return
        yield chunk


class _Feeder:
    """The request iterator handed to gRPC for one stream attempt."""

    def __init__(
        self,
        resend: list[list[Variant]],
        source: Iterator[list[Variant]],
        pending: deque[list[Variant]],
        make_request: Callable[[list[Variant]], Any],
        max_in_flight: int,
        state: dict[str, Any],
    ) -> None:
        self.resend = resend
        self.source = source
        self.pending = pending
        self.make_request = make_request
        self.slots = threading.Semaphore(max_in_flight)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.state = state  # shared across attempts: "exhausted", "error"

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()

    def _acquire(self) -> bool:
        while not self.stopped.is_set():
            if self.slots.acquire(timeout=0.05):
                return True
        return False

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.resend:
            if not self._acquire():
                return
            yield self.make_request(chunk)
        while not self.state["exhausted"]:
            if not self._acquire():
                return
            with self.lock:
                if self.stopped.is_set():
                    return
                try:
                    chunk = next(self.source)
                    request = self.make_request(chunk)
                except StopIteration:
                    self.state["exhausted"] = True
                    return
                except BaseException as exc:  # bad input: end the stream, re-raise in caller
                    self.state["exhausted"] = True
                    self.state["error"] = exc
                    return
                self.pending.append(chunk)
            yield request


def stream_chunks(
    open_stream: Callable[[Iterator[Any]], Any],
    chunks: Iterator[list[Variant]],
    make_request: Callable[[list[Variant]], Any],
    *,
    max_in_flight: int,
    retry: RetryPolicy,
    target: str,
) -> Iterator[tuple[list[Variant], Any]]:
    """Yield ``(chunk, response)`` in input order; see the module docstring."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    pending: deque[list[Variant]] = deque()
    state: dict[str, Any] = {"exhausted": False, "error": None}
    failures = 0
    while True:
        feeder = _Feeder(list(pending), chunks, pending, make_request, max_in_flight, state)
        call = open_stream(iter(feeder))
        try:
            for response in call:
                chunk = pending.popleft()
                feeder.slots.release()
                failures = 0
                yield chunk, response
        except grpc.RpcError as exc:
            feeder.stop()
            call.cancel()
            failures += 1
            if rpc_code(exc) in RETRYABLE_CODES and failures < retry.max_attempts:
                wait = retry.backoff(failures)
                log.warning(
                    "stream to %s broke (%s); resuming %d unanswered chunk(s) in %.2f s",
                    target,
                    rpc_code(exc),
                    len(pending),
                    wait,
                )
                time.sleep(wait)
                continue
            raise from_rpc_error(exc, "StreamScoreVariants", target, failures) from exc
        finally:
            feeder.stop()
            call.cancel()  # no-op when the call has finished; frees it when the caller stops early
        if state["error"] is not None:
            raise state["error"]
        if not pending and state["exhausted"]:
            return
        # the server closed the stream early without an error: resume like a broken stream
        failures += 1
        if failures >= retry.max_attempts:
            raise from_rpc_error(
                RuntimeError(f"stream ended with {len(pending)} chunk(s) unanswered"),
                "StreamScoreVariants",
                target,
                failures,
            )
