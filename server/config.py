"""Server configuration: typed, validated plain data from defaults, a TOML file, env and flags.

Precedence: command-line flags > ``VARFX_*`` environment variables > config file > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "ServerConfig", "load_config"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``varfx serve`` needs.

    Attributes:
        model_repo: Triton-style model repository ``<repo>/<name>/<version>/model.onnx``.
        genome: reference FASTA (plain, or bgzipped with .fai/.gzi); None serves only sequences.
        host, port: gRPC listen address; port 0 picks a free port.
        metrics_host, metrics_port: Prometheus HTTP listen address, separate from the gRPC
            one (the endpoint has no TLS or auth: bind it to 127.0.0.1 or a private interface
            that only the scraper reaches); port 0 picks a free port, -1 disables the endpoint.
        device: "auto" (CUDA when onnxruntime has it), "cpu" or "cuda".
        max_batch: most windows (sequences) per ONNX Runtime run.
        max_delay_ms: longest a window waits for a batch to fill, in milliseconds.
        max_queue: most windows waiting per model; beyond it calls get RESOURCE_EXHAUSTED.
        max_variants_per_request: larger requests get INVALID_ARGUMENT.
        inference_threads: concurrent ONNX Runtime runs per model.
        intra_op_threads: ONNX Runtime threads per run (0 = one per core).
        ort_spinning: let ONNX Runtime's CPU threads busy-wait between runs. Off by default: the
            batcher, gRPC and window building share the cores, and spinning threads take them
            away. On a node whose cores this server has to itself it can be worth a few percent
            of throughput (measure with bench/).
        default_model: served when a request names none (empty: the only model).
        model_versions: pinned versions by model name.
        genomes: reference FASTA by assembly (a model's metadata ``assembly``); models whose
            assembly is not listed use ``genome``. One server can so serve GRCh37 and GRCh38
            models side by side. Every key must be the assembly of a served model.
        allow_genome_mismatch: pair models with genomes whose identity (assembly name, contig
            lengths or MD5s) contradicts the model's recorded training genome, instead of
            refusing to start; ListModels and every manifest then say so.
        warmup_batch_sizes: batch sizes run before SERVING (empty: powers of two to max_batch).
        grace_s: seconds in-flight calls get to finish on SIGTERM.
        max_connection_age_s: close client connections after this long, so that round-robin
            clients spread to new replicas (0 = never).
        max_message_mb: largest gRPC message, in MiB.
        log_requests: log one line per RPC (method, status code, milliseconds).
        tls_cert, tls_key: PEM certificate chain and private key; both set: the gRPC port
            speaks TLS only (None: plaintext).
        tls_client_ca: PEM CA bundle; set: mutual TLS, every client must present a certificate
            signed by one of these CAs (needs tls_cert/tls_key).
        auth_tokens_file: file of bearer tokens, one per line (blank lines and ``#`` comments
            ignored); set: every call except health checks (grpc.health.v1, KServe
            ServerLive/ServerReady) needs ``authorization: Bearer <token>`` with one of them.
            Re-read on SIGHUP and when its mtime, size or inode change.
        health_port: a second, plaintext port on ``host`` serving grpc.health.v1 only, for
            probes that cannot speak TLS (Kubernetes' gRPC probes); -1 (default) = off,
            0 = any free port.
        workers: server processes on the one gRPC port (SO_REUSEPORT), each with its own
            models, sessions and batchers; the parent serves all their metrics on
            ``metrics_port`` (see ``server/workers.py``). 1 (default): one process, which is
            what one GPU or a small CPU node wants; more where one Python process cannot keep
            the cores or the device busy (measure with bench/server_overhead.py).
        reuse_port: bind the gRPC port with SO_REUSEPORT (set for each worker by ``workers``).
        ref_cache_mb: MiB of reference-window predictions kept for all callers
            (``server/refcache.py``): a site scored again (another ALT, a re-scored VCF, a
            nearby caller) runs its ref window once; 0 = off.
        local_recompute: "auto" (default): an SNV/MNV alt window of a model whose graph allows it
            (``server/local_compute.py``, checked at load) is recomputed only where its changed
            bases reach, on the reference's feature maps; "off": two full passes.
        precision: "auto" (default): a model's ``model.fp16.onnx`` (float16 arithmetic) on CUDA
            when its recorded export check passes (``varfx.core.precision``), else fp32; on
            the CPU fp32; "fp32": always ``model.onnx``; "fp16": the fp16 graph on any device
            (refused where it is missing or its check fails).
        device_windows: where ScoreVariants builds the windows of plain in-genome SNVs.
            "auto": on CUDA, the genome of a token-input model is kept on the GPU
            (``server/device_windows.py``) and such SNVs go to the batcher as 18-byte row
            descriptions from which a gather graph builds the windows on the device, fed to the
            model there (IO binding); "on": the same on any device (on the CPU it is no faster:
            for tests and measurements); "off" (default until measured on a GPU): host-built
            windows. Indels, MNVs, variants on contigs not laid out, variants with a non-OK
            status, ScoreSequences, ExplainVariant and KServe keep host windows; statuses and
            messages are the same either way. A model with device windows runs full passes
            (local recomputation is CPU-only and needs host windows: it is dropped for that
            model); the reference cache works as with host windows (a hit skips its ref row).
        device_windows_max_mb: the most MiB of genome tokens one model keeps on the device
            (only the contigs it serves); a larger genome is not loaded (a warning says so).
        malloc_arenas: cap glibc's malloc arenas (``server/memory.py``): memory freed by one
            thread is reused by the others instead of staying resident; 0 = glibc's default.
    """

    model_repo: Path = Path("models")
    genome: Path | None = None
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9090
    metrics_host: str = "0.0.0.0"
    device: str = "auto"
    max_batch: int = 256
    max_delay_ms: float = 2.0
    max_queue: int = 8192
    max_variants_per_request: int = 10000
    inference_threads: int = 1
    intra_op_threads: int = 0
    ort_spinning: bool = False
    default_model: str = ""
    model_versions: Mapping[str, int] = field(default_factory=dict)
    genomes: Mapping[str, Path] = field(default_factory=dict)
    allow_genome_mismatch: bool = False
    warmup_batch_sizes: tuple[int, ...] = ()
    grace_s: float = 30.0
    max_connection_age_s: float = 0.0
    max_message_mb: int = 64
    log_requests: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens_file: Path | None = None
    health_port: int = -1
    workers: int = 1
    reuse_port: bool = False
    malloc_arenas: int = 2
    ref_cache_mb: int = 256
    local_recompute: str = "auto"
    precision: str = "auto"
    device_windows: str = "off"
    device_windows_max_mb: int = 4096

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{key}={getattr(self, key)!r}: {why}")

        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", "must be auto, cpu or cuda")
        if not 0 <= self.port <= 65535:
            raise bad("port", "must be 0..65535")
        for key in ("metrics_port", "health_port"):
            if not -1 <= getattr(self, key) <= 65535:
                raise bad(key, "must be -1 (off), 0 (any) or a port")
        for key in (
            "max_batch",
            "max_queue",
            "max_variants_per_request",
            "inference_threads",
            "workers",
        ):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1")
        if self.max_batch < 2:
            raise bad("max_batch", "must be >= 2 (a variant needs a ref and an alt window)")
        for key in ("max_delay_ms", "grace_s", "max_connection_age_s"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.max_message_mb < 1:
            raise bad("max_message_mb", "must be >= 1")
        if self.intra_op_threads < 0:
            raise bad("intra_op_threads", "must be >= 0")
        if self.ref_cache_mb < 0:
            raise bad("ref_cache_mb", "must be >= 0 (0 = off)")
        if self.local_recompute not in ("auto", "off"):
            raise bad("local_recompute", "must be auto or off")
        if self.precision not in ("auto", "fp32", "fp16"):
            raise bad("precision", "must be auto, fp32 or fp16")
        if self.device_windows not in ("auto", "on", "off"):
            raise bad("device_windows", "must be auto, on or off")
        if self.device_windows_max_mb < 1:
            raise bad("device_windows_max_mb", "must be >= 1")
        if self.malloc_arenas < 0:
            raise bad("malloc_arenas", "must be >= 0 (0 = glibc's default)")
        if any(int(v) < 1 for v in self.model_versions.values()):
            raise bad("model_versions", "versions are integers >= 1")
        if any(b < 1 or b > self.max_batch for b in self.warmup_batch_sizes):
            raise bad("warmup_batch_sizes", f"each must be 1..max_batch ({self.max_batch})")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise bad(
                "tls_cert" if self.tls_key is None else "tls_key",
                "tls_cert and tls_key must be given together",
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise bad("tls_client_ca", "mutual TLS needs server TLS too (tls_cert and tls_key)")

    @property
    def warmup_sizes(self) -> tuple[int, ...]:
        """Batch sizes to warm up: the configured ones, or powers of two up to max_batch."""
        if self.warmup_batch_sizes:
            return self.warmup_batch_sizes
        sizes = [1 << i for i in range(self.max_batch.bit_length()) if 1 << i <= self.max_batch]
        if sizes[-1] != self.max_batch:
            sizes.append(self.max_batch)
        return tuple(sizes)


_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}
_OPTIONAL_PATHS = frozenset({"genome", "tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"})


def _coerce(key: str, value: Any) -> Any:
    kind = str(_FIELDS[key].type)
    try:
        if key in _OPTIONAL_PATHS:
            return None if value in (None, "") else Path(value).expanduser()
        if key == "model_repo":
            return Path(value).expanduser()
        if key == "genomes":
            if isinstance(value, str):  # "GRCh37=/ref/hg19.fa,GRCh38=/ref/hg38.fa"
                pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
                if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
                    raise ValueError("expected ASSEMBLY=FASTA[,ASSEMBLY=FASTA...]")
                return {k.strip(): Path(v.strip()).expanduser() for k, v in pairs}
            return {str(k): Path(v).expanduser() for k, v in dict(value).items()}
        if key == "model_versions":
            if isinstance(value, str):  # "name=3,other=1"
                pairs = [p.split("=", 1) for p in value.split(",") if p]
                return {k.strip(): int(v) for k, v in pairs}
            return {str(k): int(v) for k, v in dict(value).items()}
        if key == "warmup_batch_sizes":
            if isinstance(value, str):
                return tuple(int(v) for v in value.split(",") if v.strip())
            return tuple(int(v) for v in value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true/false, 1/0, yes/no or on/off")
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}={value!r}: {exc}") from exc


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Merge defaults, a TOML config file (keys as in ServerConfig, optionally under [server]),
    ``VARFX_<KEY>`` environment variables and ``overrides`` (None values are ignored)."""
    values: dict[str, Any] = {}
    env = os.environ if environ is None else environ
    path = config_file or env.get("VARFX_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from exc
        data = data.get("server", data)
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"config file {str(path)!r}: unknown keys {unknown}")
        values.update(data)
    for key in _FIELDS:
        env_value = env.get(f"VARFX_{key.upper()}")
        if env_value is not None:
            values[key] = env_value
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = value
    return ServerConfig(**{k: _coerce(k, v) for k, v in values.items()})
