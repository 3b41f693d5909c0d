"""varfx.server: the varfx gRPC scoring service (``varfx serve``).

Build a server with ``create_server(config)`` (async) or ``start_in_thread(config)``; run one
with ``serve(config)``. Configuration is a validated ``ServerConfig`` (``load_config`` merges a
TOML file, ``VARFX_*`` environment variables and flags).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy: `varfx --help` imports varfx.server._cli, which must not pull in onnxruntime.
_EXPORTS = {
    "SERVICE_NAME": "app",
    "RunningServer": "app",
    "VarfxServer": "app",
    "create_server": "app",
    "serve": "app",
    "start_in_thread": "app",
    "DynamicBatcher": "batching",
    "ConfigError": "config",
    "ServerConfig": "config",
    "load_config": "config",
    "GenomeUnavailableError": "errors",
    "InferenceError": "errors",
    "InvalidRequestError": "errors",
    "ModelNotFoundError": "errors",
    "QueueFullError": "errors",
    "VarfxServerError": "errors",
    "grpc_code": "errors",
    "Genome": "genome",
    "Metrics": "metrics",
    "start_metrics_server": "metrics",
    "ModelRepositoryError": "repository",
    "ModelSpec": "repository",
    "scan_repository": "repository",
    "ModelRunner": "runtime",
    "VariantWindows": "windows",
    "build_windows": "windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'varfx.server' has no attribute {name!r}")
    return getattr(importlib.import_module(f"varfx.server.{module}"), name)
