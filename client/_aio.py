"""The asyncio client: ``AsyncClient(target, ...)``, same surface as ``Client`` (grpc.aio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from varfx.client import _convert
from varfx.client._channel import open_aio_channel
from varfx.client._client import ClientOptions, PathOrBytes
from varfx.client._retry import RetryPolicy
from varfx.client._stream import chunked
from varfx.client.errors import (
    RETRYABLE_CODES,
    VarfxError,
    from_rpc_error,
    rpc_code,
    stream_status_lost,
)
from varfx.client.types import (
    ModelInfo,
    RefPolicy,
    ScoreTable,
    SequencePair,
    Variant,
    VariantLike,
    VariantScore,
)
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

__all__ = ["AsyncClient"]

log = logging.getLogger(__name__)
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
T = TypeVar("T")


class AsyncClient:
    """asyncio client; takes the same arguments as ``Client`` and has the same methods, as
    coroutines (``iter_chunks``/``iter_scores`` are async generators). Create it inside a
    running event loop; ``async with AsyncClient(...) as c: ...``."""

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        root_certificates: PathOrBytes | None = None,
        client_certificate: PathOrBytes | None = None,
        client_key: PathOrBytes | None = None,
        server_name_override: str | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        max_in_flight: int = 4,
        batch_size: int = 1000,
        load_balancing: str = "auto",
        keepalive_s: float = 300.0,
        channel: grpc.aio.Channel | None = None,
        insecure: bool = False,
    ) -> None:
        self._opts = ClientOptions(
            target,
            tls=tls,
            root_certificates=root_certificates,
            client_certificate=client_certificate,
            client_key=client_key,
            server_name_override=server_name_override,
            token=token,
            metadata=metadata,
            timeout=timeout,
            retry=retry,
            max_in_flight=max_in_flight,
            batch_size=batch_size,
            load_balancing=load_balancing,
            keepalive_s=keepalive_s,
            insecure=insecure,
        )
        self.target = target
        self._own_channel = channel is None
        if channel is None:
            o = self._opts
            channel = open_aio_channel(target, o.credentials, o.options, o.transport)
        self._channel = channel
        self._stub = pb_grpc.VariantEffectServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    async def _unary(
        self, method: str, fn: Callable[..., Awaitable[T]], request: Any, timeout: float | None
    ) -> T:
        policy = self._opts.retry
        deadline = self._opts.timeout if timeout is None else timeout
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return await fn(request, timeout=deadline, metadata=self._opts.metadata)
            except grpc.RpcError as exc:
                if rpc_code(exc) in RETRYABLE_CODES and attempt < policy.max_attempts:
                    await asyncio.sleep(policy.backoff(attempt))
                    continue
                raise from_rpc_error(exc, method, self.target, attempt) from exc
        raise AssertionError("unreachable")

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server holds."""
        resp = await self._unary(
            "ListModels", self._stub.ListModels, pb.ListModelsRequest(), timeout
        )
        return [_convert.model_info(m) for m in resp.models]

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...); not retried."""
        try:
            resp = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self._opts.timeout if timeout is None else timeout,
                metadata=self._opts.metadata,
            )
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
        variants: Iterable[VariantLike],
        model: str = "",
        *,
        scores: Iterable[str] | str | None = None,
        reverse_complement: bool = False,
        ref_policy: RefPolicy | str | int = "strict",
        features: Sequence[str] | None = None,
        model_version: int = 0,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> ScoreTable:
        """See ``Client.score_variants``."""
        size = batch_size or self._opts.batch_size
        items = [Variant.coerce(v) for v in variants]
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, ref_policy, features)
        if len(items) <= size:
            req = _convert.variant_request(items, model, options, model_version)
            resp = await self._unary("ScoreVariants", self._stub.ScoreVariants, req, timeout)
            return _convert.table_from_response(resp, items, kinds)
        tables = [
            t
            async for t in self.iter_chunks(
                items,
                model,
                scores=kinds,
                reverse_complement=reverse_complement,
                ref_policy=ref_policy,
                features=features,
                model_version=model_version,
                batch_size=size,
            )
        ]
        return ScoreTable.concat(tables)

    async def iter_chunks(
        self,
        variants: Iterable[VariantLike] | AsyncIterable[VariantLike],
        model: str = "",
        *,
        scores: Iterable[str] | str | None = None,
        reverse_complement: bool = False,
        ref_policy: RefPolicy | str | int = "strict",
        features: Sequence[str] | None = None,
        model_version: int = 0,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
    ) -> AsyncIterator[ScoreTable]:
        """See ``Client.iter_chunks``: bounded in-flight chunks, in order, resumable. ``variants``
        may also be an async iterable (read lazily, as slots free up)."""
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, ref_policy, features)
        size = batch_size or self._opts.batch_size
        source: Any = (
            _achunked(variants, size)
            if isinstance(variants, AsyncIterable)
            else chunked(variants, size)
        )
        limit = max_in_flight or self._opts.max_in_flight
        policy = self._opts.retry
        pending: deque[list[Variant]] = deque()
        state: dict[str, Any] = {"exhausted": False, "error": None}
        failures = 0
        while True:
            call = self._stub.StreamScoreVariants(metadata=self._opts.metadata)
            slots = asyncio.Semaphore(limit)
            writer = asyncio.create_task(
                _write(
                    call,
                    list(pending),
                    source,
                    pending,
                    slots,
                    state,
                    model,
                    options,
                    model_version,
                )
            )
            try:
                while True:
                    resp = await call.read()
                    if resp is _EOF:
                        break
                    chunk = pending.popleft()
                    slots.release()
                    failures = 0
                    yield _convert.table_from_response(resp, chunk, kinds)
                await writer
            except grpc.RpcError as exc:
                failures += 1
                retryable = rpc_code(exc) in RETRYABLE_CODES or stream_status_lost(exc)
                if retryable and failures < policy.max_attempts:
                    log.warning("stream to %s broke (%s); resuming", self.target, rpc_code(exc))
                    await asyncio.sleep(policy.backoff(failures))
                    continue
                raise from_rpc_error(exc, "StreamScoreVariants", self.target, failures) from exc
            finally:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
                call.cancel()
            if state["error"] is not None:
                raise state["error"]
            if not pending and state["exhausted"]:
                return
            failures += 1
            if failures >= policy.max_attempts:
                raise from_rpc_error(
                    RuntimeError(f"stream ended with {len(pending)} chunk(s) unanswered"),
                    "StreamScoreVariants",
                    self.target,
                    failures,
                )

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
        scores: Iterable[str] | str | None = None,
        reverse_complement: bool = False,
        features: Sequence[str] | None = None,
        model_version: int = 0,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> ScoreTable:
        """See ``Client.score_sequences``."""
        items = [SequencePair.coerce(p) for p in pairs]
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, "strict", features)
        size = batch_size or self._opts.batch_size
        tables = []
        for start in range(0, max(len(items), 1), size):
            part = items[start : start + size]
            req = _convert.sequence_request(part, model, options, model_version)
            resp = await self._unary("ScoreSequences", self._stub.ScoreSequences, req, timeout)
            tables.append(_convert.table_from_response(resp, part, kinds))
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


async def _write(
    call: Any,
    resend: list[list[Variant]],
    source: Any,
    pending: deque[list[Variant]],
    slots: asyncio.Semaphore,
    state: dict[str, Any],
    model: str,
    options: pb.ScoreOptions,
    model_version: int,
) -> None:
    """Send unanswered chunks again, then new ones, keeping at most ``slots`` unanswered."""
    for chunk in resend:
        await slots.acquire()
        await call.write(_convert.variant_request(chunk, model, options, model_version))
    while not state["exhausted"]:
        await slots.acquire()
        try:
            chunk = await source.__anext__() if hasattr(source, "__anext__") else next(source)
        except (StopIteration, StopAsyncIteration):
            state["exhausted"] = True
            break
        except Exception as exc:  # bad input: finish the stream, re-raise in the reader
            state["exhausted"] = True
            state["error"] = exc
            break
        pending.append(chunk)
        await call.write(_convert.variant_request(chunk, model, options, model_version))
    await call.done_writing()


async def _achunked(
    variants: AsyncIterable[VariantLike], size: int
) -> AsyncIterator[list[Variant]]:
    """Lists of at most ``size`` Variants from an async iterable."""
    chunk: list[Variant] = []
    async for value in variants:
        chunk.append(Variant.coerce(value))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
