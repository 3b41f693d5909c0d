"""The CUDA execution provider path (skipped where onnxruntime has no CUDA provider).

Run on a GPU machine with onnxruntime-gpu installed (varfx[gpu]); see docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tests.onnx_models import TinyCNN, write_model
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner, select_providers

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDAExecutionProvider here",
)


def test_cuda_request_without_provider_is_a_clear_error() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match=r"varfx\[gpu\]"):
        select_providers("cuda")
    assert select_providers("auto") == ["CPUExecutionProvider"]


@needs_cuda
def test_cuda_runner_matches_cpu(tmp_path: Path) -> None:
    write_model(tmp_path, name="m", net=TinyCNN.random(16, channels=64, kernel=9), length=1000)
    entry = scan_repository(tmp_path)[0]
    gpu = ModelRunner(entry, "cuda")
    cpu = ModelRunner(entry, "cpu")
    assert gpu.device == "cuda:0"
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64, 257):
        tokens = rng.integers(0, 5, (batch, 1000), dtype=np.uint8)
        np.testing.assert_allclose(gpu.predict(tokens), cpu.predict(tokens), atol=1e-4)


@needs_cuda
def test_cuda_server_scores(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", name="m", length=20, n_features=4)
    fasta = tmp_path / "g.fa"
    fasta.write_text(">chr1\n" + "ACGTTGCA" * 50 + "\n")
    config = ServerConfig(
        model_repo=tmp_path / "repo", genome=fasta, host="127.0.0.1", port=0, metrics_port=-1,
        device="cuda", warmup_batch_sizes=(1, 8),
    )  # fmt: skip
    with start_in_thread(config) as srv:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        assert stub.ListModels(pb.ListModelsRequest()).models[0].device == "cuda:0"
        resp = stub.ScoreVariants(
            pb.ScoreVariantsRequest(variants=[pb.Variant(chrom="chr1", pos=9, ref="A", alt="G")])
        )
        assert resp.scores[0].status.code == pb.OK
        assert len(resp.scores[0].diff) == 4
