"""``varfx serve``: the gRPC scoring service (stdlib-only at import time)."""

from __future__ import annotations

import argparse
from typing import Any

_FLAGS: list[tuple[str, dict[str, Any]]] = [
    (
        "--model-repo",
        {
            "help": "model repository <repo>/<name>/<version>/model.onnx [VARFX_MODEL_REPO; default: models]"
        },
    ),
    ("--genome", {"help": "reference FASTA, plain or bgzipped with .fai [VARFX_GENOME]"}),
    (
        "--genomes",
        {
            "help": "FASTA by model assembly, e.g. GRCh37=/ref/hg19.fa,GRCh38=/ref/hg38.fa; other models use --genome [VARFX_GENOMES]"
        },
    ),
    (
        "--allow-genome-mismatch",
        {
            "action": "store_true",
            "default": None,
            "help": "serve a model on a genome that contradicts its training genome (assembly, "
            "contig lengths or MD5s) instead of refusing to start; recorded in ListModels and "
            "every manifest [VARFX_ALLOW_GENOME_MISMATCH]",
        },
    ),
    ("--host", {"help": "gRPC listen address [VARFX_HOST; default 0.0.0.0]"}),
    ("--port", {"type": int, "help": "gRPC port, 0 = any free port [VARFX_PORT; default 50051]"}),
    (
        "--metrics-port",
        {
            "type": int,
            "help": "Prometheus port, 0 = any, -1 = off [VARFX_METRICS_PORT; default 9090]",
        },
    ),
    (
        "--metrics-host",
        {
            "help": "Prometheus listen address, separate from --host; the endpoint has no TLS "
            "or auth [VARFX_METRICS_HOST; default 0.0.0.0]"
        },
    ),
    (
        "--device",
        {
            "choices": ["auto", "cpu", "cuda"],
            "help": "where models run [VARFX_DEVICE; default auto]",
        },
    ),
    (
        "--max-batch",
        {"type": int, "help": "most windows per ONNX Runtime run [VARFX_MAX_BATCH; default 256]"},
    ),
    (
        "--max-delay-ms",
        {
            "type": float,
            "help": "longest wait for a batch to fill, ms [VARFX_MAX_DELAY_MS; default 2]",
        },
    ),
    (
        "--max-queue",
        {"type": int, "help": "most windows waiting per model [VARFX_MAX_QUEUE; default 8192]"},
    ),
    (
        "--max-variants-per-request",
        {"type": int, "help": "[VARFX_MAX_VARIANTS_PER_REQUEST; default 10000]"},
    ),
    (
        "--inference-threads",
        {"type": int, "help": "concurrent runs per model [VARFX_INFERENCE_THREADS; default 1]"},
    ),
    (
        "--intra-op-threads",
        {
            "type": int,
            "help": "ONNX Runtime threads per run, 0 = all cores [VARFX_INTRA_OP_THREADS]",
        },
    ),
    (
        "--ort-spinning",
        {
            "action": "store_true",
            "default": None,
            "help": "ONNX Runtime CPU threads busy-wait between runs (off: the cores are shared "
            "with gRPC and the batcher) [VARFX_ORT_SPINNING]",
        },
    ),
    ("--default-model", {"help": "model used when a request names none [VARFX_DEFAULT_MODEL]"}),
    ("--model-versions", {"help": "pinned versions, e.g. name=2,other=1 [VARFX_MODEL_VERSIONS]"}),
    (
        "--warmup-batch-sizes",
        {"help": "comma-separated batch sizes to warm up [VARFX_WARMUP_BATCH_SIZES]"},
    ),
    (
        "--grace-s",
        {
            "type": float,
            "help": "seconds to drain in-flight calls on SIGTERM [VARFX_GRACE_S; default 30]",
        },
    ),
    (
        "--max-connection-age-s",
        {
            "type": float,
            "help": "recycle client connections (0 = never) [VARFX_MAX_CONNECTION_AGE_S]",
        },
    ),
    (
        "--max-message-mb",
        {"type": int, "help": "largest gRPC message, MiB [VARFX_MAX_MESSAGE_MB; default 64]"},
    ),
    (
        "--ref-cache-mb",
        {
            "type": int,
            "default": None,
            "help": "MiB of reference-window predictions shared by all callers (default 256; "
            "0 = off) [VARFX_REF_CACHE_MB]",
        },
    ),
    (
        "--local-recompute",
        {
            "choices": ("auto", "off"),
            "default": None,
            "help": "recompute SNV/MNV alt windows only where the change reaches, on the ref's "
            "feature maps, where a model allows it (default auto) [VARFX_LOCAL_RECOMPUTE]",
        },
    ),
    (
        "--precision",
        {
            "choices": ("auto", "fp32", "fp16"),
            "default": None,
            "help": "serve a model's checked fp16 graph (model.fp16.onnx): auto = on CUDA only "
            "(default), fp16 = everywhere, fp32 = never [VARFX_PRECISION]",
        },
    ),
    (
        "--device-windows",
        {
            "choices": ("auto", "on", "off"),
            "default": None,
            "help": "build ScoreVariants' SNV windows where the model runs, from the genome "
            "kept there: auto = on CUDA only; on = on any device (also the CPU, for tests "
            "and measuring); off (default) = host-built windows [VARFX_DEVICE_WINDOWS]",
        },
    ),
    (
        "--device-windows-max-mb",
        {
            "type": int,
            "default": None,
            "help": "most MiB of genome tokens kept on the device per model (default 4096) "
            "[VARFX_DEVICE_WINDOWS_MAX_MB]",
        },
    ),
    (
        "--malloc-arenas",
        {
            "type": int,
            "default": None,
            "help": "cap glibc malloc arenas so freed memory is reused (default 2; 0 = glibc's "
            "default) [VARFX_MALLOC_ARENAS]",
        },
    ),
    (
        "--workers",
        {
            "type": int,
            "default": None,
            "help": "server processes on the one port, each with its own models and batchers "
            "(default 1) [VARFX_WORKERS]",
        },
    ),
    (
        "--log-requests",
        {
            "action": "store_true",
            "default": None,
            "help": "log one line per RPC: method, status, ms [VARFX_LOG_REQUESTS]",
        },
    ),
    ("--tls-cert", {"help": "PEM certificate chain: the gRPC port speaks TLS [VARFX_TLS_CERT]"}),
    ("--tls-key", {"help": "PEM private key of --tls-cert [VARFX_TLS_KEY]"}),
    (
        "--tls-client-ca",
        {
            "help": "PEM CA bundle: mutual TLS, clients need a certificate it signed [VARFX_TLS_CLIENT_CA]"
        },
    ),
    (
        "--health-port",
        {
            "type": int,
            "help": "plaintext port serving grpc.health.v1 only, for probes that cannot speak "
            "TLS; -1 = off [VARFX_HEALTH_PORT; default -1]",
        },
    ),
    (
        "--auth-tokens-file",
        {
            "help": "bearer tokens, one per line (# comments); every call but health needs one; "
            "re-read on SIGHUP and on change [VARFX_AUTH_TOKENS_FILE]"
        },
    ),
]


