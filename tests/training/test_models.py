"""Architectures: forward shapes, in-graph one-hot, probability wrapper, size validation."""

from __future__ import annotations

import pytest
import torch

from varfx.training.errors import DataError
from varfx.training.models import (
    ARCHITECTURES,
    ModelConfig,
    OneHot,
    ProbabilityModel,
    build_model,
)

SMALL = {
    "deepsea": ModelConfig("deepsea", 200, 3, channels=(8, 8, 8), hidden=16, kernel_size=5),
    "basset": ModelConfig("basset", 200, 3, channels=(8, 8, 8), hidden=16),
    "dilated": ModelConfig("dilated", 200, 3, channels=(8, 8, 8, 8)),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_shape_and_probabilities(arch: str) -> None:
    torch.manual_seed(0)
    net = build_model(SMALL[arch]).eval()
    tokens = torch.randint(0, 5, (7, 200), dtype=torch.uint8)
    logits = net(tokens)
    assert logits.shape == (7, 3)
    assert logits.dtype == torch.float32
    probs = ProbabilityModel(net)(tokens)
    assert torch.allclose(probs, torch.sigmoid(logits))
    assert ((probs > 0) & (probs < 1)).all()
    # a single row gives the same answer as inside a batch (eval mode, no batch coupling)
    assert torch.allclose(net(tokens[2:3]), logits[2:3], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_published_default_sizes_build(arch: str) -> None:
    net = build_model(ModelConfig(arch, 1000, 5))
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params > 100_000
    assert net.eval()(torch.zeros(2, 1000, dtype=torch.uint8)).shape == (2, 5)


def test_one_hot_in_graph() -> None:
    x = OneHot()(torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.uint8))
    assert x.shape == (1, 4, 5)
    assert torch.equal(x[0, :, :4], torch.eye(4))
    assert torch.equal(x[0, :, 4], torch.full((4,), 0.25))


def test_bad_sizes_are_named() -> None:
    with pytest.raises(DataError, match="resnet"):
        build_model(ModelConfig("resnet", 100, 2))
    with pytest.raises(DataError, match="dropout"):
        build_model(ModelConfig("deepsea", 100, 2, dropout=1.5))
    with pytest.raises(DataError, match="sequence_length 20"):
        build_model(ModelConfig("deepsea", 20, 2, channels=(4, 4, 4)))
    cfg = ModelConfig("basset", 300, 4, channels=(8, 8), hidden=0)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
