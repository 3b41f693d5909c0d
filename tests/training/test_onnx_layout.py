"""The 1-D -> 2-D conv rewrite: same outputs as torch and as the 1-D graph, for every architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from varfx.cli import main
from varfx.training.errors import ExportError, ParityError
from varfx.training.export import _export_bytes, convert_conv2d
from varfx.training.models import ModelConfig, build_model
from varfx.training.onnx_layout import conv1d_as_conv2d, count_1d_convs

L = 240


def _ops(model_bytes: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model_bytes).graph.node]


def _run(model_bytes: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feed)[0])


def _trained_looking(cfg: ModelConfig) -> torch.nn.Module:
    """A network with random weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(3)
    net = build_model(cfg)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return net.eval()


CONFIGS = {
    "deepsea": ModelConfig("deepsea", L, 3, channels=(8, 8, 8), hidden=6, kernel_size=8),
    "basset": ModelConfig("basset", L, 3, channels=(8, 8, 8), hidden=6),
    "dilated": ModelConfig("dilated", L, 3, channels=(8, 8, 12)),
}


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_rewrite_matches_torch_and_the_1d_graph(arch: str) -> None:
    net = _trained_looking(CONFIGS[arch])
    one_d = _export_bytes(net, L)
    assert count_1d_convs(one_d) > 0
    two_d = conv1d_as_conv2d(one_d)
    assert count_1d_convs(two_d) == 0
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 5, (17, L), dtype=np.uint8)
    with torch.no_grad():
        want = torch.sigmoid(net(torch.from_numpy(tokens))).numpy()
    got_1d = _run(one_d, {"tokens": tokens})
    got_2d = _run(two_d, {"tokens": tokens})
    assert got_2d.shape == (17, 3)
    assert np.max(np.abs(got_2d - got_1d)) <= 1e-5
    assert np.max(np.abs(got_2d - want)) <= 1e-5
    ops = _ops(two_d)
    # the conv stack stays 2-D end to end: lifted once, never squeezed back
    assert ops.count("Unsqueeze") == 1
    assert "Squeeze" not in ops
    m = onnx.load_from_string(two_d)
    assert [i.name for i in m.graph.input] == ["tokens"]
    assert [o.name for o in m.graph.output] == ["probabilities"]


def _conv_graph(
    after: list[onnx.NodeProto], extra: list[onnx.TensorProto], out_shape: list[object]
) -> bytes:
    """x float [N, 4, 50] -> Conv(k=5, 6 filters) -> <after> -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(6, 4, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2]), *after]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [w, *extra],
    )
    return bytes(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )


def test_per_channel_constants_and_other_ops_get_the_3d_tensor_back() -> None:
    # Mul by a [6, 1] constant broadcasts over [N, 6, L] but not over [N, 6, 1, L]: it must see 3-D
    scale = numpy_helper.from_array(np.linspace(0.5, 2, 6, dtype=np.float32)[:, None], "s")
    after = [
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Mul", ["r", "s"], ["m"]),
        helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1]),
    ]
    one_d = _conv_graph(after, [scale], ["N", 50, 6])
    two_d = conv1d_as_conv2d(one_d)
    assert count_1d_convs(two_d) == 0
    assert _ops(two_d).count("Squeeze") == 1
    x = np.random.default_rng(2).normal(size=(3, 4, 50)).astype(np.float32)
    want, got = _run(one_d, {"x": x}), _run(two_d, {"x": x})
    assert got.shape == want.shape == (3, 50, 6)
    assert np.max(np.abs(got - want)) <= 1e-5


def test_graph_output_inside_the_lifted_region_is_squeezed() -> None:
    after = [helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2], strides=[2])]
    one_d = _conv_graph(after, [], ["N", 6, 25])
    two_d = conv1d_as_conv2d(one_d)
    x = np.random.default_rng(4).normal(size=(2, 4, 50)).astype(np.float32)
    got = _run(two_d, {"x": x})
    assert got.shape == (2, 6, 25)
    assert np.max(np.abs(got - _run(one_d, {"x": x}))) <= 1e-5


def test_model_without_1d_convs_is_returned_unchanged() -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    b = helper.make_model(g).SerializeToString()
    assert conv1d_as_conv2d(b) == b


def _varfx_model(tmp_path: Path) -> Path:
    net = _trained_looking(CONFIGS["basset"])
    m = onnx.load_from_string(_export_bytes(net, L))
    meta = {"features": ["a", "b", "c"], "sequence_length": L, "conv_layout": "1d"}
    helper.set_model_props(m, {"varfx": json.dumps(meta), "other": "kept"})
    path = tmp_path / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def test_convert_conv2d_records_the_layout_and_keeps_metadata(tmp_path: Path) -> None:
    src = _varfx_model(tmp_path)
    dst = tmp_path / "out.onnx"
    diff = convert_conv2d(src, dst)
    assert 0 <= diff <= 1e-5
    m = onnx.load(str(dst))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["other"] == "kept"
    meta = json.loads(props["varfx"])
    assert meta["conv_layout"] == "2d"
    assert meta["features"] == ["a", "b", "c"]
    assert count_1d_convs(dst.read_bytes()) == 0


def test_convert_conv2d_refuses_to_write_when_parity_fails(tmp_path: Path) -> None:
    src = _varfx_model(tmp_path)
    before = src.read_bytes()
    with pytest.raises(ParityError, match="not written"):
        convert_conv2d(src, src, tolerance=-1.0)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left
    with pytest.raises(ExportError, match="does not exist"):
        convert_conv2d(src, tmp_path / "missing" / "m.onnx")


def test_convert_conv2d_rejects_a_model_without_token_input(tmp_path: Path) -> None:
    path = tmp_path / "f.onnx"
    path.write_bytes(_conv_graph([helper.make_node("Relu", ["c"], ["y"])], [], ["N", 6, 50]))
    with pytest.raises(ExportError, match="uint8 token input"):
        convert_conv2d(path, tmp_path / "g.onnx")


def test_cli_conv2d_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _varfx_model(tmp_path)
    assert main(["conv2d", str(src), "--in-place"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert count_1d_convs(src.read_bytes()) == 0
    assert main(["conv2d", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
