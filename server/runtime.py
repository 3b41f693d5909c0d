"""ONNX Runtime sessions: execution providers, the model's input adapter, warm-up.

A ``ModelRunner`` takes token windows uint8 [B, L] and returns probabilities float32 [B, F],
whatever the model's input kind (tokens, or one-hot in any channel order) and output kind
(probabilities or logits).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from varfx.core.precision import FP16_FILE, PRECISIONS, fp16_check_problem
from varfx.core.tokens import one_hot
from varfx.server.repository import (
    ModelEntry,
    ModelRepositoryError,
    ModelSpec,
    TensorInfo,
    build_spec,
)

__all__ = [
    "DEFAULT_CUDA_OPTIONS",
    "GraphChoice",
    "ModelRunner",
    "choose_graph",
    "cuda_available",
    "select_providers",
]

log = logging.getLogger(__name__)

# CUDA execution provider settings, chosen from measurements on an H100 (docs/benchmarks.md):
# - EXHAUSTIVE conv algorithm search: on the DeepSEA-size net it ran 29,000 windows/s at batch 256
#   against 22,600 for DEFAULT and 1,500 for HEURISTIC; its cost is a one-off search per input
#   shape (48 ms there), so the runner pads GPU batches up to a few bucket sizes that are all
#   searched during warm-up, before the server reports SERVING.
# - cudnn_conv1d_pad_to_nc1d off: on with HEURISTIC search it asked for a 17-32 GB buffer at
#   batch 256 and failed; off was as fast.
# - kSameAsRequested: the arena grows by what is asked, not by doubling, so memory stays flat.
# - use_tf32 off: TF32 moved probabilities by up to 3e-3 against the CPU; variant effects are
#   small differences, so full fp32 is the default (pass use_tf32=1 to trade accuracy for speed).
DEFAULT_CUDA_OPTIONS: dict[str, Any] = {
    "device_id": 0,
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "cudnn_conv1d_pad_to_nc1d": "0",
    "cudnn_conv_use_max_workspace": "1",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
    "use_tf32": "0",
}


def cuda_available() -> bool:
    """Whether this onnxruntime build has the CUDA execution provider."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def select_providers(
    device: str = "auto", cuda_options: Mapping[str, Any] | None = None
) -> list[Any]:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda")."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu" or (device == "auto" and not cuda_available()):
        return ["CPUExecutionProvider"]
    if not cuda_available():
        raise RuntimeError(
            "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
            f"(available: {ort.get_available_providers()}); install varfx[gpu]"
        )
    opts = {**DEFAULT_CUDA_OPTIONS, **(cuda_options or {})}
    return [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]


@dataclass(frozen=True)
class GraphChoice:
    """Which graph of a model version to serve: its file, "fp32" or "fp16", and why."""

    path: Path
    precision: str
    reason: str


def _embedded_varfx(path: Path) -> dict[str, Any]:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        meta = json.loads(props.get("varfx") or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def fp16_problem(model_path: Path) -> str | None:
    """Why ``model.fp16.onnx`` beside ``model_path`` may not be served, or None: it must exist,
    carry a passing ``fp16_check`` (``varfx.core.precision``) and have been checked against
    this very ``model.onnx`` (its SHA-256)."""
    fp16 = model_path.with_name(FP16_FILE)
    if not fp16.is_file():
        return f"no {fp16}"
    check = _embedded_varfx(fp16).get("fp16_check")
    problem = fp16_check_problem(check)
    if problem is not None:
        return f"{fp16}: {problem}"
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if not isinstance(check, dict) or check.get("reference_sha256") != sha:
        return f"{fp16} was checked against another model.onnx (SHA-256 differs); run varfx fp16"
    return None


def choose_graph(model_path: Path, precision: str, providers: Sequence[Any]) -> GraphChoice:
    """The graph to serve for ``precision`` ("auto", "fp32", "fp16") on ``providers`` (the
    execution providers the session will be given, first = preferred).

    auto: the fp16 graph on CUDA when its recorded check passes (:func:`fp16_problem`), else
    fp32; on the CPU always fp32 (ORT's CPU float16 kernels are not faster than float32).
    fp16: the fp16 graph on any provider, refused (ModelRepositoryError) when it may not be
    served. fp32: ``model.onnx``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    first = providers[0] if providers else "CPUExecutionProvider"
    on_cuda = (first[0] if isinstance(first, tuple) else first) == "CUDAExecutionProvider"
    if precision == "fp32":
        return GraphChoice(model_path, "fp32", "fp32 requested")
    if precision == "auto" and not on_cuda:
        return GraphChoice(model_path, "fp32", "auto on the CPU serves fp32")
    problem = fp16_problem(model_path)
    if problem is None:
        return GraphChoice(
            model_path.with_name(FP16_FILE), "fp16", f"{precision}: fp16 check passed"
        )
    if precision == "fp16":
        raise ModelRepositoryError(f"precision fp16 requested but {problem}")
    return GraphChoice(model_path, "fp32", f"auto on CUDA serves fp32: {problem}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large |x| (float32 in, float32 out)."""
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)


