"""``varfx serve --workers N``: N server processes on one gRPC port, one metrics endpoint.

Each worker is a whole server (its own models, ONNX Runtime sessions, batchers and event loop)
started with ``SO_REUSEPORT`` on the same port, so the kernel spreads connections over them and
one slow Python process no longer bounds a machine with many cores (or a GPU that one process
cannot keep busy). The parent process starts the workers, serves Prometheus metrics for all of
them (prometheus_client's multiprocess mode: counters and histograms summed, gauges summed over
live workers), forwards SIGTERM/SIGINT (drain) and SIGHUP (token reload), and exits when they
have: if one worker dies, the others are stopped and the parent exits 1, so that the process
supervisor (Kubernetes, systemd) restarts the whole server rather than running short of workers.

A client connection sticks to one worker; clients that open several channels (or
``varfx score --parallel``) spread over all of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

from varfx.server.config import ServerConfig

__all__ = ["MULTIPROC_ENV", "serve_workers"]

log = logging.getLogger(__name__)

#: prometheus_client reads this (before it is imported) to keep metric values in shared files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PR_SET_PDEATHSIG = 1  # prctl option
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as varfx.cli's


def _pick_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "", 0))
        return int(s.getsockname()[1])


def _die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGTERM when the parent dies, even by SIGKILL (no orphans)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(
    config: ServerConfig, index: int, metrics_dir: str, log_level: int, parent: int
) -> None:
    _die_with_parent(parent)
    os.environ[MULTIPROC_ENV] = metrics_dir
    logging.basicConfig(level=log_level, format=_LOG_FORMAT)
    from varfx.server.app import serve

    log.info("worker %d (pid %d) starting", index, os.getpid())
    serve(config)


def _metrics_http(config: ServerConfig, metrics_dir: str) -> Any:
    from prometheus_client import CollectorRegistry, multiprocess

    from varfx.server.metrics import start_metrics_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    server, port = start_metrics_server(registry, config.metrics_host, config.metrics_port)
    log.info("metrics of all workers on %s:%d", config.metrics_host, port)
    return server


def serve_workers(config: ServerConfig) -> int:
    """Run ``config.workers`` server processes on one port until SIGTERM/SIGINT; returns the
    exit status (0 after a clean drain, 1 when a worker died)."""
    n = config.workers
    port = config.port or _pick_port(config.host)
    metrics_dir = tempfile.mkdtemp(prefix="varfx-metrics-")
    child = dataclasses.replace(config, port=port, metrics_port=-1, workers=1, reuse_port=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker,
            args=(child, i, metrics_dir, logging.getLogger().getEffectiveLevel(), os.getpid()),
            name=f"varfx-worker-{i}",
        )
        for i in range(n)
    ]
    stopping = False
    status = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    previous = {
        s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    http = None
    try:
        for p in procs:
            p.start()
        log.info("serving with %d workers on %s:%d (pids %s)", n, config.host, port,
                 [p.pid for p in procs])  # fmt: skip
        if config.metrics_port >= 0:
            http = _metrics_http(config, metrics_dir)
        while any(p.is_alive() for p in procs):
            dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
            if dead and not stopping:
                log.error(
                    "worker %s exited with %s; stopping the others",
                    dead[0].name,
                    dead[0].exitcode,
                )
                status = 1
                stopping = True
                for p in procs:
                    if p.pid is not None and p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
            time.sleep(0.2)
        if any(p.exitcode not in (0, None, -signal.SIGTERM) for p in procs) and not stopping:
            status = 1
        return status
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in procs:
            p.join(timeout=config.grace_s + 10)
            if p.is_alive():  # our own child, by PID
                p.kill()
                p.join()
        if http is not None:
            http.shutdown()
            http.server_close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
