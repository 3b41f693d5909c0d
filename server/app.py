"""Building and running the varfx server.

``create_server(config)`` builds and starts everything (models, batchers, gRPC, health, reflection,
metrics) and returns ``(server, port)``; ``serve(config)`` runs until SIGTERM/SIGINT and drains;
``start_in_thread(config)`` runs a server on its own event loop in a background thread (tests,
benchmarks, notebooks).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from varfx.server.auth import BearerTokenInterceptor, TokenStore
from varfx.server.batching import DynamicBatcher
from varfx.server.calls import CallInterceptor
from varfx.server.config import ServerConfig
from varfx.server.device_windows import DeviceWindowsError
from varfx.server.genome import Genome
from varfx.server.genome_identity import pair_models, served_genome
from varfx.server.kserve import KSERVE_SERVICE_NAME, KServeServicer, reflection_pool
from varfx.server.local_compute import load_local
from varfx.server.memory import limit_malloc_arenas
from varfx.server.metrics import Metrics, start_metrics_server
from varfx.server.probes import HealthPort, start_health_port
from varfx.server.refcache import RefCache
from varfx.server.repository import scan_repository
from varfx.server.requests import receive_limit
from varfx.server.runtime import ModelRunner
from varfx.server.service import SERVICE_NAME, ServedModel, VariantEffectServicer
from varfx.server.tls import security_warnings, server_credentials

__all__ = [
    "SERVICE_NAME",
    "RunningServer",
    "VarfxServer",
    "create_server",
    "serve",
    "start_in_thread",
]

log = logging.getLogger(__name__)
_health_aio: Any = health.aio  # type: ignore[attr-defined]  # grpc_health's asyncio servicer


@dataclass
class VarfxServer:
    """A started server and what it owns."""

    grpc_server: grpc.aio.Server
    port: int
    metrics_port: int | None
    models: dict[str, ServedModel]
    health: Any  # grpc_health asyncio HealthServicer
    metrics: Metrics
    genome: Genome | None
    _metrics_http: Any = None
    _executor: ThreadPoolExecutor | None = None
    _stopped: bool = field(default=False)
    tokens: TokenStore | None = None  # bearer tokens (server/auth.py), reloaded on SIGHUP
    health_port: HealthPort | None = None  # plaintext health-only port (server/probes.py)

    def reload_tokens(self) -> None:
        """Re-read the auth token file (SIGHUP); nothing to do without one."""
        if self.tokens is not None:
            self.tokens.reload()

    kserve: KServeServicer | None = None  # KServe v2 / Triton protocol (server/kserve.py)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME, KSERVE_SERVICE_NAME):
            await self.health.set(name, status)
        if self.kserve is not None:
            self.kserve.ready = serving

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight calls finish for up to ``grace`` seconds, shut down."""
        if self._stopped:
            return
        self._stopped = True
        await self.set_serving(False)
        await self.grpc_server.stop(grace)
        if self.health_port is not None:
            await self.health_port.stop(0)
        for model in self.models.values():
            await model.batcher.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self.genome is not None:
            self.genome.close()
        for model in self.models.values():
            if model.genome is not None:
                model.genome.close()


