"""Channel construction shared by Client and AsyncClient: TLS, load balancing, keepalive, and
gRPC's own retries of unary calls (service-config ``retryPolicy``, see client/_retry.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from varfx.client._retry import RetryPolicy
from varfx.client._transport import (
    AioTransportInterceptor,
    SyncTransportInterceptor,
    TransportCheck,
)

__all__ = [
    "ChannelSettings",
    "channel_options",
    "make_credentials",
    "open_aio_channel",
    "open_channel",
]

_MB = 1024 * 1024


@dataclass(frozen=True)
class ChannelSettings:
    """How to reach the server.

    ``load_balancing``: "auto" (round_robin for ``dns:``/``ipv4:``/``ipv6:`` targets, which may
    resolve to several replicas; pick_first otherwise), "round_robin" or "pick_first".
    ``retry``/``retry_codes``: gRPC retries unary calls that end with those codes (names).
    ``keepalive_s``: HTTP/2 pings every that many seconds during calls (0 = off). The default,
    300 s, is the gRPC server's default minimum ping interval: shorter ones need the server to
    allow them (``grpc.http2.min_ping_interval_without_data_ms``) or it closes the connection.
    """

    target: str
    tls: bool = False
    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    server_name_override: str | None = None
    load_balancing: str = "auto"
    keepalive_s: float = 300.0
    max_message_mb: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED")

    def lb_policy(self) -> str:
        if self.load_balancing not in ("auto", "round_robin", "pick_first"):
            raise ValueError(
                f"unknown load_balancing {self.load_balancing!r}; "
                "expected auto, round_robin or pick_first"
            )
        if self.load_balancing != "auto":
            return self.load_balancing
        scheme = self.target.split(":", 1)[0]
        return "round_robin" if scheme in ("dns", "ipv4", "ipv6") else "pick_first"


def _read(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def make_credentials(
    root_certificates: bytes | str | os.PathLike[str] | None,
    client_certificate: bytes | str | os.PathLike[str] | None,
    client_key: bytes | str | os.PathLike[str] | None,
) -> grpc.ChannelCredentials:
    """TLS credentials from PEM bytes or file paths (None root = system roots)."""
    cert, key = _read(client_certificate), _read(client_key)
    if (cert is None) != (key is None):
        raise ValueError("client_certificate and client_key must be given together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates), private_key=key, certificate_chain=cert
    )


def channel_options(settings: ChannelSettings) -> list[tuple[str, Any]]:
    policy = settings.lb_policy()
    service_config: dict[str, Any] = {"loadBalancingConfig": [{policy: {}}]}
    methods = settings.retry.method_config(settings.retry_codes)
    if methods:
        service_config["methodConfig"] = methods
    opts: list[tuple[str, Any]] = [
        ("grpc.lb_policy_name", policy),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.max_receive_message_length", settings.max_message_mb * _MB),
        ("grpc.max_send_message_length", settings.max_message_mb * _MB),
        # unary retries are gRPC's (methodConfig above); streams are resumed by the client
        ("grpc.enable_retries", 1),
        # a request larger than the retry buffer would not be retried: let any message fit
        ("grpc.per_rpc_retry_buffer_size", settings.max_message_mb * _MB),
    ]
    if settings.keepalive_s > 0:
        ms = int(settings.keepalive_s * 1000)
        opts += [
            ("grpc.keepalive_time_ms", ms),
            ("grpc.keepalive_timeout_ms", min(20000, max(1000, ms // 3))),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if settings.server_name_override:
        opts.append(("grpc.ssl_target_name_override", settings.server_name_override))
    return opts


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, Any]],
    check: TransportCheck,
) -> grpc.Channel:
    """A channel (TLS when ``credentials``) whose failed calls fail fast, with FAILED_PRECONDITION
    and a clear message, on a TLS/plaintext mismatch (client/_transport.py)."""
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options)
    else:
        channel = grpc.insecure_channel(target, options)
    return grpc.intercept_channel(channel, SyncTransportInterceptor(check))


def open_aio_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, Any]],
    check: TransportCheck,
) -> grpc.aio.Channel:
    """``open_channel`` for grpc.aio (the check covers unary calls)."""
    interceptors = [AioTransportInterceptor(check)]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)
