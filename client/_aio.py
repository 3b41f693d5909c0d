"""The asyncio client: ``AsyncClient(target, ...)``, the same surface as ``Client`` (grpc.aio).
Everything but the I/O is in client/_core.py; stream state is client/_stream.py's ResumeState."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from varfx.client import _convert
from varfx.client._channel import open_aio_channel
from varfx.client._chunks import batches
from varfx.client._core import BaseClient, ScoreCall, choose_model
from varfx.client._stream import Dealer, ResumeState
from varfx.client.errors import VarfxError, from_rpc_error
from varfx.client.types import (
    ModelInfo,
    ScoreTable,
    SequencePair,
    Variant,
    VariantLike,
    VariantScore,
)
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

__all__ = ["AsyncClient"]

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
Chunks = Iterator[VariantBatch] | AsyncIterator[VariantBatch]


class AsyncClient(BaseClient):
    """asyncio client; takes the same arguments as ``Client`` and has the same methods, as
    coroutines (``stream_batches``/``iter_chunks``/``iter_scores`` are async generators, and
    take async iterables too). Create it inside a running event loop;
    ``async with AsyncClient(...) as c: ...``."""

    def _open_channel(self) -> grpc.aio.Channel:
        o = self._opts
        return open_aio_channel(self.target, o.credentials, o.options, o.transport)

    def _bind(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.VariantEffectServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    async def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        """One unary call (retried by gRPC per the channel's retryPolicy)."""
        try:
            return await getattr(self._stub, method)(request, **self._call_args(timeout))
        except grpc.RpcError as exc:
            raise self._unary_error(exc, method) from exc

    async def _lane(
        self, call: ScoreCall, chunks: Chunks, limit: int
    ) -> AsyncGenerator[ScoreTable, None]:
        """One resumable stream over ``chunks``: one table per chunk, in order."""
        state: ResumeState[VariantBatch] = ResumeState(self._opts.retry, limit, self.target)
        room = asyncio.Event()
        while True:
            stream = self._stub.StreamScoreVariants(metadata=self._opts.metadata)
            writer = asyncio.create_task(_write(stream, state, room, chunks, call))
            wait: float | None
            try:
                while (response := await stream.read()) is not _EOF:
                    batch = state.answer()
                    room.set()
                    yield call.table(response, batch)
                await writer
            except grpc.RpcError as exc:
                # includes grpc.aio's INTERNAL "Internal error from Core" for a write that
                # raced the server's end of the call (grpc/grpc#36066): ResumeState.broke
                # resumes it like the UNAVAILABLE it overwrote (errors.stream_status_lost);
                # a TLS/plaintext mismatch is not resumed (client/_transport.py, as Client's)
                wait = state.broke(await self._opts.transport.checked_async(exc))
            else:
                wait = state.ended()
            finally:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
                stream.cancel()
            if wait is None:
                return
            await asyncio.sleep(wait)

    # -- API --------------------------------------------------------------------------------

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server holds."""
        resp = await self._unary("ListModels", pb.ListModelsRequest(), timeout)
        return [_convert.model_info(m) for m in resp.models]

    async def choose_model(self, name: str = "", *, timeout: float | None = None) -> ModelInfo:
        """See ``Client.choose_model``."""
        return choose_model(await self.list_models(timeout=timeout), name)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...); not retried."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            resp = await self._health.Check(request, **self._call_args(timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, "Health.Check", self.target) from exc
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    async def wait_until_serving(self, timeout: float = 60.0, service: str = "") -> None:
        """Poll health until SERVING; VarfxError (DEADLINE_EXCEEDED) after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no answer"
        while True:
            try:
                last = await self.health(
                    service, timeout=max(0.1, min(2.0, deadline - loop.time()))
                )
                if last == "SERVING":
                    return
            except VarfxError as exc:
                last = f"{exc.code_name}: {exc.details}"
            if loop.time() >= deadline:
                raise VarfxError(
                    f"{self.target} not SERVING after {timeout:.0f} s (last: {last})",
                    code=grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            await asyncio.sleep(0.2)

    async def score_variants(
        self,
        variants: VariantBatch | Iterable[VariantLike],
        model: str = "",
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ScoreTable:
        """See ``Client.score_variants``."""
        call = self._plan(model, kwargs)
        batch, chunks = self._split(variants, batch_size)
        if batch is not None:
            resp = await self._unary("ScoreVariants", call.request(batch), timeout)
            return call.table(resp, batch)
        return ScoreTable.concat(
            [t async for t in self._lane(call, chunks, self._opts.max_in_flight)]
        )

    async def stream_batches(
        self,
        batches: Iterable[VariantBatch] | AsyncIterable[VariantBatch],
        model: str = "",
        *,
        max_in_flight: int | None = None,
        parallel: int = 1,
        **kwargs: Any,
    ) -> AsyncIterator[ScoreTable]:
        """See ``Client.stream_batches``; ``batches`` may also be an async iterable."""
        call = self._plan(model, kwargs)
        limit = max_in_flight or self._opts.max_in_flight
        source: Chunks = aiter(batches) if isinstance(batches, AsyncIterable) else iter(batches)
        if parallel == 1:
            async for table in self._lane(call, source, limit):
                yield table
            return
        dealer: Dealer[VariantBatch] = Dealer(parallel)
        lock = asyncio.Lock()
        lanes = [self._lane(call, _dealt(dealer, lock, k, source), limit) for k in range(parallel)]
        try:
            for i in itertools.count():  # result i from lane i % parallel, as Dealer dealt
                try:
                    table = await anext(lanes[i % parallel])
                except StopAsyncIteration:
                    return
                yield table
        finally:
            for lane in lanes:
                await lane.aclose()

    async def iter_chunks(
        self,
        variants: VariantBatch | Iterable[VariantLike] | AsyncIterable[VariantLike],
        model: str = "",
        *,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        parallel: int = 1,
        **kwargs: Any,
    ) -> AsyncIterator[ScoreTable]:
        """See ``Client.iter_chunks``; ``variants`` may also be an async iterable (read lazily,
        as slots free up)."""
        size = batch_size or self._opts.batch_size
        chunks: Any = (
            _abatches(variants, size)
            if isinstance(variants, AsyncIterable)
            else batches(variants, size)
        )
        async for table in self.stream_batches(
            chunks, model, max_in_flight=max_in_flight, parallel=parallel, **kwargs
        ):
            yield table

    async def iter_scores(
        self,
        variants: Iterable[VariantLike] | AsyncIterable[VariantLike],
        model: str = "",
        **kwargs: Any,
    ) -> AsyncIterator[VariantScore]:
        """One VariantScore per variant, in input order."""
        async for table in self.iter_chunks(variants, model, **kwargs):
            for row in table:
                yield row

    async def score_sequences(
        self,
        pairs: Iterable[SequencePair | tuple[Any, ...] | Mapping[str, Any]],
        model: str = "",
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ScoreTable:
        """See ``Client.score_sequences``."""
        call = self._plan(model, kwargs)
        tables = []
        for part in self._sequence_parts(pairs, batch_size):
            resp = await self._unary("ScoreSequences", call.sequence_request(part), timeout)
            tables.append(call.table(resp, part))
        return ScoreTable.concat(tables)

    async def close(self) -> None:
        if self._own_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _next(source: Chunks) -> VariantBatch:
    """The next chunk of a sync or async iterator (StopAsyncIteration at the end)."""
    if isinstance(source, AsyncIterator):
        return await anext(source)
    try:
        return next(source)
    except StopIteration:
        raise StopAsyncIteration from None


async def _write(
    stream: Any,
    state: ResumeState[VariantBatch],
    room: asyncio.Event,
    source: Chunks,
    call: ScoreCall,
) -> None:
    """Send the unanswered chunks again, then new ones, keeping at most max_in_flight
    unanswered (``room`` is set whenever a response frees one)."""
    for batch in state.start_attempt():
        state.resent()
        await stream.write(call.request(batch))
    while state.wants_input:
        while not state.has_room:
            room.clear()
            await room.wait()
        try:
            batch = await _next(source)
            request = call.request(batch)
        except StopAsyncIteration:
            state.input_ended()
            break
        except Exception as exc:  # bad input: finish the stream, re-raise in the reader
            state.input_ended(exc)
            break
        state.took(batch)
        await stream.write(request)
    await stream.done_writing()


async def _dealt(
    dealer: Dealer[VariantBatch], lock: asyncio.Lock, lane: int, source: Chunks
) -> AsyncIterator[VariantBatch]:
    """Lane ``lane``'s chunks of ``source`` (see Dealer)."""
    while True:
        async with lock:
            found, batch = dealer.pop(lane)
            while not found:
                try:
                    dealer.push(await _next(source))
                except StopAsyncIteration:
                    dealer.end()
                except Exception as exc:
                    dealer.end(exc)
                found, batch = dealer.pop(lane)
        if batch is None:
            return
        yield batch


async def _abatches(variants: AsyncIterable[VariantLike], size: int) -> AsyncIterator[VariantBatch]:
    """VariantBatches of at most ``size`` variants from an async iterable."""
    chunk: list[Variant] = []
    async for value in variants:
        chunk.append(Variant.coerce(value))
        if len(chunk) == size:
            yield VariantBatch.from_variants(chunk)
            chunk = []
    if chunk:
        yield VariantBatch.from_variants(chunk)
