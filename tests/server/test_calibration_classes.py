"""Per-class calibration: indels ranked against an indel null, SNVs/MNVs against the SNV null.

Real ONNX files, a real FASTA and the real server; the expected quantiles are counted directly
with numpy over the background scores of each class.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import write_fasta
from tests.onnx_models import TinyCNN, write_model
from tests.server.test_calibration import _direct
from varfx.cli import main as varfx_main
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import _calibrate_cli, background
from varfx.server.background import calibrate_model, random_indels, random_snvs
from varfx.server.calibration import (
    DELETION,
    INSERTION,
    SUBSTITUTION,
    CalibrationFileError,
    load_calibration,
)
from varfx.server.genome import Genome
from varfx.server.genome_identity import file_sha256
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ScoringOptions, score

K = pb.ScoreKind
L = 20
ALL = (K.SCORE_KIND_DIFF, K.SCORE_KIND_QUANTILE, K.SCORE_KIND_SIGNED_QUANTILE, K.SCORE_KIND_PVALUE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("calcls")
    rng = np.random.default_rng(8)
    seq = "".join(rng.choice(list("ACGT"), 4000))
    genome = write_fasta(tmp / "g.fa", {"chr1": seq})
    repo = tmp / "models"
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=21), length=L)
    args = ["calibrate", str(repo / "cal" / "1"), "--genome", str(genome), "-n", "300"]
    assert varfx_main([*args, "--indels", "400"]) == 0
    return repo, genome, seq


def _runner(repo: Path) -> ModelRunner:
    (entry,) = [e for e in scan_repository(repo) if e.name == "cal"]
    return ModelRunner(entry, "cpu")


def _mixed(seq: str) -> list[tuple[int, str, str]]:
    """SNVs, an MNV, insertions and deletions at fixed positions of the test genome."""
    out = []
    for p in (300, 900, 1700, 2500, 3300):
        r = seq[p - 1]
        out.append((p, r, "A" if r != "A" else "G"))  # SNV
        out.append((p + 40, seq[p + 39], seq[p + 39] + "TTG"))  # insertion
        out.append((p + 80, seq[p + 79 : p + 83], seq[p + 79]))  # 3-bp deletion
    mnv = "".join("C" if b != "C" else "A" for b in seq[1999:2001])
    out.append((2000, seq[1999:2001], mnv))
    return out


def test_random_indels_follow_the_window_rule(setup: tuple[Path, Path, str]) -> None:
    _, genome_path, seq = setup
    with Genome(genome_path) as genome:
        bg = random_indels(genome, 500, L, seed=3)
        again = random_indels(genome, 500, L, seed=3)
        snvs = random_snvs(genome, 300, L, seed=3)
    rows = bg.variants.rows()
    assert rows == again.variants.rows()  # seeded
    assert len(rows) == 500
    assert len({r[1] for r in rows}) == 500
    lengths = []
    for _chrom, pos, ref, alt, _id in rows:
        assert ref[0] == alt[0] == seq[pos - 1]  # VCF anchor base
        assert (len(ref) == 1) != (len(alt) == 1)
        if len(ref) > 1:  # a deletion of the genome's bases
            assert ref == seq[pos - 1 : pos - 1 + len(ref)]
        assert set(alt) <= set("ACGT")
        lengths.append(abs(len(ref) - len(alt)))
        c = L // 2 - 1
        assert pos - 1 - c >= 0
        assert pos - 1 - c + L + 11 <= len(seq)
    lengths_a = np.array(lengths)
    assert lengths_a.min() == 1
    assert lengths_a.max() <= L // 2
    assert 0.4 < (lengths_a == 1).mean() < 0.75  # heavy at 1 bp, as population indels
    ins = sum(len(r[3]) > 1 for r in rows)
    assert 150 < ins < 350
    assert bg.info["insertions"] == ins
    assert {r[1] for r in rows} != {r[1] for r in snvs.variants.rows()}


def test_indels_ranked_against_the_indel_null(setup: tuple[Path, Path, str]) -> None:
    repo, genome_path, seq = setup
    runner = _runner(repo)
    cal = load_calibration(
        repo / "cal" / "1",
        model_sha256=file_sha256(repo / "cal" / "1" / "model.onnx"),
        features=runner.spec.features,
    )
    assert cal is not None
    assert {g: null.n for g, null in cal.nulls.items()} == {"substitution": 300, "indel": 400}
    mixed = _mixed(seq)
    with Genome(genome_path) as genome:  # the backgrounds scored again, counted directly
        snv_bg = score(runner, genome, random_snvs(genome, 300, L, seed=0).variants).diff
        indel_res = score(runner, genome, random_indels(genome, 400, L, seed=0).variants)
        variants = [pb.Variant(chrom="chr1", pos=p, ref=r, alt=a) for p, r, a in mixed]
        got = score(runner, genome, variants, ScoringOptions(kinds=ALL), calibration=cal)
    assert len(indel_res.ok_index) == 400
    assert set(np.unique(indel_res.variant_class).tolist()) == {INSERTION, DELETION}
    indel_bg = indel_res.diff
    assert got.variant_class is not None
    assert got.variant_class.tolist() == [SUBSTITUTION, INSERTION, DELETION] * 5 + [SUBSTITUTION]
    sub = got.variant_class == SUBSTITUTION
    assert got.quantile is not None
    assert got.signed_quantile is not None
    assert got.pvalue is not None
    for rows, bg in ((sub, snv_bg), (~sub, indel_bg)):
        q, sq, p = _direct(bg, got.diff[rows])
        np.testing.assert_allclose(got.quantile[rows], q, atol=1e-6)
        np.testing.assert_allclose(got.signed_quantile[rows], sq, atol=1e-6)
        np.testing.assert_allclose(got.pvalue[rows], p, rtol=1e-5)
    # against the SNV null the indels would rank otherwise (the point of the indel null)
    q_as_snv, _, _ = _direct(snv_bg, got.diff[~sub])
    assert np.abs(q_as_snv - got.quantile[~sub]).max() > 0.05
    assert all(m == "" or "ranked against" not in m for m in got.messages)


def test_served_mixed_request_ranks_each_against_its_class(
    setup: tuple[Path, Path, str],
) -> None:
    from varfx.server import ServerConfig, start_in_thread

    repo, genome_path, seq = setup
    runner = _runner(repo)
    mixed = _mixed(seq)
    with Genome(genome_path) as genome:
        snv_bg = score(runner, genome, random_snvs(genome, 300, L, seed=0).variants).diff
        indel_bg = score(runner, genome, random_indels(genome, 400, L, seed=0).variants).diff
    config = ServerConfig(
        model_repo=repo, genome=genome_path, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, warmup_batch_sizes=(1,),
    )  # fmt: skip
    variants = [pb.Variant(chrom="chr1", pos=p, ref=r, alt=a) for p, r, a in mixed]
    req = pb.ScoreVariantsRequest(
        model="cal", variants=variants, options=pb.ScoreOptions(scores=ALL)
    )
    with start_in_thread(config) as server:
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        info = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        resp = stub.ScoreVariants(req)
        packed_req = pb.ScoreVariantsRequest()
        packed_req.CopyFrom(req)
        packed_req.options.packed = True
        packed = stub.ScoreVariants(packed_req).packed
    text = info["cal"].calibration
    assert text.startswith("300 random N-free SNVs")
    assert "; indels: 400 random indels" in text
    assert resp.manifest.calibration == text
    assert all(s.status.code == pb.OK for s in resp.scores)
    d = np.array([s.diff for s in resp.scores], dtype=np.float32)
    is_indel = np.array([len(r) != len(a) for _, r, a in mixed])
    q = np.zeros(d.shape)
    for rows, bg in ((~is_indel, snv_bg), (is_indel, indel_bg)):
        q[rows], sq, p = _direct(bg, d[rows])
        got = [resp.scores[i] for i in np.flatnonzero(rows)]
        np.testing.assert_allclose([s.quantile for s in got], q[rows], atol=1e-6)
        np.testing.assert_allclose([s.signed_quantile for s in got], sq, atol=1e-6)
        np.testing.assert_allclose([s.pvalue for s in got], p, rtol=1e-5)
    assert [s.max_quantile for s in resp.scores] == pytest.approx(q.max(axis=1).tolist(), abs=1e-6)
    pq = np.frombuffer(packed.quantile, "<f4").reshape(len(mixed), 3)
    np.testing.assert_array_equal(pq, np.array([s.quantile for s in resp.scores], np.float32))
    assert not any("ranked against" in s.status.message for s in resp.scores)


def _write_old_format(model_dir: Path) -> None:
    """Rewrite the calibration beside ``model_dir`` as a varfx-calibration-1 file: its SNV null
    under the unprefixed names, as the old writer did."""
    info = json.loads((model_dir / "calibration.json").read_text())
    with np.load(model_dir / "calibration.npz") as z:
        arrays = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("substitution__")}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    (model_dir / "calibration.npz").write_bytes(buf.getvalue())
    sub = info["groups"]["substitution"]
    old = {k: info[k] for k in ("model_sha256", "features", "knots", "model", "model_version")}
    old.update(format="varfx-calibration-1", n=sub["n"], description=sub["description"])
    old["kind"] = "random-snvs"
    (model_dir / "calibration.json").write_text(json.dumps(old))


def test_old_format_loads_as_snvs_and_says_indels_rank_against_them(
    setup: tuple[Path, Path, str], tmp_path: Path
) -> None:
    src, genome_path, seq = setup
    repo = tmp_path / "models"
    shutil.copytree(src, repo)
    model_dir = repo / "cal" / "1"
    runner = _runner(repo)
    sha = file_sha256(model_dir / "model.onnx")
    new = load_calibration(model_dir, model_sha256=sha, features=runner.spec.features)
    _write_old_format(model_dir)
    old = load_calibration(model_dir, model_sha256=sha, features=runner.spec.features)
    assert new is not None
    assert old is not None
    assert set(old.nulls) == {"substitution"}
    assert old.n == 300
    assert old.description.startswith("300 random N-free SNVs")
    assert "indels: none (a varfx-calibration-1 file holds SNVs only" in old.description
    assert old.description.endswith("ranked against the SNVs/MNVs")
    mixed = _mixed(seq)
    with Genome(genome_path) as genome:
        variants = [pb.Variant(chrom="chr1", pos=p, ref=r, alt=a) for p, r, a in mixed]
        res = score(runner, genome, variants, ScoringOptions(kinds=ALL), calibration=old)
    assert res.quantile is not None
    assert res.variant_class is not None
    # every row against the SNV null: the new file's substitution null, by hand
    cols = np.arange(3)
    snv_null = new.nulls["substitution"]
    np.testing.assert_array_equal(res.quantile, snv_null.quantile(res.diff, cols))
    indel = res.variant_class != SUBSTITUTION
    for i, is_indel in zip(res.ok_index.tolist(), indel.tolist(), strict=True):
        if is_indel:
            assert "against the SNVs/MNVs background (300)" in res.messages[i]
            assert "a varfx-calibration-1 file" in res.messages[i]
        else:
            assert "ranked against" not in res.messages[i]
    assert sorted(res.noted) == sorted(set(res.noted) | set(res.ok_index[indel].tolist()))
    # the old format is still tied to its model file
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=98), length=L)
    with pytest.raises(CalibrationFileError, match="stale calibration"):
        load_calibration(
            model_dir,
            model_sha256=file_sha256(model_dir / "model.onnx"),
            features=runner.spec.features,
        )


def test_new_format_stale_calibration_refused(
    setup: tuple[Path, Path, str], tmp_path: Path
) -> None:
    src, _, _ = setup
    repo = tmp_path / "models"
    shutil.copytree(src, repo)
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=97), length=L)
    with pytest.raises(CalibrationFileError, match="stale calibration"):
        load_calibration(
            repo / "cal" / "1",
            model_sha256=file_sha256(repo / "cal" / "1" / "model.onnx"),
            features=["feat0", "feat1", "feat2"],
        )


def _vcf(path: Path, seq: str, snvs: range, indels: range) -> Path:
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for pos in snvs:
        ref = seq[pos - 1]
        lines.append(f"chr1\t{pos}\t.\t{ref}\t{'G' if ref != 'G' else 'T'}\t.\t.\t.")
    for pos in indels:
        lines.append(f"chr1\t{pos}\t.\t{seq[pos - 1 : pos + 1]}\t{seq[pos - 1]}\t.\t.\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vcf_background_with_too_few_indels(setup: tuple[Path, Path, str], tmp_path: Path) -> None:
    src, genome_path, seq = setup
    assert _calibrate_cli.MIN_CLASS == background.MIN_CLASS
    repo = tmp_path / "m"
    shutil.copytree(src, repo)
    model_dir = repo / "cal" / "1"
    vcf = _vcf(tmp_path / "common.vcf", seq, range(50, 3900, 3), range(100, 3800, 400))
    cal, _ = calibrate_model(model_dir, genome_path, background_vcf=vcf)
    n_snv, n_indel = len(range(50, 3900, 3)), len(range(100, 3800, 400))
    assert set(cal.nulls) == {"substitution"}
    assert cal.n == n_snv
    why = f"only {n_indel} indels in the background, fewer than 1000"
    assert cal.missing == {"indel": why}
    assert cal.description == (
        f"{n_snv} SNVs/MNVs of common.vcf (SHA-256 {file_sha256(vcf)[:12]}); "
        f"indels: none ({why}), ranked against the SNVs/MNVs"
    )
    runner = _runner(repo)
    with Genome(genome_path) as genome:
        variants = [pb.Variant(chrom="chr1", pos=p, ref=r, alt=a) for p, r, a in _mixed(seq)]
        res = score(runner, genome, variants, ScoringOptions(kinds=ALL), calibration=cal)
    assert res.variant_class is not None
    for row, i in enumerate(res.ok_index.tolist()):
        if res.variant_class[row] == SUBSTITUTION:
            assert "ranked against" not in res.messages[i]
        else:
            assert f"against the SNVs/MNVs background ({n_snv})" in res.messages[i]
            assert why in res.messages[i]
    # with a lower --min-class the VCF's indels become the indel null
    rc = varfx_main(
        ["calibrate", str(model_dir), "--genome", str(genome_path), "--background", str(vcf),
         "--min-class", str(n_indel)]
    )  # fmt: skip
    assert rc == 0
    again = load_calibration(
        model_dir, model_sha256=file_sha256(model_dir / "model.onnx"), features=runner.spec.features
    )
    assert again is not None
    assert {g: null.n for g, null in again.nulls.items()} == {
        "substitution": n_snv,
        "indel": n_indel,
    }
    assert again.missing == {}
    assert f"; indels: {n_indel} indels of common.vcf" in again.description
    assert varfx_main(["calibrate", str(model_dir), "--genome", str(genome_path),
                       "--min-class", "0"]) == 2  # fmt: skip
