"""Prometheus metrics of the service, on a registry passed in (tests build fresh ones).

Names (stable: dashboards and alert rules in deploy/ use them):

=====================================  =========  ==============================================
varfx_requests_total                   counter    RPCs by method and gRPC status code
varfx_request_duration_seconds         histogram  RPC latency by method
varfx_queue_wait_seconds               histogram  time a window waits before its batch runs
varfx_batch_size                       histogram  windows per ONNX Runtime run
varfx_inference_duration_seconds       histogram  ONNX Runtime run time
varfx_variants_total                   counter    variants answered, by model and status
varfx_sequences_total                  counter    windows run through the model (after dedupe)
varfx_ref_cache_lookups_total          counter    ref predictions looked up in the cache (hit|miss)
varfx_runner_input_bytes_total         counter    bytes handed to the runner per run, by kind:
                                                  tokens (host windows, L each) | rows (window
                                                  descriptions for device windows, 18 each)
varfx_queue_depth                      gauge      windows waiting
varfx_queue_capacity                   gauge      max windows waiting
varfx_inflight_requests                gauge      RPCs in progress
varfx_model_info                       gauge      1 per served model, labels describe it
varfx_gpu_memory_used_bytes            gauge      GPU memory in use (CUDA only, via NVML)
=====================================  =========  ==============================================
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["Metrics", "start_metrics_server"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_BATCH_BUCKETS = tuple(float(1 << i) for i in range(11))  # 1 .. 1024
del GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR  # we register fresh ones per registry


class Metrics:
    """All metric objects of one server, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "varfx_requests", "RPCs by method and gRPC status code", ["method", "code"], registry=r
        )
        self.request_duration = Histogram(
            "varfx_request_duration_seconds",
            "RPC latency in seconds by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "varfx_queue_wait_seconds",
            "Seconds a window waits in the queue before its batch runs",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "varfx_batch_size",
            "Windows (sequences) per ONNX Runtime run",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "varfx_inference_duration_seconds",
            "Seconds per ONNX Runtime run",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ref_cache_lookups = Counter(
            "varfx_ref_cache_lookups",
            "Reference-window predictions looked up in the shared cache, by result (hit|miss)",
            ["model", "result"],
            registry=r,
        )
        self.runner_input_bytes = Counter(
            "varfx_runner_input_bytes",
            "Bytes handed to the model runner, by kind: tokens (host-built windows) or rows "
            "(window descriptions the device builds windows from)",
            ["model", "kind"],
            registry=r,
        )
        self.variants = Counter(
            "varfx_variants",
            "Variants answered, by model and status",
            ["model", "status"],
            registry=r,
        )
        self.sequences = Counter(
            "varfx_sequences",
            "Windows run through the model (after deduplication)",
            ["model"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "varfx_queue_depth",
            "Windows waiting for a batch",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "varfx_queue_capacity",
            "Most windows that may wait",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight = Gauge(
            "varfx_inflight_requests", "RPCs in progress", registry=r, multiprocess_mode="livesum"
        )
        self.model_info = Gauge(
            "varfx_model_info",
            "Served models (value 1)",
            ["model", "version", "device", "sequence_length", "features"],
            registry=r,
            multiprocess_mode="max",
        )
        self.gpu_memory = Gauge(
            "varfx_gpu_memory_used_bytes", "GPU memory in use (NVML)", ["device"], registry=r
        )
        self._nvml: Any = None

    def enable_gpu_memory(self, device_index: int = 0) -> None:
        """Report GPU memory through NVML at each scrape, where pynvml is installed."""
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception:  # NVML missing or no GPU: leave the gauge without samples
            log.info("GPU memory metric unavailable (no pynvml / NVML)")
            return
        self.gpu_memory.labels(device=f"cuda:{device_index}").set_function(
            lambda: float(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        )


def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, int]:
    """Serve ``registry`` on http://host:port/metrics; port 0 picks a free port.

    Returns (server, bound_port); call ``server.shutdown()`` to stop it.
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
