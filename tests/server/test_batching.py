"""DynamicBatcher on its own event loop, with a real ONNX Runtime model behind it.

The model is a real tiny CNN (tests/onnx_models.py) run by ModelRunner; some tests wrap its
predict to record what reaches the model, to hold a run (a gate) or to fail on chosen input.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.onnx_models import write_model
from varfx.server.batching import DynamicBatcher
from varfx.server.errors import InferenceError, QueueFullError
from varfx.server.metrics import Metrics
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner

L = 16


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> ModelRunner:
    repo = tmp_path_factory.mktemp("batching")
    write_model(repo, name="m", length=L, n_features=3, seed=4)
    (entry,) = scan_repository(Path(repo))
    return ModelRunner(entry, "cpu", intra_op_threads=1)


def tokens(n: int, seed: int, *, n_frac: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 4, (n, L), dtype=np.uint8)
    out[rng.random((n, L)) < n_frac] = 4
    return out


class Recorder:
    """Wraps a predict function: records each batch, can hold runs at a gate or fail on N."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, gated: bool = False):
        self._predict = predict
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.started = threading.Event()
        self.fail_on_n = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        self.started.set()
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        if self.fail_on_n and (batch == 4).any():
            raise ValueError("N token in the batch")
        return self._predict(batch)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def rows_seen(self) -> set[bytes]:
        return {bytes(r) for b in self.batches for r in b}


def run(
    predict: Callable[[np.ndarray], np.ndarray],
    body: Callable[[DynamicBatcher], Coroutine[Any, Any, Any]],
    **kw: Any,
) -> Any:
    """Start a batcher on a fresh event loop, run ``body(batcher)``, stop the batcher."""
    kw.setdefault("max_batch", 16)
    kw.setdefault("max_delay_s", 0.005)
    kw.setdefault("max_queue", 1024)

    async def main() -> Any:
        batcher = DynamicBatcher(predict, name="m", **kw)
        await batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10), "event never set"


def test_concurrent_callers_get_their_rows_in_order(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict)
    inputs = [tokens(n, seed=n) for n in range(1, 41, 3)]

    async def body(b: DynamicBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(b.submit(x) for x in inputs)))

    results = run(rec, body, max_batch=16)
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, runner.predict(x), atol=1e-6)
    assert max(rec.sizes) <= 16
    assert sum(rec.sizes) == len({bytes(r) for x in inputs for r in x})
    assert rec.sizes[:-1] == [16] * (len(rec.sizes) - 1)  # callers were batched together


def test_big_submission_is_split_across_runs(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict)
    x = tokens(100, seed=2)
    got = run(rec, lambda b: b.submit(x), max_batch=16)
    np.testing.assert_allclose(got, runner.predict(x), atol=1e-6)
    assert rec.sizes == [16] * 6 + [4]


def test_full_queue_raises_at_once_and_others_finish(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict, gated=True)
    metrics = Metrics(CollectorRegistry())

    async def body(b: DynamicBatcher) -> None:
        first = asyncio.ensure_future(b.submit(tokens(4, 10)))  # taken into a run, held
        await wait_for(rec.started)
        second = asyncio.ensure_future(b.submit(tokens(8, 11)))  # fills the queue
        await asyncio.sleep(0)
        assert b.queued == 8
        assert metrics.registry.get_sample_value("varfx_queue_depth", {"model": "m"}) == 8
        with pytest.raises(
            QueueFullError, match=r"queue full \(8 of 8 windows waiting, request needs 1"
        ):
            await b.submit(tokens(1, 12))
        rec.gate.set()
        assert (await first).shape == (4, 3)
        assert (await second).shape == (8, 3)
        assert metrics.registry.get_sample_value("varfx_queue_depth", {"model": "m"}) == 0

    run(rec, body, max_batch=4, max_queue=8, metrics=metrics)
    assert metrics.registry.get_sample_value("varfx_queue_capacity", {"model": "m"}) == 8


