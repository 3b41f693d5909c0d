"""The fp16-compute graph (varfx.training.fp16) and its recorded check (varfx.core.precision),
run with ONNX Runtime's CPU provider (it has float16 kernels for every op these graphs use)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.onnx_models import TinyCNN, write_model
from varfx.core.precision import FP16_FILE, fp16_check_problem
from varfx.training.fp16 import ValidationWindows, check_fp16, fp16_compute_graph

REPO = Path(__file__).resolve().parents[2] / "models"


def _run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0])


def _model(tmp_path: Path, **kw: object) -> bytes:
    net = TinyCNN.random(6, channels=32, kernel=9, seed=3)
    path = write_model(tmp_path, name="m", net=net, length=200, n_features=6, **kw)  # type: ignore[arg-type]
    return Path(path).read_bytes()


@pytest.mark.parametrize(
    ("kw", "x_of"),
    [
        ({}, lambda t: t),
        ({"output": "logits"}, lambda t: t),
        ({"input_kind": "onehot"}, lambda t: np.eye(5, 4, dtype=np.float32)[t].transpose(0, 2, 1)),
    ],
)
def test_fp16_graph_computes_in_float16_with_float32_io(tmp_path: Path, kw: dict, x_of) -> None:  # type: ignore[no-untyped-def,type-arg]
    fp32 = _model(tmp_path, **kw)
    half = fp16_compute_graph(fp32)
    m = onnx.load_from_string(half)
    float_inits = [i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert float_inits == []
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [
        i.type.tensor_type.elem_type for i in onnx.load_from_string(fp32).graph.input
    ]
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    tokens = np.random.default_rng(0).integers(0, 5, (64, 200), dtype=np.uint8)
    want, got = _run(fp32, x_of(tokens)), _run(half, x_of(tokens))
    assert got.dtype == np.float32
    assert got.shape == want.shape
    if kw.get("output") == "logits":  # compared as probabilities, as the server serves them
        want, got = 1 / (1 + np.exp(-want)), 1 / (1 + np.exp(-got))
    diff = float(np.abs(got - want).max())
    assert 0 < diff < 1e-2  # float16 rounding, not float32 arithmetic


def test_check_records_parity_and_validation_auroc(tmp_path: Path) -> None:
    fp32 = _model(tmp_path)
    half = fp16_compute_graph(fp32)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 4, (400, 200), dtype=np.uint8)
    # labels that the model ranks well: its own fp32 predictions, thresholded, with noise
    probs = _run(fp32, tokens)
    noisy = probs + rng.normal(0, 1, probs.shape) * 0.3 * probs.std(0)
    labels = (noisy > np.median(probs, 0)).astype(np.uint8)
    valid = ValidationWindows(tokens, labels, "test windows")
    check = check_fp16(fp32, half, 200, [f"f{i}" for i in range(6)], valid)
    assert 0 < check["max_abs_diff_random"] < 1e-2
    assert 0 < check["max_abs_diff_real"] < 1e-2
    assert check["real_windows"] == 400
    assert check["valid_source"] == "test windows"
    assert check["valid_auroc_fp32"] > 0.7
    assert abs(check["valid_auroc_change"]) < 1e-3
    assert check["reference_sha256"] == hashlib.sha256(fp32).hexdigest()
    assert check["within_bound"] is True
    assert fp16_check_problem(check) is None
    no_valid = check_fp16(fp32, half, 200, [f"f{i}" for i in range(6)], None)
    assert no_valid["within_bound"] is False
    assert "max_abs_diff_real" in str(fp16_check_problem(no_valid))


def test_check_problem_names_what_fails() -> None:
    ok = {"max_abs_diff_random": 1e-3, "max_abs_diff_real": 2e-3, "valid_auroc_change": -1e-5,
          "diff_bound": 1e-2, "auroc_bound": 1e-3}  # fmt: skip
    assert fp16_check_problem(ok) is None
    assert "no fp16_check" in str(fp16_check_problem(None))
    assert "max_abs_diff_real 0.02" in str(fp16_check_problem({**ok, "max_abs_diff_real": 0.02}))
    assert "valid_auroc_change" in str(fp16_check_problem({**ok, "valid_auroc_change": -0.01}))
    assert "looser" in str(fp16_check_problem({**ok, "diff_bound": 0.5}))
    assert "lacks valid_auroc_change" in str(fp16_check_problem({**ok, "valid_auroc_change": None}))


@pytest.mark.parametrize("model", ["brain-hg19/2", "sim-chromatin/1"])
def test_committed_fp16_graphs_were_checked_against_their_model(model: str) -> None:
    fp16 = REPO / model / FP16_FILE
    if not fp16.is_file():
        pytest.skip(f"{fp16} not committed")
    m = onnx.load(str(fp16))
    meta = json.loads({p.key: p.value for p in m.metadata_props}["varfx"])
    check = meta["fp16_check"]
    assert meta["precision"] == "fp16"
    assert fp16_check_problem(check) is None
    assert "valid" in check["valid_source"]
    assert "test" not in check["valid_source"]
    fp32_bytes = (REPO / model / "model.onnx").read_bytes()
    assert check["reference_sha256"] == hashlib.sha256(fp32_bytes).hexdigest()
    tokens = np.random.default_rng(5).integers(0, 5, (16, meta["sequence_length"]), dtype=np.uint8)
    diff = np.abs(_run(fp16.read_bytes(), tokens) - _run(fp32_bytes, tokens)).max()
    assert diff <= check["diff_bound"]


def test_export_writes_the_fp16_graph_with_its_validation_check(tmp_path: Path) -> None:
    from tests.training.test_train_export import _config
    from varfx.training.export import export_run
    from varfx.training.train import train

    run = tmp_path / "run"
    train(_config(tmp_path, run, epochs=1))
    r = export_run(run, tmp_path / "repo", "tiny", command="test")
    check = r.fp16_check
    assert check is not None
    assert check["valid_windows"] > 0
    assert "valid split" in check["valid_source"]
    assert check["reference_sha256"] == hashlib.sha256(r.path.read_bytes()).hexdigest()
    fp16 = r.path.with_name(FP16_FILE)
    assert fp16.is_file() is check["within_bound"] is (r.fp16_graph is not None)
    if fp16.is_file():
        meta = json.loads({p.key: p.value for p in onnx.load(str(fp16)).metadata_props}["varfx"])
        assert meta["fp16_check"] == check
        assert meta["features"] == r.metadata["features"]
    no16 = export_run(run, tmp_path / "repo", "tiny", version=2, command="t", fp16_graph=False)
    assert no16.fp16_check is None
    assert not no16.path.with_name(FP16_FILE).exists()


def test_cli_export_reports_the_fp16_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.training.test_train_export import _config
    from varfx.cli import main
    from varfx.training.train import train

    run = tmp_path / "run"
    train(_config(tmp_path, run, epochs=1))
    repo = str(tmp_path / "repo")
    assert main(["export", "--run", str(run), "--repo", repo, "--name", "m", "--no-calibrate"]) == 0
    assert "fp16 graph: " in capsys.readouterr().out
    args = ["export", "--run", str(run), "--repo", repo, "--name", "n", "--no-calibrate"]
    assert main([*args, "--no-fp16-graph"]) == 0
    assert "fp16 graph" not in capsys.readouterr().out
    assert not (tmp_path / "repo" / "n" / "1" / FP16_FILE).exists()
    bad = main(["fp16", str(tmp_path / "repo" / "n" / "1"), "--genome", "x.fa", "--peaks", "p"])
    assert bad == 2
    assert "varfx fp16:" in capsys.readouterr().err