def _tensor_info(args: Sequence[Any]) -> list[TensorInfo]:
    return [TensorInfo(a.name, a.type, tuple(a.shape)) for a in args]


class ModelRunner:
    """One ONNX Runtime session for one model version.

    ``predict`` is thread-safe (ONNX Runtime sessions may be run from several threads).
    ``device`` is where it actually runs: "cpu" or "cuda:<device_id>" (from the session's
    providers, so a CUDA request that fell back to the CPU shows as "cpu" under ``device="auto"``).
    """

    def __init__(
        self,
        entry: ModelEntry,
        device: str = "auto",
        *,
        intra_op_threads: int = 0,
        spinning: bool = False,
        cuda_options: Mapping[str, Any] | None = None,
        precision: str = "auto",
    ) -> None:
        if device in ("auto", "cuda") and cuda_available():
            try:  # onnxruntime-gpu >= 1.19 can load CUDA/cuDNN from the nvidia-* wheels
                ort.preload_dlls()
            except Exception:  # pragma: no cover - depends on the GPU install
                log.debug("onnxruntime.preload_dlls failed", exc_info=True)
        providers = select_providers(device, cuda_options)
        choice = choose_graph(entry.path, precision, providers)
        self.precision = choice.precision  # "fp32" or "fp16": the graph served (ListModels)
        self.graph_path = choice.path
        log.info(
            "model %s: %s graph %s (%s)", entry.name, choice.precision, choice.path, choice.reason
        )
        # genome windows built by ONNX Runtime where the model runs (server/device_windows.py)
        self.device_windows: Any = None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        # No busy-waiting between runs unless asked: the batcher's threads, gRPC and window
        # building share the cores; with spinning on, a small model ran 2.4x slower on 2 shared
        # cores (bench/).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(
                str(choice.path), sess_options=opts, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise ModelRepositoryError(
                f"{choice.path}: ONNX Runtime cannot load the model: {exc}"
            ) from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get("varfx")
        self.spec: ModelSpec = build_spec(
            entry,
            _tensor_info(self.session.get_inputs()),
            _tensor_info(self.session.get_outputs()),
            meta,
        )
        used = self.session.get_providers()
        self.device = "cpu"
        if used and used[0] == "CUDAExecutionProvider":
            cuda = self.session.get_provider_options().get("CUDAExecutionProvider", {})
            self.device = f"cuda:{cuda.get('device_id', '0')}"
        if device == "cuda" and not self.device.startswith("cuda"):
            raise RuntimeError(
                f"model {entry.name!r}: CUDA requested but the session runs on {used}"
            )
        self._logits = self.spec.output == "logits"
        # GPU batches are padded up to these sizes (set by warmup) so that cuDNN's algorithm
        # search runs once per bucket, at warm-up, never on a caller's request.
        self._buckets: tuple[int, ...] = ()

    def predict(self, tokens: np.ndarray) -> np.ndarray:
        """Probabilities for token windows.

        Args:
            tokens: uint8 [B, L] (A=0, C=1, G=2, T=3, N=4), L = spec.sequence_length.

        Returns:
            float32 [B, F] probabilities (sigmoid applied when the model returns logits).
        """
        spec = self.spec
        if tokens.ndim != 2 or tokens.shape[1] != spec.sequence_length:
            raise ValueError(f"expected tokens [B, {spec.sequence_length}], got {tokens.shape}")
        n = len(tokens)
        bucket = next((b for b in self._buckets if b >= n), n)
        if bucket > n:
            tokens = np.concatenate(
                [tokens, np.full((bucket - n, tokens.shape[1]), 4, dtype=np.uint8)]
            )
        if spec.input_kind == "tokens":
            feed: np.ndarray = np.ascontiguousarray(tokens, dtype=np.uint8)
        else:
            feed = one_hot(tokens, spec.alphabet, spec.n_value)
        (out,) = self.session.run([spec.output_name], {spec.input_name: feed})
        out = np.asarray(out, dtype=np.float32)[:n]
        if out.shape != (n, len(spec.features)):
            raise RuntimeError(
                f"model {spec.name!r} v{spec.version} returned shape {list(out.shape)} for"
                f" {n} windows; its metadata names {len(spec.features)} features"
            )
        if self._logits:
            out = _sigmoid(out)
        return out

    def attach_device_windows(
        self, genome: Any, contigs: Sequence[str] | None, max_bytes: int
    ) -> None:
        """Keep ``genome`` (the listed contigs) where this model runs, for :meth:`predict_rows`
        and :meth:`predict_mixed` (server/device_windows.py; token-input models only)."""
        from varfx.server.device_windows import DeviceWindows, DeviceWindowsError

        if self.spec.input_kind != "tokens":
            raise DeviceWindowsError(f"model {self.spec.name!r} takes one-hot input, not tokens")
        cuda = self.device.startswith("cuda")
        device_id = int(self.device.split(":")[1]) if cuda else 0
        providers: list[Any] = ["CPUExecutionProvider"]
        if cuda:  # the model's GPU; default CUDA options otherwise (a gather needs no tuning)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        self.device_windows = DeviceWindows(
            genome,
            self.spec.sequence_length,
            contigs=contigs,
            providers=providers,
            device_id=device_id,
            max_bytes=max_bytes,
        )

    def predict_rows(self, rows: Any) -> np.ndarray:
        """Probabilities float32 [R, F] of windows described by ``rows`` (a
        ``device_windows.WindowRows``), built where the model runs and fed to it there (IO
        binding: on CUDA the windows never leave the GPU)."""
        return self.predict_mixed(None, rows)

    def predict_mixed(self, tokens: np.ndarray | None, rows: Any) -> np.ndarray:
        """Probabilities float32 [H + R, F] of host windows ``tokens`` uint8 [H, L] (or None)
        then the R windows described by ``rows``, in one model run: the gather graph builds
        the described windows after the host ones where the model runs (the host ones are
        copied there, the described ones are 18 bytes each) and the model reads them there."""
        from varfx.server.device_windows import WindowRows

        dw = self.device_windows
        if dw is None:
            raise RuntimeError(f"model {self.spec.name!r} has no device windows")
        length = self.spec.sequence_length
        if tokens is not None and (tokens.ndim != 2 or tokens.shape[1] != length):
            raise ValueError(f"expected tokens [B, {length}], got {tokens.shape}")
        h = 0 if tokens is None else len(tokens)
        n = h + len(rows)
        bucket = next((b for b in self._buckets if b >= n), n)
        if bucket > n:  # padding rows read the leading run of N tokens
            pad = bucket - n
            rows = WindowRows(
                np.concatenate([rows.starts, np.zeros(pad, np.int64)]),
                np.concatenate([rows.alt_pos, np.full(pad, -1, np.int64)]),
                np.concatenate([rows.alt_tok, np.zeros(pad, np.uint8)]),
                np.concatenate([rows.rc, np.zeros(pad, bool)]),
            )
        windows = dw.bind(rows, tokens)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.spec.input_name, windows)
        binding.bind_output(self.spec.output_name)  # to the host: [H + R, F] float32
        self.session.run_with_iobinding(binding)
        out = np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)[:n]
        if out.shape != (n, len(self.spec.features)):
            raise RuntimeError(
                f"model {self.spec.name!r} v{self.spec.version} returned shape {list(out.shape)}"
                f" for {n} windows; its metadata names {len(self.spec.features)} features"
            )
        return _sigmoid(out) if self._logits else out

    def warmup(self, batch_sizes: Sequence[int]) -> None:
        """Run each batch size once, so that no caller pays for first-shape setup.

        On the GPU these sizes also become the buckets every batch is padded up to.
        """
        rng = np.random.default_rng(0)
        if self.device.startswith("cuda"):
            self._buckets = ()
        for b in batch_sizes:
            self.predict(rng.integers(0, 4, size=(b, self.spec.sequence_length), dtype=np.uint8))
        if self.device_windows is not None:  # the gather graph's shapes, and the bound path
            from varfx.server.device_windows import WindowRows

            for b in batch_sizes:
                at = np.full(b, self.device_windows.length, np.int64)  # the first contig
                self.predict_rows(WindowRows(at, np.full(b, -1), np.zeros(b, np.uint8),
                                             np.zeros(b, bool)))  # fmt: skip
        if self.device.startswith("cuda"):
            self._buckets = tuple(sorted(set(batch_sizes)))
