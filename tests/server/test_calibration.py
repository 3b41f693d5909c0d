"""Calibration: knots against direct counts, `varfx calibrate`, served quantile kinds, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.cli import main as varfx_main
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server.background import calibrate_model, random_snvs
from varfx.server.calibration import (
    CalibrationFileError,
    Distribution,
    build_calibration,
    load_calibration,
)
from varfx.server.genome import Genome
from varfx.server.genome_identity import file_sha256
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ScoringOptions, score

K = pb.ScoreKind


def _direct(bg: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantile, signed quantile and p-value counted directly (bg [N, F], d [k, F])."""
    n = len(bg)
    q = (np.abs(bg)[None] <= np.abs(d)[:, None]).sum(axis=1) / n
    sq = 2 * (bg[None] <= d[:, None]).sum(axis=1) / n - 1
    p = (1 + (np.abs(bg)[None] >= np.abs(d)[:, None]).sum(axis=1)) / (1 + n)
    return q, sq, p


def test_knots_exact_when_small_and_in_the_tails_when_large() -> None:
    rng = np.random.default_rng(3)
    small = rng.normal(0, 0.1, (500, 3)).astype(np.float32)
    small[:50, 0] = 0.0  # ties
    cal = build_calibration(["a", "b", "c"], small, small * 3, model_sha256="x", description="t")
    d = np.concatenate([small[:40], rng.normal(0, 0.2, (40, 3))]).astype(np.float32)
    cols = np.arange(3)
    q, sq, p = _direct(small, d)
    np.testing.assert_allclose(cal.quantile(d, cols), q, atol=1e-6)
    np.testing.assert_allclose(cal.signed_quantile(d, cols), sq, atol=1e-6)
    np.testing.assert_allclose(cal.pvalue(d, cols), p, rtol=1e-5)

    big = rng.normal(0, 0.1, (20_000, 2)).astype(np.float32)
    cal = build_calibration(
        ["a", "b"], big, big, model_sha256="x", description="t", tail=200, middle=400
    )
    assert cal.abs_diff.values.shape[1] < 1000  # knots, not the whole background
    d = rng.normal(0, 0.15, (300, 2)).astype(np.float32)
    q, sq, p = _direct(big, d)
    got_q = cal.quantile(d, np.arange(2))
    assert np.all(got_q <= q + 1e-6)
    assert np.max(q - got_q) <= 1 / 400 + 1 / 20_000  # at most one knot's gap low
    tail = q > 1 - 200 / 20_000  # the exact upper tail
    assert tail.any()
    np.testing.assert_allclose(got_q[tail], q[tail], atol=1e-7)
    got_p = cal.pvalue(d, np.arange(2))
    np.testing.assert_allclose(got_p[tail], p[tail], rtol=1e-5)


def test_distribution_refuses_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        Distribution.from_samples(np.zeros((0, 2), np.float32))


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=11), length=20)
    write_model(repo, name="plain", net=TinyCNN.random(2, seed=12), length=20)
    return repo


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(5)
    seq = "".join(rng.choice(list("ACGT"), 3000))
    genome = write_fasta(tmp / "g.fa", {"chr1": seq[:1500] + "N" * 30 + seq[1500:]})
    repo = _repo(tmp)
    rc = varfx_main(
        [
            "calibrate",
            str(repo / "cal" / "1"),
            "--genome",
            str(genome),
            "-n",
            "600",
            "--indels",
            "600",
        ]
    )
    assert rc == 0
    return repo, genome


def test_calibrate_writes_files_tied_to_the_model(calibrated: tuple[Path, Path]) -> None:
    repo, _ = calibrated
    desc = json.loads((repo / "cal" / "1" / "calibration.json").read_text())
    assert desc["model_sha256"] == file_sha256(repo / "cal" / "1" / "model.onnx")
    assert desc["format"] == "varfx-calibration-2"
    assert desc["n"] == 1200
    assert desc["kind"] == "random-snvs+random-indels"
    assert desc["not_scored"] == 0
    assert {g: v["n"] for g, v in desc["groups"].items()} == {"substitution": 600, "indel": 600}
    assert desc["missing"] == {}
    assert desc["description"].startswith("600 random N-free SNVs (3 alleles at 200 sites)")
    assert "; indels: 600 random indels (" in desc["description"]


