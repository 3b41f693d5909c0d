"""A tiny real training run (checkpoints, metrics, plots, resume) and its ONNX export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.training._tiny import make_tiny
from varfx.cli import main
from varfx.training.dataset import IndexConfig, SplitSpec
from varfx.training.errors import ExportError, ParityError
from varfx.training.export import export_run, load_run_model, parity_check
from varfx.training.models import ModelConfig
from varfx.training.onnx_layout import count_1d_convs
from varfx.training.train import METRICS_COLUMNS, TrainConfig, train

L = 200


def _config(
    tmp: Path, out: Path, epochs: int, *, resume: bool = False, device: str = "cpu"
) -> TrainConfig:
    data_dir = tmp / "data"
    if not (data_dir / "genome.fa").exists():
        data_dir.mkdir(exist_ok=True)
        make_tiny(data_dir, n_contigs=3, length=8000)
    return TrainConfig(
        genome=str(data_dir / "genome.fa"),
        peaks=(str(data_dir / "peaks"),),
        out=str(out),
        model=ModelConfig("deepsea", L, channels=(8, 8), hidden=8, kernel_size=9, dropout=0.1),
        index=IndexConfig(length=L, bin_size=100, stride=50, negative_ratio=2.0),
        split=SplitSpec.from_args(["chr2"], ["chr3"]),
        epochs=epochs,
        batch_size=32,
        lr=3e-3,
        patience=5,
        device=device,
        resume=resume,
        reverse_complement=True,
        progress=False,
        threads=1,
        assembly="tiny1",
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    out = tmp / "run"
    result = train(_config(tmp, out, epochs=2))
    assert result.epochs_run == 2
    return out


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_run_dir_has_checkpoints_metrics_plots_summary(run_dir: Path) -> None:
    for name in ("config.json", "index.npz", "last.pt", "best.pt", "metrics.csv", "summary.json"):
        assert (run_dir / name).stat().st_size > 0, name
    for png in ("learning_curves.png", "test_roc.png", "test_pr.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    rows = _rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == list(METRICS_COLUMNS)
    assert all(float(r["train_loss"]) > 0 for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["features"] == ["featA", "featB"]
    per = summary["test"]["per_feature"]
    assert set(per) == {"featA", "featB"}
    assert all(0.0 <= per[f]["auroc"] <= 1.0 and per[f]["positives"] > 0 for f in per)
    assert summary["split"]["test"][0]["contig"] == "chr3"
    assert summary["data"]["peaks"]  # file hashes recorded


def test_resume_continues_from_last_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = torch.load(copy / "last.pt", weights_only=False)
    result = train(_config(run_dir.parent, copy, epochs=3, resume=True))
    rows = _rows(copy)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[:2] == _rows(run_dir)  # history kept, not rewritten
    after = torch.load(copy / "last.pt", weights_only=False)
    assert before["epoch"] == 2
    assert after["epoch"] == 3
    assert result.epochs_run == 3
    changed = any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert changed  # it trained on from the checkpoint


def test_export_parity_and_metadata(run_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    r = export_run(run_dir, repo, "tiny")
    assert r.path == repo / "tiny" / "1" / "model.onnx"
    assert r.version == 1
    assert r.max_abs_diff <= 1e-5
    m = onnx.load(str(r.path))
    assert m.opset_import[0].version >= 17
    meta = json.loads({p.key: p.value for p in m.metadata_props}["varfx"])
    for key in ("features", "sequence_length", "alphabet", "output", "assembly"):
        assert key in meta
    assert meta["features"] == ["featA", "featB"]
    assert meta["sequence_length"] == L
    assert meta["alphabet"] == "ACGT"
    assert meta["output"] == "probabilities"
    assert meta["assembly"] == "tiny1"
    assert set(meta["training_summary"]["per_feature"]) == {"featA", "featB"}
    assert meta["training_summary"]["split"]["valid"][0]["contig"] == "chr2"
    prov = meta["provenance"]
    assert prov["varfx_version"]
    assert prov["exported_utc"]
    assert prov["data"]["peaks"]
    # the graph: uint8 tokens [batch, L] -> float32 probabilities [batch, F], dynamic batch
    sess = ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("tokens", "tensor(uint8)", L)
    assert (out.name, out.type, out.shape[1]) == ("probabilities", "tensor(float)", 2)
    assert isinstance(inp.shape[0], str)
    # Triton's config.pbtxt beside the version folders (test_triton_config.py parses it)
    config = (repo / "tiny" / "config.pbtxt").read_text()
    assert 'input [\n  {\n    name: "tokens"\n    data_type: TYPE_UINT8\n' in config
    assert f"dims: [ {L} ]" in config
    # 1-D conv layers are written as 2-D ones by default; --conv1d keeps them
    assert meta["conv_layout"] == "2d"
    assert count_1d_convs(r.path.read_bytes()) == 0
    model, _, _ = load_run_model(run_dir)
    tokens = np.random.default_rng(5).integers(0, 5, (13, L), dtype=np.uint8)
    got = sess.run(None, {"tokens": tokens})[0]
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(tokens))).numpy()
    assert np.max(np.abs(got - want)) <= 1e-5
    # next export goes to version 2; an existing version is not overwritten silently
    assert export_run(run_dir, repo, "tiny").version == 2
    with pytest.raises(ExportError, match="exists"):
        export_run(run_dir, repo, "tiny", version=1)
    one_d = export_run(run_dir, repo, "tiny1d", conv2d=False)
    assert one_d.metadata["conv_layout"] == "1d"
    assert count_1d_convs(one_d.path.read_bytes()) > 0
    s1 = ort.InferenceSession(str(one_d.path), providers=["CPUExecutionProvider"])
    assert np.max(np.abs(s1.run(None, {"tokens": tokens})[0] - got)) <= 1e-5


def test_export_refuses_a_model_that_fails_parity(run_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # fp16 weights really change the outputs; an impossibly tight tolerance must refuse them
    with pytest.raises(ParityError, match="max abs diff"):
        export_run(run_dir, repo, "tiny", fp16=True, fp16_tolerance=1e-9)
    assert not (repo / "tiny" / "1" / "model.onnx").exists()
    assert not list(repo.rglob("*.onnx*"))
    # and a graph of other weights is caught by the parity check itself
    model, mcfg, _ = load_run_model(run_dir)
    other, _, _ = load_run_model(run_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    from varfx.training.export import _export_bytes

    with pytest.raises(ParityError):
        parity_check(model, _export_bytes(other, mcfg.sequence_length), mcfg.sequence_length)


def test_fp16_export_reports_accuracy_change(run_dir: Path, tmp_path: Path) -> None:
    r = export_run(run_dir, tmp_path / "repo", "tiny16", fp16=True)
    assert r.fp16_max_abs_diff is not None
    assert 0 < r.fp16_max_abs_diff <= 1e-2
    assert r.fp16_test_auroc_change is not None
    assert abs(r.fp16_test_auroc_change) < 0.05
    assert r.metadata["precision"] == "fp16-weights"
    full = export_run(run_dir, tmp_path / "repo", "tiny32")
    assert r.path.stat().st_size < full.path.stat().st_size


def test_cli_train_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_tiny(tmp_path, n_contigs=3, length=6000)
    run = tmp_path / "run"
    rc = main([
        "train", "--genome", str(data.genome), "--peaks", str(data.peaks_dir), "--out", str(run),
        "--arch", "basset", "--channels", "8", "8", "--hidden", "8", "--length", "200",
        "--bin-size", "100", "--valid-chroms", "chr2", "--test-chroms", "chr3", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--threads", "1",
    ])  # fmt: skip
    assert rc == 0
    assert "test mean auROC" in capsys.readouterr().out
    rc = main(["export", "--run", str(run), "--repo", str(tmp_path / "repo"), "--name", "m"])
    assert rc == 0
    assert "max abs diff" in capsys.readouterr().out
    assert (tmp_path / "repo" / "m" / "1" / "model.onnx").is_file()
    rc = main(["train", "--genome", str(data.genome), "--peaks", str(data.peaks_dir),
               "--out", str(tmp_path / "r2"), "--valid-chroms", "chrQ", "--test-chroms", "chr3",
               "--length", "200", "--no-progress"])  # fmt: skip
    assert rc == 2
    assert "chrQ" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_step(tmp_path: Path) -> None:
    result = train(_config(tmp_path, tmp_path / "cuda_run", epochs=1, device="cuda"))
    assert result.epochs_run == 1
    assert (tmp_path / "cuda_run" / "best.pt").is_file()


def test_exported_model_loads_in_the_server_runtime(run_dir: Path, tmp_path: Path) -> None:
    from varfx.server.repository import scan_repository
    from varfx.server.runtime import ModelRunner

    r = export_run(run_dir, tmp_path / "repo", "tiny")
    (entry,) = scan_repository(tmp_path / "repo")
    runner = ModelRunner(entry, device="cpu")
    assert list(runner.spec.features) == ["featA", "featB"]
    assert runner.spec.sequence_length == L
    tokens = np.random.default_rng(2).integers(0, 5, (4, L), dtype=np.uint8)
    direct = ort.InferenceSession(str(r.path)).run(None, {"tokens": tokens})[0]
    assert np.allclose(runner.predict(tokens), direct, atol=1e-6)


def test_early_stopping_on_validation_auprc(tmp_path: Path) -> None:
    import dataclasses

    cfg = dataclasses.replace(_config(tmp_path, tmp_path / "stop", epochs=5), lr=1e-12, patience=1)
    result = train(cfg)  # a learning rate this small cannot improve validation auPRC
    assert result.best_epoch == 1
    assert result.epochs_run == 2
    assert [int(r["epoch"]) for r in _rows(tmp_path / "stop")] == [1, 2]


def test_export_records_the_training_genome_and_the_server_checks_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import grpc
    import pysam

    from tests.conftest import write_fasta
    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
    from varfx.server import ServerConfig, start_in_thread
    from varfx.server.genome_identity import GenomePairingError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    r = export_run(run_dir, tmp_path / "repo", "tiny")
    (fasta,) = json.loads((run_dir / "config.json").read_text())["genome"]
    with pysam.FastaFile(fasta) as fa:
        want = [
            [n, len(s), hashlib.md5(s.upper().encode()).hexdigest()]
            for n, s in ((n, fa.fetch(n)) for n in fa.references)
        ]
    assert r.metadata["genome"] == {"assembly": "tiny1", "contigs": want}
    m = onnx.load(str(r.path))
    embedded = json.loads({p.key: p.value for p in m.metadata_props}["varfx"])
    assert embedded["genome"] == r.metadata["genome"]

    def config(genome: Path | str) -> ServerConfig:
        return ServerConfig(
            model_repo=tmp_path / "repo", genome=Path(genome), host="127.0.0.1", port=0,
            metrics_port=-1, warmup_batch_sizes=(2,),
        )  # fmt: skip

    with start_in_thread(config(fasta)) as srv:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        (info,) = stub.ListModels(pb.ListModelsRequest()).models
    assert [[c.name, c.length, c.md5] for c in info.training_genome.contigs] == want
    assert info.genome.digest == info.training_genome.digest
    assert not info.genome_mismatch_allowed
    other = write_fasta(tmp_path / "other.fa", {want[0][0]: "ACGT" * 100})
    with pytest.raises(GenomePairingError, match=f"contig '{want[0][0]}' is 400 bp"):
        start_in_thread(config(other))