def _channel_options(config: ServerConfig, lengths: Sequence[int] = ()) -> list[tuple[str, Any]]:
    """The serving port's gRPC options (``lengths``: the served models' window lengths)."""
    size = config.max_message_mb * 1024 * 1024
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", size),
        # no legal request is larger: core refuses one at its 5-byte length prefix, before the
        # body is uploaded or buffered (server/requests.py receive_limit)
        (
            "grpc.max_receive_message_length",
            receive_limit(size, config.max_variants_per_request, config.max_batch, lengths),
        ),
        # and answers at once: core's tarpit would hold each refusal 100-1000 ms (random), the
        # client waiting on it; a refusal at the prefix costs this server nothing to repeat
        ("grpc.http.tarpit", 0),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        # HTTP/2 flow control at its fixed default: with BDP probing a stream's window grows to
        # megabytes, and a client that sends faster than its stream is scored parks that much
        # per stream in the transport (24 such streams held ~400 MB; bench/soak.py)
        ("grpc.http2.bdp_probe", 0),
    ]
    if config.max_connection_age_s > 0:
        ms = int(config.max_connection_age_s * 1000)
        opts += [
            ("grpc.max_connection_age_ms", ms),
            ("grpc.max_connection_age_grace_ms", max(ms // 2, 5000)),
        ]
    return opts


def _device_windows(model: ServedModel, mode: str, max_bytes: int) -> None:
    """Keep the model's genome (the contigs of its training genome, or all) where it runs, for
    ScoreVariants' SNV windows built there (server/device_windows.py): ``mode`` "auto" on CUDA
    only, "on" on any device. A genome over the cap or a one-hot model stays on the host. A
    model with device windows runs full passes: local recomputation (CPU) needs host windows."""
    runner, genome = model.runner, model.genome
    if genome is None or mode == "off" or (mode == "auto" and not runner.device.startswith("cuda")):
        return
    if runner.spec.input_kind != "tokens":
        log.info("model %s: %s input: windows built on the host", runner.spec.name,
                 runner.spec.input_kind)  # fmt: skip
        return
    training = model.pairing.training if model.pairing is not None else None
    names = [genome.resolve(c.name) for c in training.contigs] if training is not None else []
    contigs = list(dict.fromkeys(n for n in names if n is not None)) or None
    try:
        runner.attach_device_windows(genome, contigs, max_bytes)
    except DeviceWindowsError as exc:
        log.warning("model %s: windows built on the host: %s", runner.spec.name, exc)
        return
    model.batcher.accept_rows(runner.predict_mixed)
    if model.local is not None:
        log.info("model %s: device windows: full passes, no local recomputation", runner.spec.name)
        model.local = None
    log.info(
        "model %s: %d MiB of genome tokens on %s for device windows",
        runner.spec.name, runner.device_windows.nbytes >> 20, runner.device,
    )  # fmt: skip


def _pair_genomes(
    config: ServerConfig,
    models: dict[str, ServedModel],
    genome: Genome | None,
    by_assembly: dict[str, Genome],
) -> None:
    """Give each model its genome, refusing contradictions (server/genome_identity.py)."""
    pairings = pair_models(
        {name: m.spec for name, m in models.items()},
        default=served_genome(genome, option="--genome") if genome is not None else None,
        by_assembly={
            key: served_genome(g, assembly=key, option=f"--genomes {key}")
            for key, g in by_assembly.items()
        },
        allow_mismatch=config.allow_genome_mismatch,
    )
    for name, model in models.items():
        pairing = pairings[name]
        model.genome, model.pairing = pairing.genome, pairing
        if pairing.served is not None:
            log.info(
                "model %s: genome %s (assembly %r, digest %s)%s",
                name,
                pairing.served.genome.path,
                pairing.assembly,
                pairing.served.identity.digest[:12],
                " despite a mismatch (allow_genome_mismatch)" if pairing.mismatch_allowed else "",
            )
        else:
            log.info("model %s: no genome (sequences only): %s", name, pairing.unpaired_reason)


async def create_server(
    config: ServerConfig, *, registry: CollectorRegistry | None = None
) -> tuple[VarfxServer, int]:
    """Load models, start gRPC (health NOT_SERVING), warm up, then report SERVING.

    Returns the server and its bound gRPC port (config.port 0 picks a free one).
    """
    limit_malloc_arenas(config.malloc_arenas)  # before this server's threads allocate
    # TLS files and tokens first: a bad one fails in milliseconds, not after the models load
    credentials = server_credentials(config)
    tokens = TokenStore(config.auth_tokens_file) if config.auth_tokens_file else None
    auth = [BearerTokenInterceptor(tokens)] if tokens is not None else []
    for warning in security_warnings(config):
        log.warning("%s", warning)
    metrics = Metrics(registry)
    genome = Genome(config.genome) if config.genome else None
    by_assembly = {name: Genome(path) for name, path in config.genomes.items()}
    executor = ThreadPoolExecutor(max(2, config.inference_threads), thread_name_prefix="varfx")
    models: dict[str, ServedModel] = {}
    ref_cache = RefCache(config.ref_cache_mb << 20) if config.ref_cache_mb else None
    server: grpc.aio.Server | None = None
    health_port: HealthPort | None = None
    metrics_http: Any = None
    try:
        for entry in scan_repository(config.model_repo, config.model_versions):
            runner = ModelRunner(
                entry,
                config.device,
                intra_op_threads=config.intra_op_threads,
                spinning=config.ort_spinning,
                precision=config.precision,
            )
            batcher = DynamicBatcher(
                runner.predict,
                name=entry.name,
                max_batch=config.max_batch,
                max_delay_s=config.max_delay_ms / 1000.0,
                max_queue=config.max_queue,
                workers=config.inference_threads,
                metrics=metrics,
            )
            await batcher.start()
            spec = runner.spec
            local = None
            # local graphs are fp32: a model served in fp16 runs full passes
            if (
                config.local_recompute == "auto"
                and runner.device == "cpu"
                and runner.precision == "fp32"
            ):
                local = load_local(
                    entry.path, runner.predict, name=entry.name,
                    logits=runner.spec.output == "logits", tokens=runner.spec.input_kind == "tokens",
                    intra_op_threads=config.intra_op_threads, max_batch=config.max_batch,
                )  # fmt: skip
            models[entry.name] = ServedModel(runner, batcher, ref_cache=ref_cache, local=local)
            metrics.model_info.labels(
                model=spec.name,
                version=str(spec.version),
                device=runner.device,
                sequence_length=str(spec.sequence_length),
                features=str(len(spec.features)),
            ).set(1)
            log.info(
                "model %s v%d: %d features, L=%d, %s input, on %s, assembly %r",
                spec.name,
                spec.version,
                len(spec.features),
                spec.sequence_length,
                spec.input_kind,
                runner.device,
                spec.assembly,
            )
            if runner.device.startswith("cuda"):
                metrics.enable_gpu_memory(0)

        _pair_genomes(config, models, genome, by_assembly)
        for model in models.values():
            _device_windows(model, config.device_windows, config.device_windows_max_mb << 20)
        servicer = VariantEffectServicer(
            models,
            genome=None,  # each model's own (ServedModel.genome, checked by _pair_genomes)
            metrics=metrics,
            executor=executor,
            default_model=config.default_model,
            max_variants=config.max_variants_per_request,
            max_message_bytes=config.max_message_mb * 1024 * 1024,
        )
        # the metrics port first: a gRPC server that never started keeps its port bound
        metrics_port = None
        if config.metrics_port >= 0:
            metrics_http, metrics_port = start_metrics_server(
                metrics.registry, config.metrics_host, config.metrics_port
            )
        # metrics and error mapping outermost: a call refused by auth is counted with its code
        calls = CallInterceptor(
            metrics, services=(SERVICE_NAME, KSERVE_SERVICE_NAME), log_requests=config.log_requests
        )
        lengths = [m.spec.sequence_length for m in models.values()]
        server = grpc.aio.server(
            options=_channel_options(config, lengths), interceptors=[calls, *auth]
        )
        server.add_generic_rpc_handlers((servicer.handler(),))
        kserve = KServeServicer(models)
        kserve.add_to(server)
        health_servicer = _health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflected = (
            SERVICE_NAME,
            KSERVE_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(reflected, server, pool=reflection_pool(reflected))
        address = f"{config.host}:{config.port}"
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not bind gRPC port {config.host}:{config.port}")
        handle = VarfxServer(
            server,
            port,
            metrics_port,
            models,
            health_servicer,
            metrics,
            genome,
            metrics_http,
            executor,
            kserve=kserve,
            tokens=tokens,
        )
        await handle.set_serving(False)
        await server.start()
        health_port = handle.health_port = await start_health_port(health_servicer, config)
        loop = asyncio.get_running_loop()
        for model in models.values():
            await loop.run_in_executor(executor, model.runner.warmup, config.warmup_sizes)
        await handle.set_serving(True)
        log.info(
            "serving %s on %s:%d (metrics: %s)",
            sorted(models),
            config.host,
            port,
            f"{config.metrics_host}:{metrics_port}" if metrics_port is not None else "off",
        )
    except BaseException:
        # a failed start leaves nothing running: stop what was started, then re-raise
        if server is not None:
            await server.stop(0)
        if health_port is not None:
            await health_port.stop(0)
        for model in models.values():
            await model.batcher.stop()
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        executor.shutdown(wait=False)
        for g in [genome, *by_assembly.values()]:
            if g is not None:
                g.close()
        raise
    return handle, port


async def _serve(config: ServerConfig) -> None:
    handle, _port = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, handle.reload_tokens)
    await stop.wait()
    log.info("shutting down: draining in-flight calls (up to %.0f s)", config.grace_s)
    await handle.stop(config.grace_s)
    log.info("stopped")


def serve(config: ServerConfig) -> None:
    """Run a server until SIGTERM or SIGINT, then drain in-flight calls and return."""
    asyncio.run(_serve(config))


class RunningServer:
    """A server on its own event loop in a background thread (see ``start_in_thread``)."""

    def __init__(self, config: ServerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.handle: VarfxServer | None = None
        self._thread = threading.Thread(target=self._run, args=(registry,), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self, registry: CollectorRegistry | None) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.handle, _ = self._loop.run_until_complete(
                create_server(self.config, registry=registry)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    @property
    def port(self) -> int:
        assert self.handle is not None
        return self.handle.port

    @property
    def metrics_port(self) -> int | None:
        assert self.handle is not None
        return self.handle.metrics_port

    @property
    def metrics(self) -> Metrics:
        assert self.handle is not None
        return self.handle.metrics

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self, grace: float | None = 0) -> None:
        if self.handle is not None and self._loop.is_running():
            self.call(self.handle.stop(grace))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self.handle = None

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(
    config: ServerConfig, registry: CollectorRegistry | None = None
) -> RunningServer:
    """Start a server in a background thread; returns once it is SERVING."""
    return RunningServer(config, registry)