def test_random_background_is_n_free_and_covers_three_alts(calibrated: tuple[Path, Path]) -> None:
    _, genome_path = calibrated
    with Genome(genome_path) as genome:
        bg = random_snvs(genome, 90, 20, seed=1)
        rows = bg.variants.rows()
        seq = genome.fetch("chr1", 0, genome.contigs["chr1"])
    assert len(rows) == 90
    for _chrom, pos, ref, alt, _id in rows:
        window = seq[pos - 1 - 9 : pos - 1 + 11]
        assert len(window) == 20
        assert set(window) <= set(b"ACGT")
        assert ref.encode() == seq[pos - 1 : pos]
        assert alt != ref
    sites = {r[1] for r in rows}
    assert len(sites) == 30


def _server(repo: Path, genome: Path):  # type: ignore[no-untyped-def]
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=repo, genome=genome, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, warmup_batch_sizes=(1,),
    )  # fmt: skip
    return start_in_thread(config)


def test_served_quantiles_match_direct_counts(calibrated: tuple[Path, Path]) -> None:
    repo, genome_path = calibrated
    (entry,) = [e for e in scan_repository(repo) if e.name == "cal"]
    runner = ModelRunner(entry, "cpu")
    with Genome(genome_path) as genome:  # the same background, scored again, counted directly
        bg = random_snvs(genome, 600, 20, seed=0)
        bg_diff = score(runner, genome, bg.variants).diff
    variants = [
        pb.Variant(chrom="chr1", pos=p, ref=r, alt=a)
        for p, r, a in [(100, "", "C"), (400, "", "T"), (2900, "", "G"), (1510, "", "A")]
    ]
    seq = Path(genome_path).read_text().split("\n", 1)[1].replace("\n", "")
    for v in variants:
        v.ref = seq[v.pos - 1]
        if v.alt == v.ref:
            v.alt = "A" if v.ref != "A" else "C"
    kinds = [K.SCORE_KIND_DIFF, K.SCORE_KIND_QUANTILE, K.SCORE_KIND_SIGNED_QUANTILE]
    kinds.append(K.SCORE_KIND_PVALUE)
    with _server(repo, genome_path) as server:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        info = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert info["cal"].calibration.startswith("600 random N-free SNVs")
        assert info["plain"].calibration == ""
        req = pb.ScoreVariantsRequest(
            model="cal", variants=variants, options=pb.ScoreOptions(scores=kinds)
        )
        resp = stub.ScoreVariants(req)
        packed_req = pb.ScoreVariantsRequest()
        packed_req.CopyFrom(req)
        packed_req.options.packed = True
        packed = stub.ScoreVariants(packed_req).packed
    assert resp.manifest.calibration == info["cal"].calibration
    ok = [s for s in resp.scores if s.status.code == pb.OK]
    assert len(ok) == 3
    assert resp.scores[3].status.code == pb.REFERENCE_GAP
    d = np.array([s.diff for s in ok], dtype=np.float32)
    q, sq, p = _direct(bg_diff, d)
    np.testing.assert_allclose([s.quantile for s in ok], q, atol=1e-6)
    np.testing.assert_allclose([s.signed_quantile for s in ok], sq, atol=1e-6)
    np.testing.assert_allclose([s.pvalue for s in ok], p, rtol=1e-5)
    assert [s.max_quantile for s in ok] == pytest.approx(q.max(axis=1).tolist(), abs=1e-6)
    assert [s.max_quantile_index for s in ok] == q.argmax(axis=1).tolist()
    assert ok[0].max_quantile_feature == info["cal"].features[int(q[0].argmax())]
    pq = np.frombuffer(packed.quantile, "<f4").reshape(4, 3)
    np.testing.assert_array_equal(pq[:3], np.array([s.quantile for s in ok], dtype=np.float32))
    assert np.isnan(pq[3]).all()
    index = np.frombuffer(packed.max_quantile_index, "<i4")
    np.testing.assert_array_equal(index, [*q.argmax(axis=1), -1])
    assert packed.pvalue
    assert packed.signed_quantile


