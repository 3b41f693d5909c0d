"""The synchronous client: ``Client(target, ...)``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from varfx.client import _convert
from varfx.client._channel import ChannelSettings, channel_options, make_credentials, open_channel
from varfx.client._retry import RetryPolicy
from varfx.client._stream import chunked, stream_chunks
from varfx.client._transport import TransportCheck, check_token_transport
from varfx.client.errors import RETRYABLE_CODES, VarfxError, from_rpc_error, rpc_code
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

__all__ = ["Client", "ClientOptions"]

log = logging.getLogger(__name__)
T = TypeVar("T")
PathOrBytes = bytes | str | os.PathLike[str]


class ClientOptions:
    """What Client and AsyncClient share: channel settings, metadata, deadline, retry policy."""

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
        insecure: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        self.target = target
        self.tls = bool(tls or root_certificates or client_certificate)
        check_token_transport(target, tls=self.tls, token=bool(token), insecure=insecure)
        self.transport = TransportCheck(
            target, tls=self.tls, client_certificate=client_certificate is not None
        )
        self.credentials = (
            make_credentials(root_certificates, client_certificate, client_key)
            if self.tls
            else None
        )
        self.settings = ChannelSettings(
            target=target,
            tls=self.tls,
            server_name_override=server_name_override,
            load_balancing=load_balancing,
            keepalive_s=keepalive_s,
        )
        self.options = channel_options(self.settings)
        items = list(metadata.items()) if isinstance(metadata, Mapping) else list(metadata or ())
        if token:
            items.append(("authorization", f"Bearer {token}"))
        self.metadata: tuple[tuple[str, str], ...] = tuple((k.lower(), v) for k, v in items)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size


class Client:
    """Blocking client for a varfx server.

    >>> with Client("localhost:50051") as c:          # doctest: +SKIP
    ...     table = c.score_variants([("chr1", 14677, "G", "A")])
    ...     table.diff        # float32 [1, F]: alt - ref probability per feature
    ...     table.features    # the F feature names

    Arguments: ``target`` ("host:port", "dns:///host:port", "ipv4:127.0.0.1:1,127.0.0.1:2");
    TLS (``tls``, ``root_certificates``, ``client_certificate``/``client_key`` as PEM bytes or
    paths); ``token`` (sent as ``authorization: Bearer``; refused in plaintext to a host other
    than this one unless ``insecure=True``) and ``metadata``; ``timeout``: deadline
    of each unary call in seconds; ``retry``: RetryPolicy for UNAVAILABLE/RESOURCE_EXHAUSTED/CANCELLED;
    ``max_in_flight``: chunks a stream may have unanswered; ``batch_size``: variants per request;
    ``load_balancing``: "auto"|"round_robin"|"pick_first"; ``channel``: use this channel instead.
    Every gRPC failure is raised as ``VarfxError``.
    """

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
        channel: grpc.Channel | None = None,
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
            channel = open_channel(target, o.credentials, o.options, o.transport)
        self._channel = channel
        self._stub = pb_grpc.VariantEffectServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    # -- plumbing ---------------------------------------------------------------------------

    def _unary(self, method: str, fn: Callable[..., T], request: Any, timeout: float | None) -> T:
        policy = self._opts.retry
        deadline = self._opts.timeout if timeout is None else timeout
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return fn(request, timeout=deadline, metadata=self._opts.metadata)
            except grpc.RpcError as exc:
                if rpc_code(exc) in RETRYABLE_CODES and attempt < policy.max_attempts:
                    wait = policy.backoff(attempt)
                    log.info("%s: %s, retry %d in %.2f s", method, rpc_code(exc), attempt, wait)
                    time.sleep(wait)
                    continue
                raise from_rpc_error(exc, method, self.target, attempt) from exc
        raise AssertionError("unreachable")

    # -- API --------------------------------------------------------------------------------

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server holds."""
        resp = self._unary("ListModels", self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [_convert.model_info(m) for m in resp.models]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name of ``service`` ("" = the whole server): "SERVING",
        "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN". Not retried."""
        try:
            resp = self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self._opts.timeout if timeout is None else timeout,
                metadata=self._opts.metadata,
            )
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
        """Score variants (Variant, ``(chrom, pos, ref, alt[, id])`` or dicts), one ALT each.

        Up to ``batch_size`` variants go in one ScoreVariants call; more stream through
        StreamScoreVariants (see ``iter_chunks``). ``scores``: kinds to return (default all of
        ref, alt, diff, log2fc); ``features``: subset/order of features. Returns a ScoreTable in
        input order; unscorable variants carry their status and NaN scores.
        """
        size = batch_size or self._opts.batch_size
        items = [Variant.coerce(v) for v in variants]
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, ref_policy, features)
        if len(items) <= size:
            req = _convert.variant_request(items, model, options, model_version)
            resp = self._unary("ScoreVariants", self._stub.ScoreVariants, req, timeout)
            return _convert.table_from_response(resp, items, kinds)
        tables = list(
            self.iter_chunks(
                items,
                model,
                scores=kinds,
                reverse_complement=reverse_complement,
                ref_policy=ref_policy,
                features=features,
                model_version=model_version,
                batch_size=size,
            )
        )
        return ScoreTable.concat(tables)

    def iter_chunks(
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
        max_in_flight: int | None = None,
    ) -> Iterator[ScoreTable]:
        """Stream any number of variants; yields one ScoreTable per chunk of ``batch_size``, in
        input order. At most ``max_in_flight`` chunks are unanswered; the input is read lazily.
        A stream broken by UNAVAILABLE/RESOURCE_EXHAUSTED/CANCELLED resumes from the first unanswered chunk."""
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, ref_policy, features)

        def make_request(chunk: list[Any]) -> pb.ScoreVariantsRequest:
            return _convert.variant_request(chunk, model, options, model_version)

        def open_stream(requests: Iterator[Any]) -> Any:
            return self._stub.StreamScoreVariants(requests, metadata=self._opts.metadata)

        for chunk, resp in stream_chunks(
            open_stream,
            chunked(variants, batch_size or self._opts.batch_size),
            make_request,
            max_in_flight=max_in_flight or self._opts.max_in_flight,
            retry=self._opts.retry,
            target=self.target,
        ):
            yield _convert.table_from_response(resp, chunk, kinds)

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
        scores: Iterable[str] | str | None = None,
        reverse_complement: bool = False,
        features: Sequence[str] | None = None,
        model_version: int = 0,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> ScoreTable:
        """Score caller-supplied ref/alt sequences (``(ref, alt[, id])``, dicts or
        SequencePair); sequences are N-padded/centre-cut to the model's window by the server."""
        items = [SequencePair.coerce(p) for p in pairs]
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(kinds, reverse_complement, "strict", features)
        size = batch_size or self._opts.batch_size
        tables = []
        for start in range(0, max(len(items), 1), size):
            part = items[start : start + size]
            req = _convert.sequence_request(part, model, options, model_version)
            resp = self._unary("ScoreSequences", self._stub.ScoreSequences, req, timeout)
            tables.append(_convert.table_from_response(resp, part, kinds))
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
