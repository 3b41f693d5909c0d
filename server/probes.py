"""A plaintext port that serves grpc.health.v1 only, for probes that cannot speak TLS.

Kubernetes' built-in gRPC probes connect without TLS and without credentials, so a server
whose gRPC port speaks TLS (``tls_cert``) cannot be probed there. ``health_port`` opens a
second listener on ``host`` that serves the same health service (the same SERVING /
NOT_SERVING states: NOT_SERVING until the models are warm and as soon as draining starts)
and nothing else: no scoring, no reflection, no model list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from varfx.server.config import ServerConfig

__all__ = ["HealthPort", "start_health_port"]

log = logging.getLogger(__name__)


@dataclass
class HealthPort:
    """The health-only listener and its bound port."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)


async def start_health_port(health_servicer: Any, config: ServerConfig) -> HealthPort | None:
    """Serve ``health_servicer`` alone on ``config.host:config.health_port`` (None when the
    port is off, -1); port 0 picks a free one. OSError when it cannot be bound."""
    if config.health_port < 0:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{config.host}:{config.health_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"could not bind health port {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"could not bind health port {address}")
    await server.start()
    log.info("health checks (grpc.health.v1 only, plaintext) on %s:%d", config.host, port)
    return HealthPort(server, port)
