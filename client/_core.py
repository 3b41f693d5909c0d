"""What Client and AsyncClient share, written once: options, the channel's settings, how a
scoring call is planned (request building from a VariantBatch, response conversion), the
model-choice rule and the parts of every method that do no I/O. The two clients add only the
I/O (httpx's BaseClient pattern): a sync or an awaited stub call, and their stream drivers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import grpc

from varfx.client import _convert
from varfx.client._channel import ChannelSettings, channel_options, make_credentials
from varfx.client._chunks import MAX_REQUEST_BYTES, batch_bytes, split_batch
from varfx.client._retry import RetryPolicy
from varfx.client._transport import TransportCheck, check_token_transport
from varfx.client.errors import RETRYABLE_CODES, ModelChoiceError, VarfxError, from_rpc_error
from varfx.client.types import (
    ModelInfo,
    RefPolicy,
    ScoreTable,
    SequencePair,
    Variant,
    VariantLike,
)
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb

__all__ = [
    "BaseClient",
    "ClientOptions",
    "PathOrBytes",
    "ScoreCall",
    "ScoreKwargs",
    "choose_model",
]

PathOrBytes = bytes | str | os.PathLike[str]

#: Whether requests carry ``packed_variants`` by default (columnar) or one ``Variant`` message
#: per variant (what servers before PackedVariants read: ``packed_variants=False``).
PACKED_VARIANTS_DEFAULT = True


class ClientOptions:
    """What Client and AsyncClient share: channel settings, metadata, deadline, retry policy,
    batching and the request form (see ``Client`` for the arguments)."""

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
        packed_variants: bool | None = None,
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
        self.retry = retry or RetryPolicy()
        self.settings = ChannelSettings(
            target=target,
            tls=self.tls,
            server_name_override=server_name_override,
            load_balancing=load_balancing,
            keepalive_s=keepalive_s,
            retry=self.retry,
            retry_codes=tuple(sorted(c.name for c in RETRYABLE_CODES)),
        )
        self.options = channel_options(self.settings)
        items = list(metadata.items()) if isinstance(metadata, Mapping) else list(metadata or ())
        if token:
            items.append(("authorization", f"Bearer {token}"))
        self.metadata: tuple[tuple[str, str], ...] = tuple((k.lower(), v) for k, v in items)
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.packed_variants = (
            PACKED_VARIANTS_DEFAULT if packed_variants is None else bool(packed_variants)
        )


class ScoreKwargs(TypedDict, total=False):
    """The scoring options every variant method takes (keyword arguments).

    ``scores``: kinds to return ("diff,log2fc" or a list; default all of ref, alt, diff,
    log2fc; a calibrated model also has quantile, signed_quantile, pvalue, and quantile brings
    the table's max_quantile); ``features``: subset/order of features; ``ref_policy``: "strict" | "warn" |
    "flip"; ``reverse_complement``: average with the reverse-complement windows;
    ``indels_as_written``: build indel windows from the alleles as written (default: trimmed
    and left-aligned first); ``model_version``: 0 = the served version.
    """

    scores: Iterable[str] | str | None
    features: Sequence[str] | None
    ref_policy: RefPolicy | str | int
    reverse_complement: bool
    indels_as_written: bool
    model_version: int


@dataclass(frozen=True)
class ScoreCall:
    """One planned scoring call: model, options and request form, fixed for all its chunks.

    ``request(batch)`` builds the ScoreVariantsRequest of one chunk (packed arrays or one
    message per variant), ``table(response, batch)`` converts its answer.
    """

    model: str
    model_version: int
    options: pb.ScoreOptions
    kinds: tuple[str, ...]
    packed: bool

    @classmethod
    def plan(
        cls,
        model: str,
        packed: bool,
        *,
        scores: Iterable[str] | str | None = None,
        features: Sequence[str] | None = None,
        ref_policy: RefPolicy | str | int = "strict",
        reverse_complement: bool = False,
        indels_as_written: bool = False,
        model_version: int = 0,
    ) -> ScoreCall:
        kinds = _convert.parse_kinds(scores)
        options = _convert.build_options(
            kinds, reverse_complement, ref_policy, features, indels_as_written
        )
        return cls(model, int(model_version), options, kinds, packed)

    def request(self, batch: VariantBatch) -> pb.ScoreVariantsRequest:
        if not isinstance(batch, VariantBatch):
            raise TypeError(
                f"expected a VariantBatch, got {type(batch).__name__} (stream_batches takes "
                "VariantBatch objects; iter_chunks takes variants)"
            )
        return _convert.variant_request(
            batch, self.model, self.options, self.model_version, packed=self.packed
        )

    def sequence_request(self, pairs: Sequence[SequencePair]) -> pb.ScoreSequencesRequest:
        return _convert.sequence_request(pairs, self.model, self.options, self.model_version)

    def table(self, response: Any, inputs: VariantBatch | Sequence[SequencePair]) -> ScoreTable:
        if self.packed and isinstance(inputs, VariantBatch) and len(inputs):
            answered = len(response.packed.status) + len(response.scores)
            if answered == 0:  # a server from before PackedVariants saw an empty request
                raise VarfxError(
                    f"the server answered no scores for {len(inputs)} variants sent as "
                    "packed_variants: it predates them; use packed_variants=False"
                )
        return _convert.table_from_response(response, inputs, self.kinds)


def choose_model(models: Sequence[ModelInfo], name: str = "") -> ModelInfo:
    """The model a call without a name means, by the server's rule: ``name`` when given; else
    the server's default; else the only model. Several models and no default, an unknown name
    or no models at all raise ModelChoiceError listing what the server has."""
    served = [m.name for m in models]
    if not models:
        raise ModelChoiceError("the server holds no models")
    if name:
        for m in models:
            if m.name == name:
                return m
        raise ModelChoiceError(f"model {name!r} is not served; the server has {served}")
    defaults = [m for m in models if m.is_default]
    if len(defaults) == 1:
        return defaults[0]
    if len(models) == 1:
        return models[0]
    raise ModelChoiceError(
        f"the server holds several models and no default: {served}; name one "
        "(--model NAME, or model= in the client)"
    )


class BaseClient:
    """The constructor and the I/O-free parts of Client and AsyncClient.

    Arguments: ``target`` ("host:port", "dns:///host:port", "ipv4:127.0.0.1:1,127.0.0.1:2");
    TLS (``tls``, ``root_certificates``, ``client_certificate``/``client_key`` as PEM bytes or
    paths); ``token`` (sent as ``authorization: Bearer``; refused in plaintext to a host other
    than this one unless ``insecure=True``) and ``metadata``; ``timeout``: deadline of each
    unary call in seconds (all its retries included); ``retry``: RetryPolicy for
    UNAVAILABLE/RESOURCE_EXHAUSTED/CANCELLED (unary calls: gRPC's service-config retryPolicy,
    at most 5 attempts; streams: resumed by the client, all ``max_attempts``);
    ``max_in_flight``: chunks a stream may have unanswered; ``batch_size``: variants per
    request; ``load_balancing``: "auto"|"round_robin"|"pick_first"; ``packed_variants``: send
    variants as PackedVariants arrays (True, the default) or one message each (False, for
    servers from before PackedVariants);
    ``channel``: use this channel instead (its options are the caller's).
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
        channel: Any = None,
        insecure: bool = False,
        packed_variants: bool | None = None,
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
            packed_variants=packed_variants,
        )
        self.target = target
        self._own_channel = channel is None
        self._channel = self._open_channel() if channel is None else channel
        self._bind(self._channel)

    @property
    def options(self) -> ClientOptions:
        return self._opts

    # -- hooks for the I/O side -------------------------------------------------------------

    def _open_channel(self) -> Any:
        raise NotImplementedError

    def _bind(self, channel: Any) -> None:
        raise NotImplementedError

    # -- shared, I/O-free -------------------------------------------------------------------

    def _call_args(self, timeout: float | None) -> dict[str, Any]:
        """Keyword arguments of a unary stub call: deadline and metadata."""
        return {
            "timeout": self._opts.timeout if timeout is None else timeout,
            "metadata": self._opts.metadata,
        }

    def _unary_error(self, exc: grpc.RpcError, method: str) -> VarfxError:
        """The VarfxError for a unary call that failed after gRPC's own retries."""
        tried = self._opts.retry.unary_attempts if exc.code() in RETRYABLE_CODES else 1
        return from_rpc_error(exc, method, self.target, tried)

    def _plan(self, model: str, kwargs: ScoreKwargs) -> ScoreCall:
        return ScoreCall.plan(model, self._opts.packed_variants, **kwargs)

    def _split(
        self, variants: VariantBatch | Iterable[VariantLike], batch_size: int | None
    ) -> tuple[VariantBatch | None, Any]:
        """``(batch, None)`` when the input fits one request, else ``(None, chunks)`` (a lazy
        iterator of VariantBatches of ``batch_size`` variants and MAX_REQUEST_BYTES bytes)."""
        size = batch_size or self._opts.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        if isinstance(variants, VariantBatch):
            batch = variants
        else:
            # eager: the count decides between one call and a stream
            batch = VariantBatch.from_variants([Variant.coerce(v) for v in variants])
        if len(batch) <= size and int(batch_bytes(batch).sum()) <= MAX_REQUEST_BYTES:
            return batch, None
        return None, split_batch(batch, size)

    def _sequence_parts(
        self,
        pairs: Iterable[SequencePair | tuple[Any, ...] | Mapping[str, Any]],
        batch_size: int | None,
    ) -> list[list[SequencePair]]:
        items = [SequencePair.coerce(p) for p in pairs]
        size = batch_size or self._opts.batch_size
        return [items[i : i + size] for i in range(0, max(len(items), 1), size)]