def test_submission_larger_than_the_queue_is_refused_with_a_message(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict, gated=True)
    big = tokens(20, 13)

    async def body(b: DynamicBatcher) -> None:
        held = asyncio.ensure_future(b.submit(tokens(4, 14)))
        await wait_for(rec.started)
        queued = asyncio.ensure_future(b.submit(tokens(2, 15)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="larger than the queue"):
            await b.submit(big)  # never admitted ahead of everyone
        rec.gate.set()
        await asyncio.gather(held, queued)
        with pytest.raises(QueueFullError, match=r"20 windows is larger than the queue \(8"):
            await b.submit(big)  # nor alone: callers split requests that big
        assert b.queued == 0

    run(rec, body, max_batch=4, max_queue=8)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancelled_work_leaves_the_queue_and_is_never_computed(
    runner: ModelRunner, how: str
) -> None:
    rec = Recorder(runner.predict, gated=True)
    metrics = Metrics(CollectorRegistry())
    held_x, gone_x = tokens(4, 20), tokens(8, 21)

    async def body(b: DynamicBatcher) -> None:
        held = asyncio.ensure_future(b.submit(held_x))
        await wait_for(rec.started)
        if how == "cancel":
            gone = asyncio.ensure_future(b.submit(gone_x))
            await asyncio.sleep(0.01)
            assert b.queued == 8
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
        else:  # a deadline, as grpc.aio applies it: the handler task is cancelled
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(b.submit(gone_x), 0.05)
        assert b.queued == 0
        assert metrics.registry.get_sample_value("varfx_queue_depth", {"model": "m"}) == 0
        rec.gate.set()
        np.testing.assert_allclose(await held, runner.predict(held_x), atol=1e-6)
        await b.submit(tokens(1, 22))  # the batcher goes on

    run(rec, body, max_batch=4, max_queue=64, metrics=metrics)
    assert not rec.rows_seen() & {bytes(r) for r in gone_x}
    assert metrics.registry.get_sample_value("varfx_sequences_total", {"model": "m"}) == 5


def test_a_failing_caller_does_not_fail_the_others_in_its_run(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict)
    rec.fail_on_n = True
    good1, good2 = tokens(3, 30), tokens(5, 31)
    bad = tokens(2, 32, n_frac=0.5)

    async def body(b: DynamicBatcher) -> list[Any]:
        return list(
            await asyncio.gather(
                b.submit(good1), b.submit(bad), b.submit(good2), return_exceptions=True
            )
        )

    r1, rbad, r2 = run(rec, body, max_delay_s=0.2)
    assert rec.sizes[0] == 10  # all three were in one run, which failed
    assert isinstance(rbad, InferenceError)
    assert "'m'" in str(rbad)
    assert "N token" in str(rbad)
    np.testing.assert_allclose(r1, runner.predict(good1), atol=1e-6)
    np.testing.assert_allclose(r2, runner.predict(good2), atol=1e-6)


def test_a_failing_run_fails_its_caller_and_the_batcher_goes_on(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict)
    rec.fail_on_n = True
    bad = np.concatenate([tokens(10, 33), tokens(30, 34, n_frac=0.5)])

    async def body(b: DynamicBatcher) -> np.ndarray:
        with pytest.raises(InferenceError):
            await b.submit(bad)  # its first run succeeds, a later one fails
        assert b.queued == 0  # what was left of it is gone from the queue
        return await b.submit(tokens(6, 35))

    got = run(rec, body, max_batch=8)
    np.testing.assert_allclose(got, runner.predict(tokens(6, 35)), atol=1e-6)


def test_next_batch_forms_while_one_runs(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict, gated=True)

    async def body(b: DynamicBatcher) -> None:
        first = asyncio.ensure_future(b.submit(tokens(2, 40)))
        await wait_for(rec.started)
        rest = [asyncio.ensure_future(b.submit(tokens(4, 41 + i))) for i in range(5)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(first, *rest)

    run(rec, body, max_batch=8, max_delay_s=0.01)
    assert rec.sizes == [2, 8, 8, 4]  # full runs back to back once the worker is free


def test_inference_threads_run_batches_concurrently(runner: ModelRunner) -> None:
    both = threading.Barrier(2, timeout=10)

    def predict(batch: np.ndarray) -> np.ndarray:
        both.wait()  # breaks (and fails the test) unless two runs are on workers at once
        return runner.predict(batch)

    async def body(b: DynamicBatcher) -> list[np.ndarray]:
        return list(await asyncio.gather(b.submit(tokens(4, 50)), b.submit(tokens(4, 51))))

    got = run(predict, body, max_batch=4, workers=2)
    np.testing.assert_allclose(got[1], runner.predict(tokens(4, 51)), atol=1e-6)


def test_stop_drains_queued_work_then_refuses(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict)

    async def main() -> None:
        b = DynamicBatcher(rec, name="m", max_batch=4, max_delay_s=0.05, max_queue=100)
        await b.start()
        pending = [asyncio.ensure_future(b.submit(tokens(3, 60 + i))) for i in range(5)]
        await asyncio.sleep(0)
        await b.stop()
        done = await asyncio.wait_for(asyncio.gather(*pending), 5)
        assert [d.shape for d in done] == [(3, 3)] * 5
        with pytest.raises(QueueFullError, match="shutting down"):
            await b.submit(tokens(1, 70))

    asyncio.run(main())
    assert sum(rec.sizes) == 15


def test_waiting_submit_gets_room_instead_of_an_error(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict, gated=True)
    later = tokens(6, 81)

    async def body(b: DynamicBatcher) -> None:
        held = asyncio.ensure_future(b.submit(tokens(4, 80)))
        await wait_for(rec.started)
        queued = asyncio.ensure_future(b.submit(tokens(6, 82)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await b.submit(later)  # 6 + 6 > 8: a unary call is refused at once
        waiting = asyncio.ensure_future(b.submit(later, wait=True))  # a stream waits
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert b.queued == 6
        rec.gate.set()
        await asyncio.gather(held, queued)
        np.testing.assert_allclose(await waiting, runner.predict(later), atol=1e-6)

    run(rec, body, max_batch=4, max_queue=8)


def test_stop_releases_submits_waiting_for_room(runner: ModelRunner) -> None:
    rec = Recorder(runner.predict, gated=True)

    async def main() -> None:
        b = DynamicBatcher(rec, name="m", max_batch=4, max_delay_s=0.0, max_queue=4)
        await b.start()
        held = asyncio.ensure_future(b.submit(tokens(4, 90)))
        await wait_for(rec.started)
        queued = asyncio.ensure_future(b.submit(tokens(4, 91)))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(b.submit(tokens(2, 92), wait=True))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.01)
        rec.gate.set()
        await stopping
        done = await asyncio.wait_for(asyncio.gather(held, queued), 5)
        assert [d.shape for d in done] == [(4, 3), (4, 3)]  # drained
        with pytest.raises(QueueFullError, match="shutting down"):
            await waiting

    asyncio.run(main())


def test_malformed_submissions_are_refused_and_the_batcher_goes_on(runner: ModelRunner) -> None:
    async def body(b: DynamicBatcher) -> np.ndarray:
        first = await b.submit(tokens(2, 100))
        with pytest.raises(ValueError, match="takes windows of 16, got 8"):
            await b.submit(tokens(2, 101)[:, :8])
        with pytest.raises(ValueError, match="uint8"):
            await b.submit(tokens(2, 102).astype(np.int64))
        assert b.queued == 0
        return first

    got = run(runner.predict, body)
    np.testing.assert_allclose(got, runner.predict(tokens(2, 100)), atol=1e-6)


# -- window descriptions (device windows, server/device_windows.py) ----------------------------


@pytest.fixture(scope="module")
def dw_runner(tmp_path_factory: pytest.TempPathFactory, genome_fa: Path) -> ModelRunner:
    from varfx.server.genome import Genome

    repo = tmp_path_factory.mktemp("batching-dw")
    write_model(repo, name="m", length=L, n_features=3, seed=4)
    (entry,) = scan_repository(Path(repo))
    runner = ModelRunner(entry, "cpu", intra_op_threads=1)
    runner.attach_device_windows(Genome(genome_fa), ["chr1"], 1 << 20)
    return runner


def _rows(runner: ModelRunner, n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    dw = runner.device_windows
    pos = rng.integers(1, 2001, n)
    return dw.snv_rows("chr1", pos, rng.integers(0, 4, n).astype(np.uint8), rc=bool(seed % 2))[:n]


def test_host_windows_and_descriptions_share_runs(dw_runner: ModelRunner) -> None:
    calls: list[tuple[int, int]] = []

    def mixed(host: np.ndarray | None, rows: Any) -> np.ndarray:
        calls.append((0 if host is None else len(host), len(rows)))
        return dw_runner.predict_mixed(host, rows)

    inputs = [tokens(3, 40), _rows(dw_runner, 5, 41), tokens(4, 42), _rows(dw_runner, 6, 43)]

    async def body(b: DynamicBatcher) -> list[np.ndarray]:
        b.accept_rows(mixed)
        return list(await asyncio.gather(*(b.submit(x) for x in inputs)))

    results = run(dw_runner.predict, body, max_delay_s=0.2, max_batch=64)
    assert calls == [(7, 11)]  # one run: both callers' host windows, then both descriptions
    for x, got in zip(inputs, results, strict=True):
        windows = x if isinstance(x, np.ndarray) else dw_runner.device_windows.windows(x)
        np.testing.assert_allclose(got, dw_runner.predict(windows), atol=1e-6)


def test_bad_descriptions_fail_only_their_caller(dw_runner: ModelRunner) -> None:
    from varfx.server.device_windows import WindowRows

    good_t, good_r = tokens(3, 50), _rows(dw_runner, 4, 51)
    bad = WindowRows(np.array([1 << 40]), np.array([-1]), np.zeros(1, np.uint8), np.zeros(1, bool))

    async def body(b: DynamicBatcher) -> list[Any]:
        b.accept_rows(dw_runner.predict_mixed)
        return list(
            await asyncio.gather(
                b.submit(good_t), b.submit(bad), b.submit(good_r), return_exceptions=True
            )
        )

    r1, rbad, r2 = run(dw_runner.predict, body, max_delay_s=0.2)
    assert isinstance(rbad, InferenceError)
    np.testing.assert_allclose(r1, dw_runner.predict(good_t), atol=1e-6)
    want = dw_runner.predict(dw_runner.device_windows.windows(good_r))
    np.testing.assert_allclose(r2, want, atol=1e-6)


def test_descriptions_need_accept_rows_and_reservations_split(dw_runner: ModelRunner) -> None:
    rows = _rows(dw_runner, 3, 60)

    async def body(b: DynamicBatcher) -> tuple[int, int]:
        with pytest.raises(ValueError, match="no window descriptions"):
            await b.submit(rows)
        room = await b.reserve(10)
        part = room.split(4)
        with pytest.raises(ValueError, match="5 windows split from a reservation of 4"):
            part.split(5)
        held = b._reserved
        room.release()
        freed = held - b._reserved
        await b.submit(tokens(4, 61), reservation=part)
        return room.windows + part.windows, freed

    assert run(dw_runner.predict, body) == (0, 6)
