"""config.pbtxt for Triton: parsed with Triton's own model-config protobuf, checked against ONNX."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.onnx_models import write_model
from varfx.training.triton_config import (
    CONFIG_NAME,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_DELAY_US,
    TritonConfigError,
    main,
    triton_config,
)

onnx = pytest.importorskip("onnx")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

COMMITTED = [REPO / "models" / "sim-chromatin", REPO / "models" / "brain-hg19"]
_ONNX_TO_TRITON = {
    onnx.TensorProto.UINT8: model_config_pb2.TYPE_UINT8,
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
}


def _parse(text: str) -> object:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _onnx_tensors(path: Path) -> list[tuple[str, int, list[int]]]:
    """(name, Triton data type, dims after the batch dimension) of inputs then outputs."""
    graph = onnx.load(str(path)).graph
    out = []
    for value in [*graph.input, *graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        assert dims[0] == -1
        out.append((value.name, _ONNX_TO_TRITON[tensor.elem_type], dims[1:]))
    return out


def _config_tensors(config: object) -> list[tuple[str, int, list[int]]]:
    tensors = [*config.input, *config.output]  # type: ignore[attr-defined]
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


@pytest.mark.parametrize(
    ("input_kind", "length", "n_features"), [("tokens", 20, 3), ("onehot", 30, 5)]
)
def test_config_parses_with_tritons_protobuf(
    tmp_path: Path, input_kind: str, length: int, n_features: int
) -> None:
    path = write_model(
        tmp_path, name="m-1", length=length, n_features=n_features, input_kind=input_kind
    )
    config = _parse(triton_config(tmp_path / "m-1"))
    assert config.name == "m-1"  # type: ignore[attr-defined]
    assert config.platform == "onnxruntime_onnx"  # type: ignore[attr-defined]
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE  # type: ignore[attr-defined]
    batching = config.dynamic_batching  # type: ignore[attr-defined]
    assert batching.max_queue_delay_microseconds == DEFAULT_MAX_QUEUE_DELAY_US
    assert _config_tensors(config) == _onnx_tensors(path)
    dims = [4, length] if input_kind == "onehot" else [length]
    assert _config_tensors(config)[0][2] == dims
    assert _config_tensors(config)[1][2] == [n_features]


def test_committed_models_have_current_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", *map(str, COMMITTED)]) == 0, capsys.readouterr().err
    for model_dir in COMMITTED:
        config = _parse((model_dir / CONFIG_NAME).read_text())
        newest = max(
            (p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        assert config.name == model_dir.name  # type: ignore[attr-defined]
        assert _config_tensors(config) == _onnx_tensors(newest / "model.onnx")


def test_check_finds_missing_and_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_model(tmp_path, name="m")
    assert main(["--check", str(tmp_path / "m")]) == 1
    assert "missing or stale" in capsys.readouterr().err
    assert main([str(tmp_path / "m"), "--max-batch-size", "64"]) == 0
    text = (tmp_path / "m" / CONFIG_NAME).read_text()
    assert _parse(text).max_batch_size == 64  # type: ignore[attr-defined]
    assert main(["--check", str(tmp_path / "m")]) == 1  # the default is 256
    assert main(["--check", str(tmp_path / "m"), "--max-batch-size", "64"]) == 0


def test_versions_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_model(tmp_path, name="m", version=1, length=20)
    write_model(tmp_path, name="m", version=2, length=20)
    assert "dims: [ 20 ]" in triton_config(tmp_path / "m")
    write_model(tmp_path, name="m", version=3, length=24)
    with pytest.raises(TritonConfigError, match=r"m/1/model.onnx and .*m/3/model.onnx"):
        triton_config(tmp_path / "m")
    assert main([str(tmp_path / "m")]) == 2
    assert "different inputs or outputs" in capsys.readouterr().err
    assert not (tmp_path / "m" / CONFIG_NAME).exists()


def test_no_model_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(TritonConfigError, match="no <version>/model.onnx"):
        triton_config(tmp_path / "m")


def test_defaults_are_the_servers() -> None:
    from varfx.server.config import ServerConfig

    defaults = ServerConfig(model_repo=Path("."))
    assert defaults.max_batch == DEFAULT_MAX_BATCH_SIZE
    assert round(defaults.max_delay_ms * 1000) == DEFAULT_MAX_QUEUE_DELAY_US


def test_repository_scan_ignores_config(tmp_path: Path) -> None:
    from varfx.server.repository import scan_repository

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "models", repo)
    assert all((repo / d.name / CONFIG_NAME).is_file() for d in COMMITTED)
    entries = {e.name: (e.version, e.versions) for e in scan_repository(repo)}
    assert entries == {"brain-hg19": (2, (1, 2)), "sim-chromatin": (1, (1,))}
