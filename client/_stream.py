"""Resumable, flow-controlled StreamScoreVariants: one typed state machine, used by the sync
driver here and the asyncio one in client/_aio.py, which differ only in how they wait.

The input is a lazy iterator of chunks (VariantBatch); at most ``max_in_flight`` are sent
without a response (backpressure: the input is only advanced when one is answered). Responses
come back one per chunk, in order. When the stream breaks with UNAVAILABLE, RESOURCE_EXHAUSTED
or CANCELLED (server restart, replica draining or gone), a new stream is opened after a backoff
and starts again from the first chunk without a response; nothing answered is sent twice.

``parallel`` streams: a ``Dealer`` hands chunk i to lane ``i % N`` (each lane one stream with
its own ResumeState); results are merged back in input order by reading lane ``i % N`` for
result i, so N streams give the same tables, in the same order, as one.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from varfx.client._retry import RetryPolicy
from varfx.client.errors import (
    RETRYABLE_CODES,
    VarfxError,
    from_rpc_error,
    rpc_code,
    stream_status_lost,
)

__all__ = [
    "Dealer",
    "Phase",
    "ResumeState",
    "merge_lanes",
    "stream_chunks",
]

log = logging.getLogger(__name__)
C = TypeVar("C")
METHOD = "StreamScoreVariants"


class Phase(enum.Enum):
    """Where a stream job stands."""

    STREAMING = "streaming"  # an attempt is open
    BROKEN = "broken"  # the attempt broke; waiting to resume
    DONE = "done"  # every chunk answered, input exhausted
    FAILED = "failed"  # gave up (error raised to the caller)


@dataclass
class ResumeState(Generic[C]):
    """The state of one resumable stream job (all attempts).

    ``unanswered``: chunks sent and not answered, in order (the first is the next response's);
    at the start of an attempt they are the chunks to send again. ``failures``: consecutive
    attempts that broke (a response resets it). Not thread-safe: the sync driver holds a lock
    around every call.
    """

    retry: RetryPolicy
    max_in_flight: int
    target: str
    unanswered: deque[C] = field(default_factory=deque)
    phase: Phase = Phase.BROKEN
    exhausted: bool = False
    input_error: BaseException | None = None
    failures: int = 0
    attempts: int = 0
    answered: int = 0
    sent: int = 0  # requests sent in all, resends included

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")

    # -- the attempt's lifecycle ----------------------------------------------------------

    def start_attempt(self) -> list[C]:
        """Open a new attempt; returns the chunks to send first (the unanswered ones)."""
        if self.phase is not Phase.BROKEN:
            raise RuntimeError(f"cannot start an attempt while {self.phase.value}")
        self.phase = Phase.STREAMING
        self.attempts += 1
        return list(self.unanswered)

    def resent(self) -> None:
        self.sent += 1

    @property
    def wants_input(self) -> bool:
        """True while the input may still have chunks and the attempt is open."""
        return self.phase is Phase.STREAMING and not self.exhausted

    @property
    def has_room(self) -> bool:
        """True when one more chunk may be sent without exceeding ``max_in_flight``."""
        return len(self.unanswered) < self.max_in_flight

    def took(self, chunk: C) -> None:
        """A new chunk from the input is being sent."""
        self.unanswered.append(chunk)
        self.sent += 1

    def input_ended(self, error: BaseException | None = None) -> None:
        """The input is exhausted, or raised ``error`` (re-raised once the answered chunks
        before it have been handed out)."""
        self.exhausted = True
        if error is not None and self.input_error is None:
            self.input_error = error

    def answer(self) -> C:
        """A response arrived: the chunk it answers."""
        if not self.unanswered:
            raise VarfxError(f"{METHOD} to {self.target}: a response with no request to answer")
        self.failures = 0
        self.answered += 1
        return self.unanswered.popleft()

    def broke(self, exc: BaseException) -> float:
        """The attempt broke with ``exc``: seconds to wait before resuming, or a VarfxError
        raised (not retryable, or out of attempts)."""
        self.failures += 1
        retryable = (rpc_code(exc) in RETRYABLE_CODES or stream_status_lost(exc)) and not (
            _too_large(exc)
        )
        if not retryable or self.failures >= self.retry.max_attempts:
            self.phase = Phase.FAILED
            raise from_rpc_error(exc, METHOD, self.target, self.failures) from exc
        self.phase = Phase.BROKEN
        wait = self.retry.backoff(self.failures)
        log.warning(
            "stream to %s broke (%s); resuming %d unanswered chunk(s) in %.2f s",
            self.target,
            rpc_code(exc) or type(exc).__name__,
            len(self.unanswered),
            wait,
        )
        return wait

    def ended(self) -> float | None:
        """The attempt ended without an error: None when the job is done (or the input's
        error is raised), else seconds to wait before resuming (the server closed early)."""
        if self.input_error is not None:
            self.phase = Phase.FAILED
            raise self.input_error
        if self.exhausted and not self.unanswered:
            self.phase = Phase.DONE
            return None
        return self.broke(
            _EndedEarly(f"stream ended with {len(self.unanswered)} chunk(s) unanswered")
        )


def _too_large(exc: BaseException) -> bool:
    """RESOURCE_EXHAUSTED for a message over a size limit (either side's): resending the same
    chunk cannot help, so the stream is not resumed."""
    details: Any = getattr(exc, "details", None)
    try:
        text = details() if callable(details) else ""
    except Exception:
        return False
    return rpc_code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (text or "")


class _EndedEarly(grpc.RpcError):
    """The server ended a stream cleanly with chunks unanswered: resumed as UNAVAILABLE."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


# -- the synchronous driver ---------------------------------------------------------------


class _Requests:
    """The request iterator gRPC consumes (in its own thread) for one attempt."""

    def __init__(
        self,
        state: ResumeState[Any],
        cond: threading.Condition,
        source: Iterator[Any],
        make_request: Callable[[Any], Any],
    ) -> None:
        self.state, self.cond, self.source, self.make_request = state, cond, source, make_request
        self.resend = state.start_attempt()
        self.stopped = False

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.resend:
            with self.cond:
                if self.stopped:
                    return
                self.state.resent()
            yield self.make_request(chunk)
        while True:
            with self.cond:
                while not self.stopped and self.state.wants_input and not self.state.has_room:
                    self.cond.wait(0.05)
                if self.stopped or not self.state.wants_input:
                    return
                try:
                    chunk = next(self.source)
                    request = self.make_request(chunk)
                except StopIteration:
                    self.state.input_ended()
                    return
                except Exception as exc:  # bad input: end the stream, re-raise in the caller
                    self.state.input_ended(exc)
                    return
                self.state.took(chunk)
            yield request


def stream_chunks(
    open_stream: Callable[[Iterator[Any]], Any],
    chunks: Iterator[C],
    make_request: Callable[[C], Any],
    *,
    max_in_flight: int,
    retry: RetryPolicy,
    target: str,
) -> Iterator[tuple[C, Any]]:
    """Yield ``(chunk, response)`` in input order; see the module docstring."""
    state: ResumeState[C] = ResumeState(retry, max_in_flight, target)
    cond = threading.Condition()
    while True:
        requests = _Requests(state, cond, chunks, make_request)
        call = open_stream(iter(requests))
        wait: float | None
        try:
            for response in call:
                with cond:
                    chunk = state.answer()
                    cond.notify_all()
                yield chunk, response
        except grpc.RpcError as exc:
            requests.stop()
            call.cancel()
            with cond:
                wait = state.broke(exc)
        else:
            with cond:
                wait = state.ended()
        finally:
            requests.stop()
            call.cancel()  # no-op when the call has finished; frees it when the caller stops early
        if wait is None:
            return
        time.sleep(wait)


# -- several streams ----------------------------------------------------------------------


class Dealer(Generic[C]):
    """Deals the chunks of one input to ``lanes`` streams: chunk i to lane ``i % lanes``.

    ``pop(lane)`` gives the lane's next chunk when one was already read for it; otherwise the
    caller reads the input (``push`` each chunk it gets, ``end`` at its end or error) until
    ``pop`` succeeds. Chunks read for other lanes wait here until those lanes ask; each lane
    holds at most ``max_in_flight`` unanswered, so this stays small. Not thread-safe (the sync
    lanes share ``lock``; asyncio runs one lane at a time).
    """

    def __init__(self, lanes: int) -> None:
        if lanes < 1:
            raise ValueError(f"parallel must be >= 1, got {lanes}")
        self.lanes = lanes
        self.queues: list[deque[C]] = [deque() for _ in range(lanes)]
        self.read = 0
        self.finished = False
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def push(self, chunk: C) -> None:
        self.queues[self.read % self.lanes].append(chunk)
        self.read += 1

    def end(self, error: BaseException | None = None) -> None:
        self.finished = True
        self.error = error

    def pop(self, lane: int) -> tuple[bool, C | None]:
        """``(True, chunk)``; ``(True, None)`` when the lane has no more (raises the input's
        error, if it had one, for the lane whose turn it was); ``(False, None)``: read more."""
        queue = self.queues[lane]
        if queue:
            return True, queue.popleft()
        if not self.finished:
            return False, None
        if self.error is not None and self.read % self.lanes == lane:
            raise self.error
        return True, None

    def lane(self, lane: int, source: Iterator[C]) -> Iterator[C]:
        """Lane ``lane``'s chunks from a synchronous ``source`` (thread-safe)."""
        while True:
            with self.lock:
                found, chunk = self.pop(lane)
                while not found:
                    try:
                        self.push(next(source))
                    except StopIteration:
                        self.end()
                    except Exception as exc:
                        self.end(exc)
                    found, chunk = self.pop(lane)
            if chunk is None:
                return
            yield chunk


def merge_lanes(lanes: list[Generator[Any, None, None]]) -> Iterator[Any]:
    """Result i from lane ``i % len(lanes)``, until a lane has no more; closes every lane
    (cancelling its stream) when done or abandoned."""
    try:
        for i in itertools.count():
            try:
                yield next(lanes[i % len(lanes)])
            except StopIteration:
                return
    finally:
        for lane in lanes:
            lane.close()
