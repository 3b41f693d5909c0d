"""Benchmark networks: torch modules (token input, one-hot inside) and their ONNX export.

The Basset-size (600 bp, 164 features) and DeepSEA-size (1000 bp, 919 features) networks come from
``varfx.training.models`` when that module offers them; otherwise from the equivalent published
layer stacks below. Weights are random (seeded): speed does not depend on them.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "BenchModel",
    "build_network",
    "export_onnx",
    "layout_pair",
    "prepare_model",
]

DEFAULT_MODEL = Path("models/sim-chromatin/1/model.onnx")
# key -> (architecture, window length L, features F)
SIZES = {
    "basset": ("basset", 600, 164),
    "deepsea": ("deepsea", 1000, 919),
    "default": ("small", 1000, 10),
    "tiny": ("small", 200, 4),  # smoke tests
}


@dataclass(frozen=True)
class BenchModel:
    """One benchmarked model: where its ONNX lives and (if known) the same network in torch."""

    key: str  # "default" | "basset" | "deepsea"
    name: str  # model name in the repository
    path: Path  # <repo>/<name>/<version>/model.onnx
    length: int
    n_features: int
    torch_module: nn.Module | None  # token input uint8 [B, L] -> probabilities float32 [B, F]
    source: str  # where the network came from, for the report


class TokenOneHot(nn.Module):
    """uint8 tokens [B, L] (A0 C1 G2 T3 N4) -> float32 one-hot [B, 4, L], N = 0.25 each."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.cat([torch.eye(4), torch.full((1, 4), 0.25)])
        self.table: torch.Tensor
        self.register_buffer("table", table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens.long()].transpose(1, 2)


class DeepSEA(nn.Module):
    """DeepSEA (Zhou & Troyanskaya 2015): 3 conv (320/480/960, k=8) + max-pool 4, FC 925, F."""

    def __init__(self, length: int = 1000, n_features: int = 919) -> None:
        super().__init__()
        self.onehot = TokenOneHot()
        self.conv = nn.Sequential(
            nn.Conv1d(4, 320, 8), nn.ReLU(), nn.MaxPool1d(4), nn.Dropout(0.2),
            nn.Conv1d(320, 480, 8), nn.ReLU(), nn.MaxPool1d(4), nn.Dropout(0.2),
            nn.Conv1d(480, 960, 8), nn.ReLU(), nn.Dropout(0.5),
        )  # fmt: skip
        n = ((length - 7) // 4 - 7) // 4 - 7
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(960 * n, 925), nn.ReLU())
        self.out = nn.Linear(925, n_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.head(self.conv(self.onehot(tokens))))


class Basset(nn.Module):
    """Basset (Kelley et al. 2016): conv 300k19/200k11/200k7 with BN + pools 3/4/4, FC 1000x2, F."""

    def __init__(self, length: int = 600, n_features: int = 164) -> None:
        super().__init__()
        self.onehot = TokenOneHot()
        self.conv = nn.Sequential(
            nn.Conv1d(4, 300, 19, padding=9), nn.BatchNorm1d(300), nn.ReLU(), nn.MaxPool1d(3),
            nn.Conv1d(300, 200, 11, padding=5), nn.BatchNorm1d(200), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(200, 200, 7, padding=3), nn.BatchNorm1d(200), nn.ReLU(), nn.MaxPool1d(4),
        )  # fmt: skip
        n = length // 3 // 4 // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(200 * n, 1000), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(1000, 1000), nn.ReLU(), nn.Dropout(0.3),
        )  # fmt: skip
        self.out = nn.Linear(1000, n_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.head(self.conv(self.onehot(tokens))))


class SmallCNN(nn.Module):
    """Stand-in for the default model until models/sim-chromatin exists: 2 conv (64, k=9) +
    pools, global max pool, linear F."""

    def __init__(self, length: int = 1000, n_features: int = 10) -> None:
        super().__init__()
        self.onehot = TokenOneHot()
        self.conv = nn.Sequential(
            nn.Conv1d(4, 64, 9, padding=4), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(64, 64, 9, padding=4), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
        )  # fmt: skip
        self.out = nn.Linear(64, n_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(self.onehot(tokens)))