def register(subparsers: Any) -> None:
    """Add ``varfx serve`` to the top-level parser."""
    p = subparsers.add_parser(
        "serve",
        help="run the gRPC scoring server",
        description="Serve every model of a Triton-style repository over gRPC (varfx.v1), "
        "with health, reflection and Prometheus metrics. Flags override VARFX_* "
        "environment variables, which override --config.",
    )
    p.add_argument("--config", help="TOML config file (keys as the flags, with underscores)")
    for flag, kwargs in _FLAGS:
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from varfx.server.app import serve
    from varfx.server.config import ConfigError, load_config

    overrides = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _ in _FLAGS
    }
    from varfx.server.errors import VarfxServerError
    from varfx.server.repository import ModelRepositoryError

    try:
        config = load_config(overrides, config_file=args.config)
    except ConfigError as exc:
        raise SystemExit(f"varfx serve: {exc}") from exc
    try:
        if config.workers > 1:
            from varfx.server.workers import serve_workers

            return serve_workers(config)
        serve(config)
    except (ModelRepositoryError, VarfxServerError, OSError, RuntimeError, ValueError) as exc:
        # start-up failures (no models, missing genome, port in use, no CUDA): one clear line
        raise SystemExit(f"varfx serve: cannot start: {exc}") from exc
    return 0
