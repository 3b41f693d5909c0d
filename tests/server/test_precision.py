"""Which graph a model is served with (server/runtime.py choose_graph, --precision): the fp16
graph on CUDA when its recorded check passes, fp32 on the CPU unless fp16 is forced. Only the
GPU is mocked (the provider list handed to choose_graph); the graphs, ORT sessions and the gRPC
server are real and run on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from tests.onnx_models import TinyCNN, write_model
from varfx.core.precision import FP16_FILE
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread
from varfx.server.config import ConfigError
from varfx.server.repository import ModelRepositoryError
from varfx.server.runtime import choose_graph

pytest.importorskip("sklearn")  # the check's auROC (varfx[train])

CUDA = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
CPU = ["CPUExecutionProvider"]
L = 40


def _with_fp16(repo: Path, *, diff_bound: float | None = None) -> Path:
    """A tiny model and its checked fp16 graph; returns model.onnx."""
    from varfx.training.fp16 import (
        ValidationWindows,
        check_fp16,
        fp16_compute_graph,
        write_fp16_file,
    )

    path = Path(write_model(repo, name="m", net=TinyCNN.random(3, seed=4), length=L, n_features=3))
    fp32 = path.read_bytes()
    half = fp16_compute_graph(fp32)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, (300, L), dtype=np.uint8)
    labels = rng.integers(0, 2, (300, 3), dtype=np.uint8)
    check = check_fp16(fp32, half, L, ["f0", "f1", "f2"], ValidationWindows(tokens, labels, "v"))
    if diff_bound is not None:  # a check that records a failure
        check = {**check, "max_abs_diff_real": 1.0}
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["varfx"])
    write_fp16_file(path.with_name(FP16_FILE), half, meta, check)
    return path


def test_auto_serves_fp16_on_cuda_only(tmp_path: Path) -> None:
    path = _with_fp16(tmp_path)
    on_gpu = choose_graph(path, "auto", CUDA)
    assert (on_gpu.precision, on_gpu.path.name) == ("fp16", FP16_FILE)
    assert choose_graph(path, "auto", CPU).precision == "fp32"
    assert choose_graph(path, "fp32", CUDA).precision == "fp32"
    assert choose_graph(path, "fp16", CPU).path.name == FP16_FILE
    with pytest.raises(ValueError, match="fp8"):
        choose_graph(path, "fp8", CPU)


def test_a_failed_or_stale_check_is_not_served(tmp_path: Path) -> None:
    failed = _with_fp16(tmp_path / "a", diff_bound=1.0)
    choice = choose_graph(failed, "auto", CUDA)
    assert choice.precision == "fp32"
    assert "max_abs_diff_real" in choice.reason
    with pytest.raises(ModelRepositoryError, match="max_abs_diff_real"):
        choose_graph(failed, "fp16", CUDA)
    stale = _with_fp16(tmp_path / "b")
    write_model(tmp_path / "b", name="m", net=TinyCNN.random(3, seed=5), length=L, n_features=3)
    assert "another model.onnx" in choose_graph(stale, "auto", CUDA).reason
    bare = Path(write_model(tmp_path / "c", name="m", length=L))
    assert choose_graph(bare, "auto", CUDA).precision == "fp32"
    with pytest.raises(ModelRepositoryError, match=r"no .*model\.fp16\.onnx"):
        choose_graph(bare, "fp16", CPU)


def _serve(repo: Path, genome: Path, precision: str) -> tuple[str, np.ndarray]:
    config = ServerConfig(
        model_repo=repo, genome=genome, host="127.0.0.1", port=0, metrics_port=-1,
        precision=precision, warmup_batch_sizes=(1, 8), local_recompute="off",
    )  # fmt: skip
    with start_in_thread(config) as srv:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        info = stub.ListModels(pb.ListModelsRequest()).models[0]
        assert info.device == "cpu"
        assert info.device_windows is False  # CPU: never
        variants = [pb.Variant(chrom="chr1", pos=p, ref=b, alt="A" if b != "A" else "C")
                    for p, b in ((30, "C"), (200, "G"), (1500, "T"))]  # fmt: skip
        resp = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants))
        assert [s.status.code for s in resp.scores] == [pb.OK] * 3
        return info.precision, np.array([list(s.alt) for s in resp.scores])


def test_server_reports_and_serves_the_chosen_precision(tmp_path: Path) -> None:
    from tests.conftest import write_fasta

    seq = list("ACGT" * 500)
    seq[29], seq[199], seq[1499] = "C", "G", "T"
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "".join(seq)})
    _with_fp16(tmp_path / "repo")
    auto, p32 = _serve(tmp_path / "repo", fasta, "auto")
    forced, p16 = _serve(tmp_path / "repo", fasta, "fp16")
    assert (auto, forced) == ("fp32", "fp16")
    diff = np.abs(p16 - p32).max()
    assert 0 < diff < 1e-2


def test_config_refuses_unknown_values() -> None:
    with pytest.raises(ConfigError, match="precision"):
        ServerConfig(precision="half")
    with pytest.raises(ConfigError, match="device_windows"):
        ServerConfig(device_windows="gpu")
    with pytest.raises(ConfigError, match="device_windows_max_mb"):
        ServerConfig(device_windows_max_mb=0)


def test_flags_env_and_toml_keys(tmp_path: Path) -> None:
    from varfx.server.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text('precision = "fp32"\ndevice_windows = "off"\ndevice_windows_max_mb = 64\n')
    c = load_config(config_file=toml, environ={})
    assert (c.precision, c.device_windows, c.device_windows_max_mb) == ("fp32", "off", 64)
    env = {"VARFX_PRECISION": "fp16", "VARFX_DEVICE_WINDOWS_MAX_MB": "128"}
    c = load_config(config_file=toml, environ=env)
    assert (c.precision, c.device_windows_max_mb) == ("fp16", 128)
    assert load_config({"precision": "auto"}, config_file=toml, environ=env).precision == "auto"