class WithSigmoid(nn.Module):
    """Logits model -> probabilities (what the ONNX contract serves)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(tokens))


def _from_training(arch: str, length: int, n_features: int) -> nn.Module | None:
    """The architecture from varfx.training.models (its published sizes), if that module exists."""
    try:
        mod: Any = importlib.import_module("varfx.training.models")
    except ImportError:
        return None
    try:
        cfg = mod.ModelConfig(arch=arch, sequence_length=length, n_features=n_features)
        net = mod.build_model(cfg)
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("varfx.training.models cannot build %r (%s): using bench's own", arch, exc)
        return None
    return net if isinstance(net, nn.Module) else None


def _from_architecture(config: dict[str, Any]) -> nn.Module | None:
    """varfx.training's network for an exported model's ``architecture`` metadata (random
    weights: same shapes, hence same speed)."""
    try:
        mod: Any = importlib.import_module("varfx.training.models")
        net = mod.build_model(mod.ModelConfig.from_json(config))
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        log.warning("cannot rebuild the default model's architecture in torch: %s", exc)
        return None
    return WithSigmoid(net).eval() if isinstance(net, nn.Module) else None


def build_network(arch: str, length: int, n_features: int, seed: int = 0) -> tuple[nn.Module, str]:
    """A random-weight network (eval mode) mapping uint8 tokens [B, L] to probabilities [B, F].

    Returns the module and a note on where the architecture came from.
    """
    torch.manual_seed(seed)
    net = _from_training(arch, length, n_features) if arch != "small" else None
    source = f"varfx.training.models {arch}"
    if net is None:
        net = {"deepsea": DeepSEA, "basset": Basset, "small": SmallCNN}[arch](length, n_features)
        source = f"bench._nets.{type(net).__name__} (published layer stack)"
    model = WithSigmoid(net).eval()
    with torch.no_grad():
        out = model(torch.zeros((2, length), dtype=torch.uint8))
    if tuple(out.shape) != (2, n_features):
        raise ValueError(f"{arch}: output shape {tuple(out.shape)}, expected (2, {n_features})")
    return model, source


def export_onnx(
    model: nn.Module,
    repo: Path,
    name: str,
    length: int,
    n_features: int,
    version: int = 1,
    *,
    conv2d: bool = True,
) -> Path:
    """Export to ``<repo>/<name>/<version>/model.onnx``: uint8 tokens [batch, L] ->
    float32 probabilities [batch, F], metadata_props["varfx"] per the model contract.
    ``conv2d``: 1-D conv layers written as 2-D ones, as ``varfx export`` does by default."""
    import onnx

    path = repo / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros((2, length), dtype=torch.uint8)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["tokens"],
        output_names=["probabilities"],
        dynamic_axes={"tokens": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    exported = path.read_bytes()
    if conv2d:
        from varfx.training.onnx_layout import conv1d_as_conv2d

        exported = conv1d_as_conv2d(exported)
    proto = onnx.load_from_string(exported)
    meta = {
        "features": [f"{name}_f{i}" for i in range(n_features)],
        "sequence_length": length,
        "alphabet": "ACGT",
        "output": "probabilities",
        "assembly": "bench-random",
        "note": "random weights: for speed benchmarks only",
        "conv_layout": "2d" if conv2d else "1d",
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "varfx", json.dumps(meta)
    onnx.save(proto, str(path))
    return path


def layout_pair(model: BenchModel, repo: Path) -> dict[str, Path] | None:
    """The model's torch network exported twice, 2-D and 1-D conv layers (same random weights),
    for the paired conv-layout comparison; None without a torch network."""
    if model.torch_module is None:
        return None
    net = model.torch_module
    return {
        layout: export_onnx(
            net,
            repo / layout,
            model.name,
            model.length,
            model.n_features,
            conv2d=layout == "conv2d",
        )
        for layout in ("conv2d", "conv1d")
    }


def prepare_model(key: str, repos: Path, *, root: Path, seed: int = 0) -> BenchModel:
    """Put model ``key`` into its own repository ``repos/<key>/`` and return it.

    "default": the committed default model (``root/models/sim-chromatin``) when it exists (no torch
    module: the torch peer is skipped for it), else a random-weight stand-in (SmallCNN).
    "basset" / "deepsea": random-weight networks of the published sizes, exported to ONNX.
    """
    import onnx

    if key not in SIZES:
        raise ValueError(f"unknown model {key!r}; choose from {sorted(SIZES)}")
    repo = repos / key
    committed = root / DEFAULT_MODEL
    if key == "default" and committed.exists():
        (repo / "sim-chromatin").mkdir(parents=True, exist_ok=True)
        (repo / "sim-chromatin" / "1").symlink_to(committed.parent.resolve())
        meta = json.loads(
            {
                p.key: p.value
                for p in onnx.load(str(committed), load_external_data=False).metadata_props
            }.get("varfx", "{}")
        )
        module = _from_architecture(meta["architecture"]) if "architecture" in meta else None
        note = f"committed default model {DEFAULT_MODEL} (trained weights)"
        if module is not None:
            note += f"; torch peer: same architecture {meta['architecture']}, random weights"
        return BenchModel(
            key, "sim-chromatin", repo / "sim-chromatin" / "1" / "model.onnx",
            int(meta.get("sequence_length", 0)), len(meta.get("features", [])), module, note,
        )  # fmt: skip
    arch, length, n_features = SIZES[key]
    module, source = build_network(arch, length, n_features, seed)
    name = {"default": "stand-in-default"}.get(key, key)
    path = export_onnx(module, repo, name, length, n_features)
    if key == "default":
        source = "stand-in for the default model (models/sim-chromatin missing): " + source
    return BenchModel(key, name, path, length, n_features, module, source + ", random weights")
