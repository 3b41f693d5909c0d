"""Triton model configuration (``config.pbtxt``) for a model of a varfx repository, so that one
repository serves from ``varfx serve`` or from Triton Inference Server's ONNX Runtime backend.

Layout (Triton's): ``<repo>/<name>/config.pbtxt`` beside the version folders
``<repo>/<name>/<version>/model.onnx``. The configuration is read from the ONNX graphs, never
guessed: platform ``onnxruntime_onnx``, the graph's input and output names and element types,
their dimensions without the (dynamic) batch dimension, ``max_batch_size`` and
``dynamic_batching`` with varfx serve's defaults (256 windows, 2 ms). One configuration serves
every version of a model, so all versions must have the same inputs and outputs.

``varfx export`` writes it after each export; for existing models::

    python -m varfx.training.triton_config models/sim-chromatin models/brain-hg19
    python -m varfx.training.triton_config --check models/*   # exit 1 if one is missing/stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from varfx.training.errors import ExportError

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE_DELAY_US",
    "PLATFORM",
    "TritonConfigError",
    "TritonTensor",
    "graph_tensors",
    "main",
    "triton_config",
    "write_triton_config",
]

CONFIG_NAME = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"
# varfx serve's defaults (ServerConfig.max_batch, max_delay_ms; a test keeps them equal)
DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_QUEUE_DELAY_US = 2000
_VERSION_RE = re.compile(r"^[0-9]+$")
# ONNX TensorProto element type -> Triton DataType (model_config.proto)
_DATA_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


class TritonConfigError(ExportError):
    """No Triton configuration can describe the model; the message names the file and tensor."""


@dataclass(frozen=True)
class TritonTensor:
    """A graph input or output as Triton sees it: dims exclude the batch dimension (-1: any)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def graph_tensors(path: Path) -> tuple[list[TritonTensor], list[TritonTensor]]:
    """The (inputs, outputs) of an ONNX file, batch dimension removed.

    Raises:
        TritonConfigError: a tensor is not a tensor, has an element type Triton lacks, or has a
            fixed first dimension (Triton batches along a dynamic first dimension).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def convert(values: Sequence[onnx.ValueInfoProto], kind: str) -> list[TritonTensor]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            if not value.type.HasField("tensor_type"):
                raise TritonConfigError(f"{path}: {kind} {value.name!r} is not a tensor")
            tensor = value.type.tensor_type
            data_type = _DATA_TYPES.get(tensor.elem_type)
            if data_type is None:
                raise TritonConfigError(
                    f"{path}: {kind} {value.name!r} has ONNX element type {tensor.elem_type},"
                    " which Triton has no data type for"
                )
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            if not dims or dims[0] != -1:
                raise TritonConfigError(
                    f"{path}: {kind} {value.name!r} has shape {dims}; its first (batch)"
                    " dimension must be dynamic"
                )
            out.append(TritonTensor(value.name, data_type, tuple(dims[1:])))
        return out

    return convert(model.graph.input, "input"), convert(model.graph.output, "output")


def _versions(model_dir: Path) -> list[Path]:
    found = sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)),
        key=lambda p: int(p.name),
    )
    files = [p / "model.onnx" for p in found if (p / "model.onnx").is_file()]
    if not files:
        raise TritonConfigError(f"{model_dir}: no <version>/model.onnx")
    return files


def _quote(text: str) -> str:
    if not text.isprintable():
        raise TritonConfigError(f"tensor name {text!r} has unprintable characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(key: str, tensors: Sequence[TritonTensor]) -> list[str]:
    lines = [f"{key} ["]
    for i, t in enumerate(tensors):
        lines += [
            "  {",
            f"    name: {_quote(t.name)}",
            f"    data_type: {t.data_type}",
            f"    dims: [ {', '.join(str(d) for d in t.dims)} ]",
            "  }" + ("," if i < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def triton_config(
    model_dir: str | Path,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
) -> str:
    """The ``config.pbtxt`` text for ``<repo>/<name>`` (protobuf text format of Triton's
    ``inference.ModelConfig``).

    Raises:
        TritonConfigError: no version, a graph Triton cannot batch, or versions whose inputs or
            outputs differ (one configuration serves all versions).
    """
    model_dir = Path(model_dir)
    if max_batch_size < 1 or max_queue_delay_us < 0:
        raise TritonConfigError(
            f"max_batch_size must be >= 1 and max_queue_delay_us >= 0, got {max_batch_size}"
            f" and {max_queue_delay_us}"
        )
    files = _versions(model_dir)
    newest = graph_tensors(files[-1])
    for other in files[:-1]:
        if graph_tensors(other) != newest:
            raise TritonConfigError(
                f"{other} and {files[-1]} have different inputs or outputs; Triton serves all"
                f" versions of {model_dir.name!r} with one {CONFIG_NAME}: give one of them"
                " another model name"
            )
    inputs, outputs = newest
    lines = [
        f"# Triton model configuration of {model_dir.name} (versions"
        f" {', '.join(f.parent.name for f in files)}), read from its ONNX graphs by varfx",
        "# (python -m varfx.training.triton_config); varfx serve ignores this file.",
        f"name: {_quote(model_dir.name)}",
        f"platform: {_quote(PLATFORM)}",
        f"max_batch_size: {max_batch_size}",
        *_tensor_block("input", inputs),
        *_tensor_block("output", outputs),
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_triton_config(model_dir: str | Path, **options: int) -> Path:
    """Write ``<model_dir>/config.pbtxt`` (atomically; see :func:`triton_config`)."""
    from varfx.training.export import _write_atomic

    target = Path(model_dir) / CONFIG_NAME
    _write_atomic(target, triton_config(model_dir, **options).encode())
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m varfx.training.triton_config [--check] MODEL_DIR...``."""
    parser = argparse.ArgumentParser(
        prog="python -m varfx.training.triton_config",
        description="Write <repo>/<name>/config.pbtxt (Triton's ONNX Runtime backend) for models"
        " of a varfx repository.",
    )
    parser.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR")
    parser.add_argument("--check", action="store_true", help="fail if a file is missing or stale")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_MAX_QUEUE_DELAY_US)
    args = parser.parse_args(argv)
    options = {
        "max_batch_size": args.max_batch_size,
        "max_queue_delay_us": args.max_queue_delay_us,
    }
    stale = []
    try:
        for model_dir in args.model_dirs:
            if args.check:
                target = model_dir / CONFIG_NAME
                fresh = triton_config(model_dir, **options)
                if not target.is_file() or target.read_text() != fresh:
                    stale.append(str(target))
            else:
                sys.stdout.write(f"wrote {write_triton_config(model_dir, **options)}\n")
    except (TritonConfigError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if stale:
        sys.stderr.write(f"missing or stale: {', '.join(stale)}; run without --check\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
