"""Tiny real ONNX models for tests, built with onnx.helper (no torch).

The network is a small CNN: one-hot -> Conv1d -> ReLU -> global max pool -> Gemm -> sigmoid
(or logits). The same weights can be written with uint8 token input (one-hot inside the graph,
varfx's own export) or float32 one-hot input in any channel order (what published models take),
so tests can check that both give the same predictions. ``reference_predict`` computes the same
network in numpy, independently of ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["TinyCNN", "reference_predict", "write_model"]


@dataclass(frozen=True)
class TinyCNN:
    """Weights of the test network: conv [C, 4, K] (ACGT channel order), conv bias [C],
    dense [C, F], dense bias [F]."""

    conv_w: np.ndarray
    conv_b: np.ndarray
    dense_w: np.ndarray
    dense_b: np.ndarray

    @staticmethod
    def random(n_features: int, *, channels: int = 8, kernel: int = 5, seed: int = 0) -> TinyCNN:
        rng = np.random.default_rng(seed)
        return TinyCNN(
            conv_w=rng.normal(0, 0.8, (channels, 4, kernel)).astype(np.float32),
            conv_b=rng.normal(0, 0.1, channels).astype(np.float32),
            dense_w=rng.normal(0, 0.6, (channels, n_features)).astype(np.float32),
            dense_b=rng.normal(-0.5, 0.3, n_features).astype(np.float32),
        )


def _onehot_table(alphabet: str, n_value: float) -> np.ndarray:
    table = np.zeros((5, 4), dtype=np.float32)
    for channel, base in enumerate(alphabet):
        table["ACGT".index(base), channel] = 1.0
    table[4] = n_value
    return table


def reference_predict(
    net: TinyCNN, tokens: np.ndarray, *, output: str = "probabilities", n_value: float = 0.25
) -> np.ndarray:
    """The network in numpy: tokens uint8 [B, L] -> float32 [B, F]."""
    x = _onehot_table("ACGT", n_value)[tokens].astype(np.float64)  # [B, L, 4]
    k = net.conv_w.shape[2]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, k, axis=1)  # [B, L, 4, K]
    conv = np.einsum("blik,cik->bcl", windows, net.conv_w.astype(np.float64))
    conv += net.conv_b[None, :, None]
    pooled = np.maximum(conv, 0).max(axis=2)  # [B, C]
    logits = pooled @ net.dense_w + net.dense_b
    if output == "logits":
        return logits.astype(np.float32)
    return (1 / (1 + np.exp(-logits))).astype(np.float32)


def _graph(
    net: TinyCNN, *, input_kind: str, alphabet: str, output: str, length: int, n_value: float
) -> onnx.ModelProto:
    k = net.conv_w.shape[2]
    f = net.dense_w.shape[1]
    # conv weights in the model's channel order
    order = ["ACGT".index(b) for b in alphabet]
    conv_w = net.conv_w[:, order, :]
    inits = [
        numpy_helper.from_array(conv_w, "conv_w"),
        numpy_helper.from_array(net.conv_b, "conv_b"),
        numpy_helper.from_array(net.dense_w, "dense_w"),
        numpy_helper.from_array(net.dense_b, "dense_b"),
    ]
    nodes = []
    if input_kind == "tokens":
        inp = helper.make_tensor_value_info("tokens", TensorProto.UINT8, ["batch", length])
        inits.append(numpy_helper.from_array(_onehot_table(alphabet, n_value), "onehot_table"))
        nodes += [
            helper.make_node("Cast", ["tokens"], ["tok64"], to=TensorProto.INT64),
            helper.make_node("Gather", ["onehot_table", "tok64"], ["x_bl4"], axis=0),
            helper.make_node("Transpose", ["x_bl4"], ["x"], perm=[0, 2, 1]),
        ]
    else:
        inp = helper.make_tensor_value_info("onehot", TensorProto.FLOAT, ["batch", 4, length])
        nodes.append(helper.make_node("Identity", ["onehot"], ["x"]))
    nodes += [
        helper.make_node(
            "Conv", ["x", "conv_w", "conv_b"], ["conv"], kernel_shape=[k], pads=[k // 2, k // 2]
        ),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("ReduceMax", ["relu"], ["pooled"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["pooled", "dense_w", "dense_b"], ["logits"]),
    ]
    out_name = "probabilities" if output == "probabilities" else "logits_out"
    if output == "probabilities":
        nodes.append(helper.make_node("Sigmoid", ["logits"], [out_name]))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], [out_name]))
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", f])
    graph = helper.make_graph(nodes, "tiny_cnn", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model(
    repo: Path,
    *,
    name: str = "tiny",
    version: int = 1,
    net: TinyCNN | None = None,
    n_features: int = 3,
    length: int = 20,
    input_kind: str = "tokens",
    alphabet: str = "ACGT",
    output: str = "probabilities",
    n_value: float = 0.25,
    sidecar: bool = False,
    assembly: str = "test",
    features: list[str] | None = None,
    seed: int = 0,
    genome: dict[str, Any] | None = None,
) -> Path:
    """Write ``<repo>/<name>/<version>/model.onnx`` and return its path.

    Metadata goes into the ONNX ``metadata_props["varfx"]``, or into a ``model.json`` sidecar when
    ``sidecar`` is true; ``genome`` is its training genome record (e.g. ``{"assembly":
    "varfx-sim", "family": "varfx-sim"}`` for any simulated genome).
    """
    net = net or TinyCNN.random(n_features, seed=seed)
    f = net.dense_w.shape[1]
    model = _graph(
        net,
        input_kind=input_kind,
        alphabet=alphabet,
        output=output,
        length=length,
        n_value=n_value,
    )
    meta = {
        "features": features or [f"feat{i}" for i in range(f)],
        "sequence_length": length,
        "alphabet": alphabet,
        "n_value": n_value,
        "output": output,
        "assembly": assembly,
    }
    if genome is not None:  # training genome record (varfx.core.genomes.GenomeIdentity.to_json)
        meta["genome"] = genome
    path = Path(repo) / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if sidecar:
        (path.parent / "model.json").write_text(json.dumps(meta))
    else:
        helper.set_model_props(model, {"varfx": json.dumps(meta)})
    onnx.save(model, str(path))
    return path
