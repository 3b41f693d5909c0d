"""Chromatin-feature CNNs: ``deepsea``, ``basset`` and ``dilated`` (Basenji-style residual tower).

Every network takes uint8 tokens [B, L] (A0 C1 G2 T3 N4), one-hot-encodes them inside (N -> 0.25
in each channel) to float32 [B, 4, L] in ACGT order, and returns logits float32 [B, F].
:class:`ProbabilityModel` adds the sigmoid for export, so the ONNX output is probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from varfx.training.errors import DataError

__all__ = [
    "ARCHITECTURES",
    "Basset",
    "DeepSEA",
    "DilatedResNet",
    "ModelConfig",
    "OneHot",
    "ProbabilityModel",
    "build_model",
]

ARCHITECTURES = ("deepsea", "basset", "dilated")

# arch -> default (channels per conv layer, hidden units of the dense layer)
_DEFAULTS: dict[str, tuple[tuple[int, ...], int]] = {
    "deepsea": ((320, 480, 960), 925),
    "basset": ((300, 200, 200), 1000),
    "dilated": ((128, 128, 128, 128, 128, 128), 0),
}


@dataclass(frozen=True)
class ModelConfig:
    """Network shape.

    Attributes:
        arch: one of ARCHITECTURES.
        sequence_length: L (bp).
        n_features: F outputs.
        channels: filters per conv layer (None = the arch's published sizes). For ``dilated``
            channels[0] is the stem and each further entry one residual dilated block
            (dilation 2, 4, 8, ...).
        hidden: units of the dense layer (deepsea/basset; None = default; 0 = none).
        kernel_size: first-layer kernel (deepsea: all layers); None = arch default.
        pool: max-pool width after each conv (deepsea, dilated stem); None = 4.
        dropout: dropout probability.
    """

    arch: str = "deepsea"
    sequence_length: int = 1000
    n_features: int = 1
    channels: tuple[int, ...] | None = None
    hidden: int | None = None
    kernel_size: int | None = None
    pool: int | None = None
    dropout: float = 0.2

    def resolved(self) -> ModelConfig:
        """A copy with every None filled by the arch default (raises DataError when invalid)."""
        if self.arch not in ARCHITECTURES:
            raise DataError(f"unknown architecture {self.arch!r}; choose from {ARCHITECTURES}")
        if self.n_features < 1 or self.sequence_length < 1:
            raise DataError(
                f"need n_features >= 1 and sequence_length >= 1, got {self.n_features}, "
                f"{self.sequence_length}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise DataError(f"dropout must be in [0, 1), got {self.dropout}")
        ch, hidden = _DEFAULTS[self.arch]
        channels = tuple(self.channels) if self.channels else ch
        if any(c < 1 for c in channels):
            raise DataError(f"channels must be positive, got {channels}")
        kernel = self.kernel_size or {"deepsea": 8, "basset": 19, "dilated": 15}[self.arch]
        return ModelConfig(
            self.arch,
            self.sequence_length,
            self.n_features,
            channels,
            hidden if self.hidden is None else self.hidden,
            kernel,
            self.pool or 4,
            self.dropout,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels) if self.channels else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if d.get("channels") is not None:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


class OneHot(nn.Module):
    """uint8 tokens [B, L] -> float32 one-hot [B, 4, L] (ACGT; N and anything > 4 -> 0.25)."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.zeros(5, 4)
        table[:4] = torch.eye(4)
        table[4] = 0.25
        self.register_buffer("table", table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        idx = torch.clamp(tokens.long(), max=4)
        table: torch.Tensor = self.table  # type: ignore[assignment]
        return table[idx].transpose(1, 2)


@dataclass(frozen=True)
class _Sizes:
    """A resolved ModelConfig with no None fields (for the network constructors)."""

    sequence_length: int
    n_features: int
    channels: tuple[int, ...]
    hidden: int
    kernel_size: int
    pool: int
    dropout: float

    @classmethod
    def of(cls, cfg: ModelConfig) -> _Sizes:
        c = cfg.resolved()
        return cls(
            c.sequence_length,
            c.n_features,
            c.channels or (),
            c.hidden or 0,
            c.kernel_size or 1,
            c.pool or 1,
            c.dropout,
        )


def _dense_head(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    if hidden:
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_out))


def _flat_size(body: nn.Module, length: int) -> int:
    try:
        with torch.no_grad():
            return int(body(torch.zeros(1, 4, length)).numel())
    except RuntimeError as exc:
        raise DataError(f"sequence_length {length} is too short for these layers: {exc}") from exc


class DeepSEA(nn.Module):
    """DeepSEA (Zhou & Troyanskaya 2015): conv-ReLU-maxpool stacks, dropout, dense, F logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = _Sizes.of(cfg)
        self.onehot = OneHot()
        layers: list[nn.Module] = []
        n_in = 4
        for i, n_out in enumerate(c.channels):
            layers += [nn.Conv1d(n_in, n_out, c.kernel_size), nn.ReLU()]
            if i < len(c.channels) - 1:
                layers += [nn.MaxPool1d(c.pool)]
            layers += [nn.Dropout(c.dropout)]
            n_in = n_out
        self.body = nn.Sequential(*layers)
        self.head = _dense_head(
            _flat_size(self.body, c.sequence_length), c.hidden, c.n_features, c.dropout
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens uint8 [B, L] -> logits float32 [B, F]."""
        return self.head(self.body(self.onehot(tokens)))


class Basset(nn.Module):
    """Basset (Kelley et al. 2016): conv-BN-ReLU-maxpool x3 (kernels 19/11/7, pools 3/4/4), 2 dense."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = _Sizes.of(cfg)
        self.onehot = OneHot()
        kernels = [c.kernel_size, 11, 7] + [5] * max(0, len(c.channels) - 3)
        pools = [3, 4, 4] + [2] * max(0, len(c.channels) - 3)
        layers: list[nn.Module] = []
        n_in = 4
        for n_out, k, p in zip(c.channels, kernels, pools, strict=False):
            layers += [
                nn.Conv1d(n_in, n_out, k, padding=k // 2),
                nn.BatchNorm1d(n_out),
                nn.ReLU(),
                nn.MaxPool1d(p, ceil_mode=False),
            ]
            n_in = n_out
        self.body = nn.Sequential(*layers)
        flat = _flat_size(self.body.eval(), c.sequence_length)
        self.body.train()
        head: list[nn.Module] = [nn.Flatten()]
        n = flat
        for _ in range(2 if c.hidden else 0):
            head += [
                nn.Linear(n, c.hidden),
                nn.BatchNorm1d(c.hidden),
                nn.ReLU(),
                nn.Dropout(c.dropout),
            ]
            n = c.hidden
        head.append(nn.Linear(n, c.n_features))
        self.head = nn.Sequential(*head)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens uint8 [B, L] -> logits float32 [B, F]."""
        return self.head(self.body(self.onehot(tokens)))


class _DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(channels),
            nn.GELU(),
            nn.Conv1d(channels, channels // 2, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm1d(channels // 2),
            nn.GELU(),
            nn.Conv1d(channels // 2, channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class DilatedResNet(nn.Module):
    """Basenji-style: conv stem + max-pool, residual dilated conv tower (dilation doubling),
    global max + mean pooling, linear to F logits. Receptive field grows exponentially with depth."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = _Sizes.of(cfg)
        self.onehot = OneHot()
        width = c.channels[0]
        self.stem = nn.Sequential(
            nn.Conv1d(4, width, c.kernel_size, padding=c.kernel_size // 2),
            nn.BatchNorm1d(width),
            nn.GELU(),
            nn.MaxPool1d(c.pool),
        )
        blocks: list[nn.Module] = []
        for i, ch in enumerate(c.channels[1:]):
            if ch != width:
                blocks.append(nn.Conv1d(width, ch, 1))
                width = ch
            blocks.append(_DilatedBlock(width, 2 ** (i + 1), c.dropout))
        self.tower = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * width, c.n_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens uint8 [B, L] -> logits float32 [B, F]."""
        x = self.tower(self.stem(self.onehot(tokens)))
        pooled = torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
        return self.head(pooled)


class ProbabilityModel(nn.Module):
    """Wraps a logits network: tokens uint8 [B, L] -> probabilities float32 [B, F] (sigmoid)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(tokens))


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network for ``cfg.arch`` (raises DataError for an unknown arch or bad sizes)."""
    c = cfg.resolved()
    if c.arch == "deepsea":
        return DeepSEA(c)
    if c.arch == "basset":
        return Basset(c)
    return DilatedResNet(c)
