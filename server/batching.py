"""The dynamic batcher: one per model, shared by every caller.

Callers ``await submit(tokens)`` with windows uint8 [n, L]; the batcher gathers windows from all
concurrent callers into ONNX Runtime runs of at most ``max_batch`` windows, waiting at most
``max_delay_s`` after the oldest waiting window for a run to fill, runs them in a thread pool off
the event loop, and hands each caller its rows back in order. While one run is on the worker(s)
the next one forms, so a busy server runs full batches back to back.

- The queue is bounded in windows, and admission comes first: a caller ``reserve``s room for
  the windows it will need before it builds them, so memory is bounded by ``max_queue`` windows
  (plus the runs in flight) whatever the traffic. A reservation that does not fit raises
  QueueFullError at once (unary calls), or, with ``wait=True`` (streams, which have flow
  control), waits for room, first come first served.
- Fair share: waiting (stream) reservations may fill the queue only up to ``stream_share`` of
  it, so unary callers always find the rest; unary callers may use all of it.
- A submission larger than the whole queue is refused with a message (callers split big
  requests: see ``server/service.py``), never admitted ahead of everyone.
- A cancelled submit (deadline expired, client gone) takes its not-yet-run windows out of the queue.
- An exception in a run is isolated: the run is retried caller by caller, so only the callers
  whose own windows fail get an InferenceError; the others in that run still get their results.
- Window descriptions: with ``accept_rows(predict_mixed)`` (a model with device windows,
  ``server/device_windows.py``), callers may also submit ``WindowRows`` (18 bytes a window
  instead of L). A run takes host windows and descriptions from any callers alike, first come
  first served; ``predict_mixed(tokens or None, rows)`` builds the described windows where the
  model runs, after the run's host windows, and predicts them all in one run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from varfx.server.device_windows import WindowRows
from varfx.server.errors import InferenceError, QueueFullError
from varfx.server.metrics import Metrics

__all__ = ["BatchResult", "DynamicBatcher", "Reservation"]

log = logging.getLogger(__name__)


class Reservation:
    """Room for up to ``windows`` windows in one batcher's queue (see ``DynamicBatcher.reserve``).

    Use as an async context manager, or call ``release()``: room not used by ``submit`` goes
    back to the queue either way.
    """

    def __init__(self, batcher: DynamicBatcher, windows: int) -> None:
        self._batcher = batcher
        self.windows = windows

    def split(self, windows: int) -> Reservation:
        """Move ``windows`` of this room into a new reservation (one submit each, e.g. a
        request's host windows and its described ones)."""
        if windows > self.windows:
            raise ValueError(f"{windows} windows split from a reservation of {self.windows}")
        self.windows -= windows
        return Reservation(self._batcher, windows)

    def release(self) -> None:
        if self.windows:
            n, self.windows = self.windows, 0
            self._batcher._unreserve(n)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


Items: TypeAlias = np.ndarray | WindowRows  # uint8 [n, L] host windows, or n window descriptions
PredictMixed: TypeAlias = Callable[[np.ndarray | None, WindowRows], np.ndarray]


@dataclass
class _Work:
    tokens: Items  # uint8 [n, L] or WindowRows [n]
    future: asyncio.Future[np.ndarray]
    enqueued: float
    taken: int = 0  # rows handed to runs so far
    done: int = 0  # rows with results
    out: np.ndarray | None = None  # float32 [n, F], allocated at the first result
    waited: bool = False  # queue wait observed

    @property
    def remaining(self) -> int:
        return len(self.tokens) - self.taken


@dataclass(frozen=True)
class BatchResult:
    """One batch: probabilities of all its windows (duplicates expanded back).

    Attributes:
        probs: float32 [rows, F]; rows of failed segments are undefined. None if all failed.
        runs: (unique windows, seconds) of each successful ONNX Runtime run.
        errors: segment index -> the exception its windows raised (isolated failures).
    """

    probs: np.ndarray | None
    runs: list[tuple[int, float]]
    errors: dict[int, BaseException]


@dataclass
class _Segment:
    work: _Work
    start: int  # first row in the work
    count: int


class DynamicBatcher:
    """Batches windows across callers for one model; see the module docstring."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        name: str,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        workers: int = 1,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        stream_share: float = 0.75,
    ) -> None:
        self.name = name
        self._predict = predict
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._workers = workers
        self._metrics = metrics
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(workers, thread_name_prefix=f"ort-{name}")
        self._queue: collections.deque[_Work] = collections.deque()
        self._queued = 0  # windows waiting (not yet handed to a run)
        self._reserved = 0  # windows admitted but not yet submitted
        self._stream_room = max(1, int(max_queue * stream_share))
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[BatchResult]] = set()
        self._closing = False
        self._room_waiters: list[asyncio.Future[None]] = []  # submits waiting for queue room
        self._width: int | None = None  # window length L, fixed by the first submit
        self._predict_mixed: PredictMixed | None = None
        if metrics is not None:
            metrics.queue_capacity.labels(model=name).set(max_queue)
            metrics.queue_depth.labels(model=name).set(0)

    def accept_rows(self, predict_mixed: PredictMixed) -> None:
        """Take ``WindowRows`` submissions from now on: ``predict_mixed(tokens, rows)`` returns
        float32 [len(tokens) + len(rows), F], the host windows' rows first (module doc)."""
        self._predict_mixed = predict_mixed

    @property
    def accepts_rows(self) -> bool:
        return self._predict_mixed is not None

    @property
    def stream_room(self) -> int:
        """Windows waiting (stream) callers may fill: ``stream_share`` of the queue."""
        return self._stream_room

    @property
    def queued(self) -> int:
        """Windows waiting for a run."""
        return self._queued

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(model=self.name).set(self._queued)
        if self._room_waiters:  # the depth changed: let waiting submits check again
            for waiter in self._room_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._room_waiters.clear()

    def _fits(self, n: int, waiting: bool) -> bool:
        limit = self._stream_room if waiting else self.max_queue
        return self._queued + self._reserved + n <= limit or (
            waiting and n > limit and not self._queued and not self._reserved
        )

    def _unreserve(self, n: int) -> None:
        self._reserved -= n
        self._set_depth()

    async def reserve(self, windows: int, *, wait: bool = False) -> Reservation:
        """Admit a caller that will submit at most ``windows`` windows.

        ``wait``: when there is no room, wait for it (until cancelled; only up to
        ``stream_share`` of the queue) instead of raising.

        Raises:
            QueueFullError: no room (and not ``wait``), the request is larger than the queue,
                or the batcher is shutting down.
        """
        if windows > self.max_queue:
            raise QueueFullError(
                f"model {self.name!r}: a request of {windows} windows is larger than the "
                f"queue ({self.max_queue} windows); send fewer variants per request"
            )
        loop = asyncio.get_running_loop()
        while wait and not self._fits(windows, True) and not self._closing:
            room: asyncio.Future[None] = loop.create_future()
            self._room_waiters.append(room)
            await room
        if self._closing or self._wakeup is None:
            raise QueueFullError(f"model {self.name!r} is shutting down")
        if not self._fits(windows, wait):
            raise QueueFullError(
                f"model {self.name!r}: queue full ({self._queued + self._reserved} of "
                f"{self.max_queue} windows waiting, request needs {windows}); retry later"
            )
        self._reserved += windows
        return Reservation(self, windows)

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self._workers)
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued and running, then stop."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        self._set_depth()  # submits waiting for room see that the batcher is closing
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=True)

    async def submit(
        self,
        tokens: Items,
        *,
        wait: bool = False,
        reservation: Reservation | None = None,
    ) -> np.ndarray:
        """Predict windows uint8 [n, L] (or n ``WindowRows``, after ``accept_rows``); returns
        float32 [n, F] in the same order.

        ``reservation``: room admitted earlier (``reserve``) for at least n windows; without
        one, room is reserved here (``wait``: wait for it instead of raising).

        Raises:
            QueueFullError: no room for n more windows (and not ``wait``), n is larger than the
                queue, or the batcher is shutting down.
            InferenceError: ONNX Runtime failed on a run holding these windows.
        """
        if isinstance(tokens, WindowRows):
            if self._predict_mixed is None:
                raise ValueError(f"model {self.name!r} takes no window descriptions")
        elif tokens.ndim != 2 or tokens.dtype != np.uint8:
            raise ValueError(f"tokens must be uint8 [n, L], got {tokens.dtype} {tokens.shape}")
        n = len(tokens)
        loop = asyncio.get_running_loop()
        if n == 0:
            if reservation is not None:
                reservation.release()
            return np.zeros((0, 0), dtype=np.float32)
        if isinstance(tokens, WindowRows):
            pass
        elif self._width is None:
            self._width = tokens.shape[1]
        elif tokens.shape[1] != self._width:  # would break the concatenation of a run
            raise ValueError(
                f"model {self.name!r} takes windows of {self._width}, got {tokens.shape[1]}"
            )
        if reservation is None:
            reservation = await self.reserve(n, wait=wait)
        elif reservation.windows < n:
            raise ValueError(f"{n} windows submitted on a reservation of {reservation.windows}")
        if self._closing or self._wakeup is None:
            reservation.release()
            raise QueueFullError(f"model {self.name!r} is shutting down")
        self._reserved -= reservation.windows  # the room becomes queued windows (the rest is free)
        reservation.windows = 0
        work = _Work(tokens, loop.create_future(), time.perf_counter())
        self._queue.append(work)
        self._queued += n
        self._set_depth()
        self._wakeup.set()
        try:
            return await asyncio.shield(work.future)
        except asyncio.CancelledError:
            self._cancel(work)
            raise

    async def run_job(
        self,
        fn: Callable[[], np.ndarray],
        *,
        rows: int,
        reservation: Reservation | None = None,
    ) -> np.ndarray:
        """Run ``fn`` (work that is not a plain batch of rows, such as local recomputation of
        ``rows`` windows) on this batcher's workers, holding one worker slot, so that it takes
        its turn with the batched runs; ``reservation`` is released when it ends.

        Raises:
            QueueFullError: the batcher is shutting down.
            InferenceError: ``fn`` raised.
        """
        try:
            if self._closing or self._slots is None:
                raise QueueFullError(f"model {self.name!r} is shutting down")
            slots = self._slots
            await slots.acquire()
            t0 = time.perf_counter()
            fut = asyncio.get_running_loop().run_in_executor(self._executor, fn)
            fut.add_done_callback(lambda _: slots.release())  # when the worker is done with it
            try:
                out = await asyncio.shield(fut)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("model %s: inference failed: %s", self.name, exc, exc_info=exc)
                raise InferenceError(f"model {self.name!r}: inference failed: {exc}") from exc
        finally:
            if reservation is not None:
                reservation.release()
        if self._metrics is not None:
            m = self._metrics
            m.batch_size.labels(model=self.name).observe(rows)
            m.sequences.labels(model=self.name).inc(rows)
            m.inference_duration.labels(model=self.name).observe(time.perf_counter() - t0)
        return out

    def _cancel(self, work: _Work) -> None:
        """Take a cancelled caller's untaken windows out of the queue."""
        if work.remaining and not work.future.done():
            self._queued -= work.remaining
            work.taken = len(work.tokens)  # nothing more of it will run
            self._set_depth()
        if not work.future.done():
            work.future.cancel()

    def _take(self) -> list[_Segment]:
        segments: list[_Segment] = []
        room = self.max_batch
        now = time.perf_counter()
        while self._queue and room:
            work = self._queue[0]
            if work.future.done() or not work.remaining:
                self._queue.popleft()
                continue
            count = min(room, work.remaining)
            segments.append(_Segment(work, work.taken, count))
            if not work.waited and self._metrics is not None:
                self._metrics.queue_wait.labels(model=self.name).observe(now - work.enqueued)
            work.waited = True
            work.taken += count
            self._queued -= count
            room -= count
            if not work.remaining:
                self._queue.popleft()
        self._set_depth()
        return segments

    async def _loop(self) -> None:
        wakeup, slots = self._wakeup, self._slots
        if wakeup is None or slots is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued:
                if self._closing:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            await slots.acquire()
            # Let the run fill up: until max_batch windows wait or the oldest waited max_delay.
            oldest = next((w.enqueued for w in self._queue if w.remaining), time.perf_counter())
            while self._queued < self.max_batch and not self._closing:
                left = oldest + self.max_delay_s - time.perf_counter()
                if left <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), left)
                except TimeoutError:
                    break
            segments = self._take()
            if not segments:
                slots.release()
                continue
            # host windows first, then descriptions: the order of predict_mixed's rows (each
            # segment is delivered to its own caller, so their order in a run is free)
            segments.sort(key=lambda s: isinstance(s.work.tokens, WindowRows))
            views = [s.work.tokens[s.start : s.start + s.count] for s in segments]
            fut = loop.run_in_executor(self._executor, self._run, views)
            self._running.add(fut)
            fut.add_done_callback(functools.partial(self._deliver, segments=segments))

    def _compute(self, views: list[Items]) -> tuple[np.ndarray, int, float]:
        """In a worker thread: run the model on the host windows then the descriptions of
        ``views`` -> (probs, rows, seconds). (Windows shared within a request, such as the ref
        window of a multi-allelic site, are removed by the scoring plan before they get here.)"""
        t0 = time.perf_counter()
        host = [v for v in views if not isinstance(v, WindowRows)]
        described = [v for v in views if isinstance(v, WindowRows)]
        tokens = None
        if host:
            tokens = host[0] if len(host) == 1 else np.concatenate(host, axis=0)
        if described and self._predict_mixed is not None:
            rows = WindowRows.concat(described)
            probs = self._predict_mixed(tokens, rows)
        else:
            assert tokens is not None  # descriptions only reach a batcher that accepts them
            probs = self._predict(tokens)
        if self._metrics is not None:
            sent = self._metrics.runner_input_bytes.labels
            if tokens is not None:
                sent(model=self.name, kind="tokens").inc(tokens.nbytes)
            if described:
                sent(model=self.name, kind="rows").inc(sum(r.nbytes for r in described))
        n = sum(len(v) for v in views)
        return np.asarray(probs, dtype=np.float32), n, time.perf_counter() - t0

    def _run(self, views: list[Items]) -> BatchResult:
        """In a worker thread: run the batch; if it fails, retry segment by segment so that
        one caller's bad windows fail only that caller."""
        sizes = [len(v) for v in views]
        total = sum(sizes)
        try:
            probs, unique, seconds = self._compute(views)
            return BatchResult(probs, [(unique, seconds)], {})
        except Exception as exc:
            if len(sizes) == 1:
                raise
            log.warning(
                "model %s: run of %d windows from %d callers failed (%s); retrying per caller",
                self.name,
                total,
                len(sizes),
                exc,
            )
        out: np.ndarray | None = None
        runs: list[tuple[int, float]] = []
        errors: dict[int, BaseException] = {}
        start = 0
        for i, count in enumerate(sizes):
            try:
                part, unique, seconds = self._compute([views[i]])
            except Exception as exc:
                errors[i] = exc
            else:
                if out is None:
                    out = np.empty((total, part.shape[1]), dtype=np.float32)
                out[start : start + count] = part
                runs.append((unique, seconds))
            start += count
        return BatchResult(out, runs, errors)

    def _fail(self, work: _Work, exc: BaseException) -> None:
        if not work.future.done():
            log.error("model %s: inference failed: %s", self.name, exc, exc_info=exc)
            self._cancel_queued(work)
            work.future.set_exception(
                InferenceError(f"model {self.name!r}: inference failed: {exc}")
            )

    def _deliver(self, fut: asyncio.Future[BatchResult], segments: list[_Segment]) -> None:
        self._running.discard(fut)
        if self._slots is not None:
            self._slots.release()
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            for s in segments:
                self._fail(s.work, exc)
            return
        result = fut.result()
        if self._metrics is not None:
            m = self._metrics
            for unique, seconds in result.runs:
                m.batch_size.labels(model=self.name).observe(unique)
                m.sequences.labels(model=self.name).inc(unique)
                m.inference_duration.labels(model=self.name).observe(seconds)
        offset = 0
        for i, s in enumerate(segments):
            work = s.work
            start, offset = offset, offset + s.count
            if i in result.errors:
                self._fail(work, result.errors[i])
                continue
            if work.future.done() or result.probs is None:
                continue
            rows = result.probs[start:offset]
            if work.out is None:
                work.out = np.empty((len(work.tokens), rows.shape[1]), dtype=np.float32)
            work.out[s.start : s.start + s.count] = rows
            work.done += s.count
            if work.done == len(work.tokens):
                work.future.set_result(work.out)

    def _cancel_queued(self, work: _Work) -> None:
        if work.remaining:
            self._queued -= work.remaining
            work.taken = len(work.tokens)
            self._set_depth()
