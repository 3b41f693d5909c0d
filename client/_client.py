"""The synchronous client: ``Client(target, ...)``. Everything but the I/O is in client/_core.py."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from varfx.client import _convert
from varfx.client._channel import open_channel
from varfx.client._chunks import batches
from varfx.client._core import BaseClient, ClientOptions, ScoreCall, choose_model
from varfx.client._stream import Dealer, merge_lanes, stream_chunks
from varfx.client.errors import VarfxError, from_rpc_error
from varfx.client.types import ModelInfo, ScoreTable, SequencePair, VariantLike, VariantScore
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

__all__ = ["Client", "ClientOptions"]


class Client(BaseClient):
    """Blocking client for a varfx server.

    >>> with Client("localhost:50051") as c:          # doctest: +SKIP
    ...     table = c.score_variants([("chr1", 14677, "G", "A")])
    ...     table.diff        # float32 [1, F]: alt - ref probability per feature
    ...     table.features    # the F feature names
    """

    __doc__ = (__doc__ or "") + "\n" + (BaseClient.__doc__ or "")

    def _open_channel(self) -> grpc.Channel:
        o = self._opts
        return open_channel(self.target, o.credentials, o.options, o.transport)

    def _bind(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.VariantEffectServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        """One unary call (retried by gRPC per the channel's retryPolicy)."""
        try:
            return getattr(self._stub, method)(request, **self._call_args(timeout))
        except grpc.RpcError as exc:
            raise self._unary_error(exc, method) from exc

    def _lane(
        self, call: ScoreCall, chunks: Iterator[VariantBatch], limit: int
    ) -> Iterator[ScoreTable]:
        """One resumable stream over ``chunks``: one table per chunk, in order."""

        def open_stream(requests: Iterator[Any]) -> Any:
            return self._stub.StreamScoreVariants(requests, metadata=self._opts.metadata)

        for batch, response in stream_chunks(
            open_stream, chunks, call.request,
            max_in_flight=limit, retry=self._opts.retry, target=self.target,
        ):  # fmt: skip
            yield call.table(response, batch)

    # -- API --------------------------------------------------------------------------------

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server holds."""
        resp = self._unary("ListModels", pb.ListModelsRequest(), timeout)
        return [_convert.model_info(m) for m in resp.models]

    def choose_model(self, name: str = "", *, timeout: float | None = None) -> ModelInfo:
        """The model ``name`` means on this server (see ``choose_model``): ModelChoiceError
        when there are several and no default, or ``name`` is not served."""
        return choose_model(self.list_models(timeout=timeout), name)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name of ``service`` ("" = the whole server): "SERVING",
        "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN". Not retried."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            resp = self._health.Check(request, **self._call_args(timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, "Health.Check", self.target) from exc
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    def wait_until_serving(self, timeout: float = 60.0, service: str = "") -> None:
        """Poll health until SERVING; VarfxError (DEADLINE_EXCEEDED) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                last = self.health(service, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except VarfxError as exc:
                last = f"{exc.code_name}: {exc.details}"
            if time.monotonic() >= deadline:
                raise VarfxError(
                    f"{self.target} not SERVING after {timeout:.0f} s (last: {last})",
                    code=grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            time.sleep(0.2)

    def score_variants(
        self,
        variants: VariantBatch | Iterable[VariantLike],
        model: str = "",
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ScoreTable:
        """Score variants (a VariantBatch, or Variant / ``(chrom, pos, ref, alt[, id])`` /
        dicts), one ALT each; options (``scores``, ``features``, ``ref_policy``,
        ``reverse_complement``, ``indels_as_written``, ``model_version``) as in ScoreKwargs.

        Up to ``batch_size`` variants go in one ScoreVariants call; more stream through
        StreamScoreVariants (see ``stream_batches``). Returns a ScoreTable in input order;
        unscorable variants carry their status and NaN scores.
        """
        call = self._plan(model, kwargs)
        batch, chunks = self._split(variants, batch_size)
        if batch is not None:
            return call.table(self._unary("ScoreVariants", call.request(batch), timeout), batch)
        return ScoreTable.concat(list(self._lane(call, chunks, self._opts.max_in_flight)))

    def stream_batches(
        self,
        batches: Iterable[VariantBatch],
        model: str = "",
        *,
        max_in_flight: int | None = None,
        parallel: int = 1,
        **kwargs: Any,
    ) -> Iterator[ScoreTable]:
        """Score VariantBatches through StreamScoreVariants: one ScoreTable per batch, in input
        order (each batch is one request: bound it in records and bytes). ``batches`` is read
        lazily; at most ``max_in_flight`` batches per stream are unanswered. ``parallel=N``
        opens N streams on this channel (over replicas with a round-robin channel) and deals
        batch i to stream ``i % N``; the tables are the same, in the same order, as with one.
        A stream broken by UNAVAILABLE/RESOURCE_EXHAUSTED/CANCELLED resumes from its first
        unanswered batch."""
        call = self._plan(model, kwargs)
        limit = max_in_flight or self._opts.max_in_flight
        source = iter(batches)
        if parallel == 1:
            yield from self._lane(call, source, limit)
            return
        dealer: Dealer[VariantBatch] = Dealer(parallel)
        lanes = [self._lane(call, dealer.lane(k, source), limit) for k in range(parallel)]
        yield from merge_lanes(lanes)

    def iter_chunks(
        self,
        variants: VariantBatch | Iterable[VariantLike],
        model: str = "",
        *,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        parallel: int = 1,
        **kwargs: Any,
    ) -> Iterator[ScoreTable]:
        """``stream_batches`` over chunks of ``batch_size`` variants, read lazily from
        ``variants`` (Variant / tuples / dicts, or a VariantBatch)."""
        chunks = batches(variants, batch_size or self._opts.batch_size)
        return self.stream_batches(
            chunks, model, max_in_flight=max_in_flight, parallel=parallel, **kwargs
        )

    def iter_scores(
        self, variants: Iterable[VariantLike], model: str = "", **kwargs: Any
    ) -> Iterator[VariantScore]:
        """Like ``iter_chunks`` but yields one VariantScore per variant, in input order."""
        for table in self.iter_chunks(variants, model, **kwargs):
            yield from table

    def score_sequences(
        self,
        pairs: Iterable[SequencePair | tuple[Any, ...] | Mapping[str, Any]],
        model: str = "",
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ScoreTable:
        """Score caller-supplied ref/alt sequences (``(ref, alt[, id])``, dicts or
        SequencePair); sequences are N-padded/centre-cut to the model's window by the server
        (``ref_policy`` does not apply)."""
        call = self._plan(model, kwargs)
        tables = []
        for part in self._sequence_parts(pairs, batch_size):
            resp = self._unary("ScoreSequences", call.sequence_request(part), timeout)
            tables.append(call.table(resp, part))
        return ScoreTable.concat(tables)

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