def test_uncalibrated_model_refuses_calibrated_kinds(calibrated: tuple[Path, Path]) -> None:
    repo, genome = calibrated
    with _server(repo, genome) as server:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        v = pb.Variant(chrom="chr1", pos=100, ref="A", alt="C")
        opts = pb.ScoreOptions(scores=[K.SCORE_KIND_QUANTILE])
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(pb.ScoreVariantsRequest(model="plain", variants=[v], options=opts))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'plain'" in str(err.value.details())
        assert "varfx calibrate" in str(err.value.details())
        # raw kinds still work for it
        plain = stub.ScoreVariants(pb.ScoreVariantsRequest(model="plain", variants=[v]))
        assert len(plain.scores) == 1


def test_stale_calibration_is_refused(calibrated: tuple[Path, Path], tmp_path: Path) -> None:
    src, genome = calibrated
    repo = tmp_path / "models"
    shutil.copytree(src, repo)
    # the model file changes after calibration: same features, other weights
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=99), length=20)
    sha = file_sha256(repo / "cal" / "1" / "model.onnx")
    with pytest.raises(CalibrationFileError, match="stale calibration"):
        load_calibration(repo / "cal" / "1", model_sha256=sha, features=["feat0", "feat1", "feat2"])
    with _server(repo, genome) as server:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        info = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert info["cal"].calibration == ""
        v = pb.Variant(chrom="chr1", pos=100, ref="A", alt="C")
        opts = pb.ScoreOptions(scores=[K.SCORE_KIND_PVALUE])
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(pb.ScoreVariantsRequest(model="cal", variants=[v], options=opts))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "stale calibration" in str(err.value.details())


def test_in_process_score_needs_a_calibration(calibrated: tuple[Path, Path]) -> None:
    from varfx.server.errors import CalibrationUnavailableError

    repo, genome_path = calibrated
    (entry,) = [e for e in scan_repository(repo) if e.name == "cal"]
    runner = ModelRunner(entry, "cpu")
    cal = load_calibration(
        entry.path.parent, model_sha256=file_sha256(entry.path), features=runner.spec.features
    )
    assert cal is not None
    opts = ScoringOptions(kinds=(K.SCORE_KIND_QUANTILE,))
    with Genome(genome_path) as genome:
        bg = random_snvs(genome, 30, 20, seed=4)
        with pytest.raises(CalibrationUnavailableError, match="varfx calibrate"):
            score(runner, genome, bg.variants, opts)
        result = score(runner, genome, bg.variants, opts, calibration=cal)
    assert result.quantile is not None
    assert result.quantile.shape == (30, 3)
    assert np.all((result.quantile >= 0) & (result.quantile <= 1))


def test_calibrate_cli_names_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = varfx_main(["calibrate", str(tmp_path / "nope" / "1"), "--genome", str(tmp_path / "g")])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


def test_calibrate_model_from_vcf(calibrated: tuple[Path, Path], tmp_path: Path) -> None:
    src, genome = calibrated
    repo = tmp_path / "m"
    shutil.copytree(src / "plain", repo / "plain")
    vcf = tmp_path / "common.vcf"
    seq = Path(genome).read_text().split("\n", 1)[1].replace("\n", "")
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=chr1>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for pos in range(50, 1400, 7):
        ref = seq[pos - 1]
        lines.append(f"chr1\t{pos}\t.\t{ref}\t{'G' if ref != 'G' else 'T'}\t.\t.\t.")
    lines.append("chrX\t5\t.\tA\tC\t.\t.\t.")  # not in the genome: left out, counted
    vcf.write_text("\n".join(lines) + "\n")
    cal, _ = calibrate_model(repo / "plain" / "1", genome, background_vcf=vcf)
    assert cal.n == len(range(50, 1400, 7))
    assert cal.info["not_scored"] == 1
    assert "common.vcf" in cal.description
