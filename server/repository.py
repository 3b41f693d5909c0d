"""The model repository (Triton layout) and the ONNX model contract.

Layout: ``<repo>/<model-name>/<version>/model.onnx`` (+ optional ``model.json`` sidecar); the highest
version is served unless pinned. Metadata lives in the ONNX ``metadata_props`` under key ``varfx``
(JSON), or in the sidecar, which wins key by key.

The metadata's rules are ``varfx.core.contract.ModelContract``; checked here: one input, either
uint8 tokens [batch, L] or float32 one-hot [batch, 4, L] whose L matches the metadata, a dynamic
batch dimension, and one output float32 [batch, F] with F the number of features.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from varfx.core.contract import ContractError, ModelContract

__all__ = [
    "ModelEntry",
    "ModelRepositoryError",
    "ModelSpec",
    "TensorInfo",
    "build_spec",
    "scan_repository",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_RE = re.compile(r"^[0-9]+$")


class ModelRepositoryError(Exception):
    """The repository or a model in it breaks the contract; the message names file and field."""


@dataclass(frozen=True)
class ModelEntry:
    """A model found in the repository: the version to serve and every version present."""

    name: str
    version: int
    versions: tuple[int, ...]
    path: Path  # .../<name>/<version>/model.onnx


@dataclass(frozen=True)
class TensorInfo:
    """An ONNX graph input or output: name, element type ("tensor(uint8)", ...) and shape
    (ints for fixed dimensions, str/None for symbolic ones)."""

    name: str
    type: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A served model: where it is, what it takes and what it returns."""

    name: str
    version: int
    versions: tuple[int, ...]
    path: Path
    contract: ModelContract
    input_kind: Literal["tokens", "onehot"]
    input_name: str
    output_name: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return self.contract.features

    @property
    def sequence_length(self) -> int:
        return self.contract.sequence_length

    @property
    def alphabet(self) -> str:
        return self.contract.alphabet

    @property
    def n_value(self) -> float:
        return self.contract.n_value

    @property
    def output(self) -> Literal["probabilities", "logits"]:
        return self.contract.output

    @property
    def assembly(self) -> str:
        return self.contract.assembly


def scan_repository(root: Path, pins: Mapping[str, int] | None = None) -> list[ModelEntry]:
    """Find every model in ``root``; raise ModelRepositoryError when there is none or a pin is
    missing."""
    root = Path(root)
    pins = dict(pins or {})
    if not root.is_dir():
        raise ModelRepositoryError(f"model repository {str(root)!r} is not a directory")
    entries = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] != "."):
        dirs: dict[int, Path] = {}
        for v in sorted(model_dir.iterdir()):
            if v.is_dir() and _VERSION_RE.match(v.name) and (v / "model.onnx").is_file():
                if int(v.name) in dirs:
                    raise ModelRepositoryError(
                        f"model {model_dir.name!r}: version directories {dirs[int(v.name)].name!r}"
                        f" and {v.name!r} are the same version {int(v.name)}"
                    )
                dirs[int(v.name)] = v
        if not dirs:
            continue
        if not _NAME_RE.match(model_dir.name):
            raise ModelRepositoryError(f"model name {model_dir.name!r} has invalid characters")
        versions = sorted(dirs)
        version = pins.pop(model_dir.name, versions[-1])
        if version not in dirs:
            raise ModelRepositoryError(
                f"model {model_dir.name!r}: pinned version {version} not found (have {versions})"
            )
        entries.append(
            ModelEntry(model_dir.name, version, tuple(versions), dirs[version] / "model.onnx")
        )
    if pins:
        raise ModelRepositoryError(f"pinned models not in repository {str(root)!r}: {sorted(pins)}")
    if not entries:
        raise ModelRepositoryError(
            f"no models in {str(root)!r} (expected <repo>/<name>/<version>/model.onnx)"
        )
    return entries


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelRepositoryError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelRepositoryError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _metadata(entry: ModelEntry, embedded: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if embedded:
        meta.update(_json_object(embedded, f"{entry.path}: metadata 'varfx'"))
    sidecar = entry.path.with_name("model.json")
    if sidecar.is_file():
        meta.update(_json_object(sidecar.read_text(), str(sidecar)))
    return meta


def build_spec(
    entry: ModelEntry,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    embedded_metadata: str | None,
) -> ModelSpec:
    """Check a model's graph and metadata against the contract and describe it."""
    where = str(entry.path)
    meta = _metadata(entry, embedded_metadata)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelRepositoryError(
            f"{where}: expected one input and one output, got {len(inputs)} and {len(outputs)}"
        )
    inp, out = inputs[0], outputs[0]
    try:
        contract = ModelContract.from_metadata(meta)
    except ContractError as exc:
        raise ModelRepositoryError(f"{where}: {exc}") from None
    features, length = contract.features, contract.sequence_length

    if inp.type == "tensor(uint8)" and len(inp.shape) == 2:
        kind: Literal["tokens", "onehot"] = "tokens"
        seq_dim = inp.shape[1]
    elif inp.type == "tensor(float)" and len(inp.shape) == 3 and inp.shape[1] == 4:
        kind = "onehot"
        seq_dim = inp.shape[2]
    else:
        raise ModelRepositoryError(
            f"{where}: input {inp.name!r} is {inp.type} {list(inp.shape)}; expected uint8 [batch, L]"
            " or float32 [batch, 4, L]"
        )
    if isinstance(seq_dim, int) and seq_dim != length:
        raise ModelRepositoryError(
            f"{where}: input length {seq_dim} differs from metadata sequence_length {length}"
        )
    if isinstance(inp.shape[0], int):
        raise ModelRepositoryError(
            f"{where}: input batch dimension must be dynamic, got {inp.shape[0]!r}"
        )
    if out.type != "tensor(float)" or len(out.shape) != 2:
        raise ModelRepositoryError(
            f"{where}: output {out.name!r} is {out.type} {list(out.shape)}; expected float32 [batch, F]"
        )
    if isinstance(out.shape[1], int) and out.shape[1] != len(features):
        raise ModelRepositoryError(
            f"{where}: output has {out.shape[1]} features but metadata names {len(features)}"
        )
    return ModelSpec(
        name=entry.name,
        version=entry.version,
        versions=entry.versions,
        path=entry.path,
        contract=contract,
        input_kind=kind,
        input_name=inp.name,
        output_name=out.name,
        metadata=meta,
    )
