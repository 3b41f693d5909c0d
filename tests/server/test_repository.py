"""The model repository layout and the ONNX model contract, on real ONNX files loaded by ONNX
Runtime (every broken model must fail with a ModelRepositoryError naming the file and field)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import write_model
from varfx.server.repository import (
    ModelEntry,
    ModelRepositoryError,
    ModelSpec,
    TensorInfo,
    build_spec,
    scan_repository,
)
from varfx.server.runtime import ModelRunner

L = 20
GOOD_META: dict[str, Any] = {
    "features": ["f0", "f1", "f2"],
    "sequence_length": L,
    "output": "probabilities",
    "assembly": "GRCh38",
}


def write_graph(
    repo: Path,
    *,
    name: str = "g",
    version: str = "1",
    in_type: int = TensorProto.UINT8,
    in_shape: tuple[int | str, ...] = ("batch", L),
    n_out: int = 3,
    out_type: int = TensorProto.FLOAT,
    out_rank: int = 2,
    extra_input: bool = False,
    extra_output: bool = False,
    meta: dict[str, Any] | str | None = None,
    sidecar: dict[str, Any] | str | None = None,
) -> Path:
    """A real ONNX graph with any signature: input -> Cast -> ReduceSum -> MatMul -> output."""
    rank = len(in_shape)
    inits = [
        numpy_helper.from_array(np.arange(1, rank, dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.linspace(-1, 1, n_out, dtype=np.float32)[None], "w"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["xf", "axes"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "one"], ["s1"]),
        helper.make_node("MatMul", ["s1", "w"], ["y0"]),
    ]
    last = "y0"
    out_shape: list[int | str] = ["batch", n_out]
    if out_rank == 3:
        nodes.append(helper.make_node("Unsqueeze", [last, "two"], ["y3"]))
        last, out_shape = "y3", [*out_shape, 1]
    nodes.append(
        helper.make_node("Cast", [last], ["y"], to=out_type)
        if out_type != TensorProto.FLOAT
        else helper.make_node("Identity", [last], ["y"])
    )
    inputs = [helper.make_tensor_value_info("x", in_type, list(in_shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 1]))
    outputs = [helper.make_tensor_value_info("y", out_type, out_shape)]
    if extra_output:
        nodes.append(helper.make_node("Identity", ["y0"], ["y_extra"]))
        outputs.append(
            helper.make_tensor_value_info("y_extra", TensorProto.FLOAT, ["batch", n_out])
        )
    model = helper.make_model(
        helper.make_graph(nodes, "sig", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    if meta is not None:
        helper.set_model_props(
            model, {"varfx": meta if isinstance(meta, str) else json.dumps(meta)}
        )
    path = repo / name / version / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
        (path.parent / "model.json").write_text(text)
    return path


def load(repo: Path) -> ModelSpec:
    (entry,) = scan_repository(repo)
    return ModelRunner(entry, "cpu").spec


# --- layout -----------------------------------------------------------------------------------


def test_highest_version_served_unless_pinned(tmp_path: Path) -> None:
    for v in (1, 3, 10):
        write_model(tmp_path, name="m", version=v, length=L)
    write_model(tmp_path, name="other", version=2, length=L)
    entries = {e.name: e for e in scan_repository(tmp_path)}
    assert entries["m"] == ModelEntry("m", 10, (1, 3, 10), tmp_path / "m" / "10" / "model.onnx")
    assert entries["other"].version == 2
    pinned = {e.name: e for e in scan_repository(tmp_path, {"m": 3})}
    assert pinned["m"].version == 3
    assert pinned["m"].path == tmp_path / "m" / "3" / "model.onnx"
    assert pinned["m"].versions == (1, 3, 10)
    spec = ModelRunner(pinned["m"], "cpu").spec
    assert (spec.name, spec.version, spec.versions) == ("m", 3, (1, 3, 10))


def test_pins_that_do_not_exist(tmp_path: Path) -> None:
    write_model(tmp_path, name="m", version=1, length=L)
    with pytest.raises(ModelRepositoryError, match=r"'m'.*pinned version 4.*\[1\]"):
        scan_repository(tmp_path, {"m": 4})
    with pytest.raises(ModelRepositoryError, match="ghost"):
        scan_repository(tmp_path, {"ghost": 1})


def test_non_version_entries_are_ignored(tmp_path: Path) -> None:
    write_model(tmp_path, name="m", version=2, length=L)
    (tmp_path / "m" / "latest").mkdir()  # not a number
    shutil.copy(tmp_path / "m" / "2" / "model.onnx", tmp_path / "m" / "latest" / "model.onnx")
    (tmp_path / "m" / "7").mkdir()  # no model.onnx
    (tmp_path / "m" / "³").mkdir()  # unicode digit, not a version
    shutil.copy(tmp_path / "m" / "2" / "model.onnx", tmp_path / "m" / "³" / "model.onnx")
    write_model(tmp_path, name=".ipynb_checkpoints", length=L)  # hidden directories
    (tmp_path / "README.md").write_text("not a model")
    (tmp_path / "empty_model_dir").mkdir()
    (entry,) = scan_repository(tmp_path)
    assert (entry.name, entry.version, entry.versions) == ("m", 2, (2,))


def test_zero_padded_version_directories(tmp_path: Path) -> None:
    write_model(tmp_path, name="m", version=1, length=L)
    (tmp_path / "m" / "1").rename(tmp_path / "m" / "002")
    (entry,) = scan_repository(tmp_path)
    assert entry.version == 2
    assert entry.path == tmp_path / "m" / "002" / "model.onnx"
    assert entry.path.is_file()
    write_model(tmp_path, name="m", version=2, length=L)  # "2" and "002" clash
    with pytest.raises(ModelRepositoryError, match="'002' and '2'"):
        scan_repository(tmp_path)


def test_empty_or_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="no models"):
        scan_repository(tmp_path)
    with pytest.raises(ModelRepositoryError, match="not a directory"):
        scan_repository(tmp_path / "nope")


def test_bad_model_name(tmp_path: Path) -> None:
    write_model(tmp_path, name="bad name", length=L)
    with pytest.raises(ModelRepositoryError, match="'bad name'"):
        scan_repository(tmp_path)


# --- metadata ---------------------------------------------------------------------------------


def test_token_model_spec_and_defaults(tmp_path: Path) -> None:
    write_graph(tmp_path, meta={"features": ["a", "b", "c"], "sequence_length": L})
    spec = load(tmp_path)
    assert spec.input_kind == "tokens"
    assert (spec.input_name, spec.output_name) == ("x", "y")
    assert spec.features == ("a", "b", "c")
    assert spec.sequence_length == L
    assert spec.alphabet == "ACGT"
    assert spec.n_value == 0.25
    assert spec.output == "probabilities"
    assert spec.assembly == ""


def test_onehot_model_spec(tmp_path: Path) -> None:
    meta = {**GOOD_META, "alphabet": "agct", "n_value": 0, "output": "logits"}
    write_graph(tmp_path, in_type=TensorProto.FLOAT, in_shape=("N", 4, L), meta=meta)
    spec = load(tmp_path)
    assert spec.input_kind == "onehot"
    assert spec.alphabet == "AGCT"
    assert spec.n_value == 0.0
    assert spec.output == "logits"
    assert spec.assembly == "GRCh38"


def test_dynamic_length_accepted(tmp_path: Path) -> None:
    write_graph(tmp_path, in_shape=("batch", "length"), meta=GOOD_META)
    assert load(tmp_path).sequence_length == L


def test_sidecar_wins_key_by_key_and_extra_keys_kept(tmp_path: Path) -> None:
    embedded = {**GOOD_META, "assembly": "hg19", "training": {"auroc": {"f0": 0.91}}}
    write_graph(tmp_path, meta=embedded, sidecar={"assembly": "GRCh38", "provenance": "unit"})
    spec = load(tmp_path)
    assert spec.assembly == "GRCh38"  # from the sidecar
    assert spec.features == ("f0", "f1", "f2")  # from the embedded JSON
    assert spec.metadata["training"] == {"auroc": {"f0": 0.91}}
    assert spec.metadata["provenance"] == "unit"


def test_sidecar_only_metadata(tmp_path: Path) -> None:
    write_model(tmp_path, name="m", length=L, sidecar=True, n_features=2, assembly="toy")
    spec = load(tmp_path)
    assert spec.features == ("feat0", "feat1")
    assert spec.assembly == "toy"


# --- contract violations ----------------------------------------------------------------------

BAD_GRAPHS: list[tuple[str, dict[str, Any], str]] = [
    ("two_inputs", {"extra_input": True}, "one input and one output, got 2 and 1"),
    ("two_outputs", {"extra_output": True}, "one input and one output, got 1 and 2"),
    ("int64_tokens", {"in_type": TensorProto.INT64}, r"input 'x' is tensor\(int64\)"),
    ("float_tokens", {"in_type": TensorProto.FLOAT}, r"input 'x' is tensor\(float\)"),
    (
        "five_channels",
        {"in_type": TensorProto.FLOAT, "in_shape": ("batch", 5, L)},
        r"expected uint8 \[batch, L\] or float32 \[batch, 4, L\]",
    ),
    ("fixed_batch", {"in_shape": (8, L)}, "batch dimension must be dynamic, got 8"),
    ("length_mismatch", {"in_shape": ("batch", 30)}, "input length 30 .* sequence_length 20"),
    ("feature_count", {"n_out": 4}, "output has 4 features but metadata names 3"),
    ("int_output", {"out_type": TensorProto.INT32}, r"output 'y' is tensor\(int32\)"),
    ("3d_output", {"out_rank": 3}, r"expected float32 \[batch, F\]"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), BAD_GRAPHS, ids=[b[0] for b in BAD_GRAPHS])
def test_graph_violations(tmp_path: Path, case: str, kwargs: dict[str, Any], message: str) -> None:
    path = write_graph(tmp_path, meta=GOOD_META, **kwargs)
    with pytest.raises(ModelRepositoryError, match=message) as info:
        load(tmp_path)
    assert str(path) in str(info.value)


BAD_META: list[tuple[str, dict[str, Any], str]] = [
    ("no_features", {"features": None}, "'features' must be a non-empty list"),
    ("empty_features", {"features": []}, "'features' must be a non-empty list"),
    ("number_features", {"features": [1, 2, 3]}, "'features' must be a non-empty list"),
    ("string_features", {"features": "f0,f1,f2"}, "'features' must be a non-empty list"),
    ("dup_features", {"features": ["a", "b", "a"]}, "'features' has duplicate"),
    ("no_length", {"sequence_length": None}, "'sequence_length' must be an even int, got None"),
    ("odd_length", {"sequence_length": 21}, "'sequence_length' must be an even int, got 21"),
    ("str_length", {"sequence_length": "20"}, "'sequence_length' must be an even int, got '20'"),
    ("alphabet", {"alphabet": "ACGU"}, "'alphabet' 'ACGU' is not a permutation"),
    ("output_kind", {"output": "scores"}, "'output' must be probabilities or logits, got 'scores'"),
    ("n_value_range", {"n_value": 2}, "'n_value' must be a number in \\[0, 1\\], got 2"),
    ("n_value_str", {"n_value": "x"}, "'n_value' must be a number in \\[0, 1\\], got 'x'"),
    ("n_value_bool", {"n_value": True}, "'n_value' must be a number in \\[0, 1\\], got True"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_META, ids=[b[0] for b in BAD_META])
def test_metadata_violations(
    tmp_path: Path, case: str, change: dict[str, Any], message: str
) -> None:
    meta = {k: v for k, v in {**GOOD_META, **change}.items() if v is not None}
    in_shape: tuple[int | str, ...] = ("batch", "L")  # so that only the metadata is at fault
    path = write_graph(tmp_path, in_shape=in_shape, meta=meta)
    with pytest.raises(ModelRepositoryError, match=message) as info:
        load(tmp_path)
    assert str(path) in str(info.value)


def test_no_metadata_at_all(tmp_path: Path) -> None:
    write_graph(tmp_path)
    with pytest.raises(ModelRepositoryError, match="'features'"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("meta", "sidecar", "where", "message"),
    [
        ("{not json", None, "model.onnx: metadata 'varfx'", "not valid JSON"),
        ('["a"]', None, "model.onnx: metadata 'varfx'", "must be a JSON object, got list"),
        (GOOD_META, "{oops", "model.json", "not valid JSON"),
        (GOOD_META, "42", "model.json", "must be a JSON object, got int"),
    ],
)
def test_unreadable_metadata(
    tmp_path: Path, meta: dict[str, Any] | str, sidecar: str | None, where: str, message: str
) -> None:
    write_graph(tmp_path, meta=meta, sidecar=sidecar)
    with pytest.raises(ModelRepositoryError, match=message) as info:
        load(tmp_path)
    assert where in str(info.value)


def test_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00not an onnx file")
    with pytest.raises(ModelRepositoryError, match="cannot load") as info:
        load(tmp_path)
    assert str(path) in str(info.value)


def test_symbolic_feature_dim_checked_at_run_time(tmp_path: Path) -> None:
    # output = the input cast to float: [batch, L] with L unknown to the graph, so F is only
    # known when it runs (20 values for 3 feature names)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "symbolic_f",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "F"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"varfx": json.dumps(GOOD_META)})
    (tmp_path / "g" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "g" / "1" / "model.onnx"))
    (entry,) = scan_repository(tmp_path)
    r = ModelRunner(entry, "cpu")  # the graph does not say F: it loads
    with pytest.raises(RuntimeError, match=r"'g' v1 returned shape \[2, 20\].*names 3 features"):
        r.predict(np.zeros((2, L), np.uint8))
    with pytest.raises(RuntimeError, match="names 3 features"):
        r.warmup([1])  # so a server finds out before it reports SERVING


def test_build_spec_on_tensor_signatures() -> None:
    """build_spec takes ONNX Runtime's reported signatures; symbolic dims may be str or None."""
    entry = ModelEntry("m", 1, (1,), Path("/models/m/1/model.onnx"))
    meta = json.dumps(GOOD_META)
    ins = [TensorInfo("seq", "tensor(float)", (None, 4, None))]
    outs = [TensorInfo("p", "tensor(float)", (None, None))]
    spec = build_spec(entry, ins, outs, meta)
    assert (spec.input_kind, spec.input_name, spec.output_name) == ("onehot", "seq", "p")
    with pytest.raises(ModelRepositoryError, match="/models/m/1/model.onnx: input"):
        build_spec(entry, [TensorInfo("seq", "tensor(float16)", (None, 4, L))], outs, meta)
