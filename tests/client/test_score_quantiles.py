"""`varfx score` and the client with calibrated kinds: a model calibrated in the test
(`varfx calibrate`), a real server, and every output format checked against the server's own
ScoreVariants quantiles (per-message form, read without the client)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pysam
import pysam.bcftools
import pytest

from tests.client.test_score import data_lines, make_vcf
from tests.onnx_models import TinyCNN, write_model
from varfx.cli import main as varfx_main
from varfx.client import Client, ScoreTable, Status
from varfx.client._convert import table_from_response
from varfx.client.report import collect
from varfx.client.score import ScoreError, ScoreUsageError, _check_manifest, score_vcf
from varfx.client.vcf import VcfReader
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
VARFX = [sys.executable, "-m", "varfx"]
K = pb.ScoreKind
ALL_KINDS = [
    K.SCORE_KIND_DIFF,
    K.SCORE_KIND_QUANTILE,
    K.SCORE_KIND_SIGNED_QUANTILE,
    K.SCORE_KIND_PVALUE,
]


@pytest.fixture(scope="module")
def cal_server(tmp_path_factory: pytest.TempPathFactory, genome_fa: Path) -> Iterator[Any]:
    """A server with ``cal`` (calibrated here on the test genome) and ``plain`` (none)."""
    from varfx.server import ServerConfig, start_in_thread

    repo = tmp_path_factory.mktemp("calrepo") / "models"
    write_model(repo, name="cal", net=TinyCNN.random(3, seed=11), length=20)
    write_model(repo, name="plain", net=TinyCNN.random(2, seed=12), length=20)
    rc = varfx_main(["calibrate", str(repo / "cal" / "1"), "--genome", str(genome_fa), "-n", "600"])
    assert rc == 0
    config = ServerConfig(
        model_repo=repo, genome=genome_fa, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, warmup_batch_sizes=(1,), ref_cache_mb=0,
    )  # fmt: skip
    with start_in_thread(config) as running:  # no reference cache: a request cut the same
        yield running  # way runs the same model batches, so its numbers equal a direct call's


@pytest.fixture(scope="module")
def vcf(tmp_path_factory: pytest.TempPathFactory, genome_seqs: dict[str, str]) -> Path:
    return make_vcf(tmp_path_factory.mktemp("qvcf") / "in.vcf", genome_seqs, n=60)


def _variants(vcf: Path) -> list[Any]:
    return [v for r in VcfReader(vcf) for v in r.variants()]


def _direct(server: Any, vcf: Path, model: str, features: list[str]) -> pb.ScoreVariantsResponse:
    """The server's own answer, one VariantScore message per ALT (no varfx client involved)."""
    variants = [
        pb.Variant(chrom=v.chrom, pos=v.pos, ref=v.ref, alt=v.alt, id=v.id) for v in _variants(vcf)
    ]
    options = pb.ScoreOptions(scores=ALL_KINDS, features=features)
    request = pb.ScoreVariantsRequest(model=model, variants=variants, options=options)
    with grpc.insecure_channel(server.target) as channel:
        response: pb.ScoreVariantsResponse = pb_grpc.VariantEffectServiceStub(
            channel
        ).ScoreVariants(request)
    return response


def _info(server: Any, name: str) -> Any:
    with Client(server.target) as client:
        return {m.name: m for m in client.list_models()}[name]


def _header(path: Path) -> dict[str, str]:
    with pysam.VariantFile(str(path)) as vf:
        lines = str(vf.header).splitlines()
    return dict(
        line[len("##varfx_") :].split("=", 1) for line in lines if line.startswith("##varfx_")
    )


def test_vcf_has_max_quantile_and_per_feature_keys_equal_to_the_server(
    cal_server: Any, vcf: Path, tmp_path: Path
) -> None:
    feats = ["feat0", "feat2"]
    out = tmp_path / "q.vcf.gz"
    with Client(cal_server.target) as client:
        score_vcf(client, vcf, out, model="cal", features=feats)  # one request
    info = _info(cal_server, "cal")
    assert info.calibration.startswith("600 random N-free SNVs")
    head = _header(out)
    assert head["calibration"] == info.calibration  # which background
    assert head["calibration_model_sha256"] == info.sha256 == head["model_sha256"]
    assert "quantile=#{|b|<=|diff|}/N" in head["formulas"]
    assert "--scores diff,quantile" in head["command"]  # the default with --features
    direct = _direct(cal_server, vcf, "cal", feats)
    scores = list(direct.scores)
    with pysam.VariantFile(str(out)) as vf:
        for key in ("VARFX_MAX_QUANTILE", "VARFX_QUANTILE_feat0", "VARFX_QUANTILE_feat2"):
            assert vf.header.info[key].number == "A"
            assert vf.header.info[key].type == "Float"
        assert vf.header.info["VARFX_MAX_QUANTILE_FEATURE"].type == "String"
        assert "VARFX_SIGNED_QUANTILE_feat0" not in vf.header.info
        records = list(vf)
    k = checked = 0
    for rec in records:
        n_alt = len(rec.alts or ("",))
        if rec.alts is None:  # the '.' ALT: one INVALID_ALLELE variant
            k += 1
            continue
        for j in range(n_alt):
            s = scores[k]
            if s.status.code == pb.OK:
                assert rec.info["VARFX_MAX_QUANTILE"][j] == pytest.approx(s.max_quantile, rel=1e-5)
                assert rec.info["VARFX_MAX_QUANTILE_FEATURE"][j] == s.max_quantile_feature
                for f, name in enumerate(feats):
                    got = rec.info[f"VARFX_QUANTILE_{name}"][j]
                    assert got == pytest.approx(s.quantile[f], rel=1e-5, abs=1e-7)
                checked += 1
            else:
                assert rec.info["VARFX_MAX_QUANTILE"][j] is None  # '.', not 0
                assert rec.info["VARFX_QUANTILE_feat0"][j] is None
            k += 1
    assert k == len(scores)
    assert checked >= 50
    assert len({s.max_quantile_feature for s in scores if s.status.code == pb.OK}) == 2
    # bcftools reads it: every record, the same max quantiles
    view = str(pysam.bcftools.view("-H", str(out)))
    assert len(view.splitlines()) == len(records)
    query = str(pysam.bcftools.query("-f", "%INFO/VARFX_MAX_QUANTILE\n", str(out))).split()
    flat = [float(x) for line in query for x in line.split(",") if x != "."]
    want = [s.max_quantile for s in scores if s.status.code == pb.OK]
    np.testing.assert_allclose(flat, want, rtol=1e-5)
    if shutil.which("bcftools"):  # the system's bcftools too, where there is one
        run = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert len(run.stdout.splitlines()) == len(records)


def test_explicit_calibrated_kinds_and_the_report(
    cal_server: Any, vcf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sp.vcf"
    with Client(cal_server.target) as client:
        score_vcf(
            client, vcf, out, model="cal", features=["feat1"], scores="signed_quantile,pvalue"
        )
    direct = _direct(cal_server, vcf, "cal", ["feat1"])
    ok = [s for s in direct.scores if s.status.code == pb.OK]
    by_site = {(s.variant.chrom, s.variant.pos, s.variant.alt): s for s in ok}
    checked = 0
    with pysam.VariantFile(str(out)) as vf:
        assert "VARFX_QUANTILE_feat1" not in vf.header.info
        for rec in vf:
            for j, alt in enumerate(rec.alts or ()):
                s = by_site.get((rec.chrom, rec.pos, alt))
                if s is None or len(s.variant.ref) != len(rec.ref or ""):  # unscored, or normalised
                    continue
                sq, pv = rec.info["VARFX_SIGNED_QUANTILE_feat1"], rec.info["VARFX_PVALUE_feat1"]
                assert sq[j] == pytest.approx(s.signed_quantile[0], rel=1e-5, abs=1e-7)
                assert pv[j] == pytest.approx(s.pvalue[0], rel=1e-5)
                assert rec.info["VARFX_MAX_QUANTILE"][j] == pytest.approx(s.max_quantile, rel=1e-5)
                checked += 1
    assert checked >= 40
    # varfx report picks the calibrated keys up
    data = collect(out)
    assert [(k, f) for k, f, _ in data.details] == [
        ("signed_quantile", "feat1"),
        ("pvalue", "feat1"),
    ]
    assert "VARFX_MAX_QUANTILE" in data.hists
    assert data.manifest["calibration"] == _info(cal_server, "cal").calibration
    best = data.top[0]
    match = [s for s in ok if s.variant.pos == best.pos and s.variant.alt == best.alt]
    assert best.quantile == pytest.approx(match[0].max_quantile, rel=1e-5)


def test_tsv_and_parquet_columns_equal_the_server(
    cal_server: Any, vcf: Path, tmp_path: Path
) -> None:
    feats = ["feat0", "feat1", "feat2"]
    tsv, par = tmp_path / "q.tsv", tmp_path / "q.parquet"
    with Client(cal_server.target) as client:
        score_vcf(client, vcf, tsv, model="cal")
    direct = list(_direct(cal_server, vcf, "cal", feats).scores)
    lines = tsv.read_text().splitlines()
    cols = lines[0].split("\t")
    assert cols[8:12] == ["max_abs_diff", "max_feature", "max_quantile", "max_quantile_feature"]
    kinds = ("ref", "alt", "diff", "log2fc", "quantile", "signed_quantile", "pvalue")
    assert cols[12:] == [f"{k}_{f}" for k in kinds for f in feats]  # default: all the model has
    rows = [dict(zip(cols, line.split("\t"), strict=True)) for line in lines[1:]]
    assert len(rows) == len(direct)
    for row, s in zip(rows, direct, strict=True):
        if s.status.code != pb.OK:
            assert row["max_quantile"] == row["max_quantile_feature"] == row["pvalue_feat0"] == ""
            continue
        assert float(row["max_quantile"]) == pytest.approx(s.max_quantile, rel=1e-5)
        assert row["max_quantile_feature"] == s.max_quantile_feature
        for kind in ("quantile", "signed_quantile", "pvalue"):
            got = [float(row[f"{kind}_{f}"]) for f in feats]
            np.testing.assert_allclose(got, getattr(s, kind), rtol=1e-5, atol=1e-7)
    manifest = json.loads(Path(f"{tsv}.manifest.json").read_text())
    assert manifest["calibration"].startswith("600 random N-free SNVs")

    pq = pytest.importorskip("pyarrow.parquet")
    with Client(cal_server.target) as client:
        score_vcf(client, vcf, par, model="cal", scores="diff,pvalue")
    table = pq.read_table(par)
    assert table.schema.field("max_quantile").type == "float"
    assert table.column_names[10:] == ["max_quantile", "max_quantile_feature"] + [
        f"{k}_{f}" for k in ("diff", "pvalue") for f in feats
    ]
    ok = np.array([s.status.code == pb.OK for s in direct])
    max_q = table.column("max_quantile").to_numpy(zero_copy_only=False)
    want = np.array([s.max_quantile for s in direct], dtype=np.float32)
    np.testing.assert_array_equal(max_q[ok], want[ok])
    assert np.isnan(max_q[~ok]).all()  # null where not scored
    assert table.column("max_quantile").null_count == int((~ok).sum())
    pv = table.column("pvalue_feat2").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(pv[ok], np.array([s.pvalue[2] for s in direct if s.pvalue]))
    assert table.schema.metadata[b"varfx_calibration"].decode() == manifest["calibration"]


def test_uncalibrated_model_writes_no_quantiles_and_refuses_asked_ones(
    cal_server: Any, vcf: Path, tmp_path: Path
) -> None:
    out, tsv = tmp_path / "p.vcf", tmp_path / "p.tsv"
    with Client(cal_server.target) as client:
        score_vcf(client, vcf, out, model="plain", features=["feat0"])
        score_vcf(client, vcf, tsv, model="plain")
        with pytest.raises(ScoreUsageError, match="model plain v1 has no calibration"):
            score_vcf(client, vcf, tmp_path / "x.vcf", model="plain", scores="diff,pvalue")
    assert not (tmp_path / "x.vcf").exists()
    assert not (tmp_path / "x.vcf.partial").exists()
    text = out.read_text()
    assert "VARFX_MAX_QUANTILE" not in text  # absent, not zeros
    assert "VARFX_QUANTILE_" not in text
    assert "##varfx_calibration=none: model plain v1 has no calibration" in text
    assert "calibration_model_sha256" not in text
    assert "max_quantile" not in tsv.read_text().splitlines()[0]
    with pysam.VariantFile(str(out)) as vf:
        assert sum(1 for _ in vf) == len(list(VcfReader(vcf)))
    # on the command line: exit 2 before anything is scored, naming the model and the fix
    run = subprocess.run(
        [*VARFX, "score", str(vcf), "--server", cal_server.target, "-o", str(tmp_path / "y.vcf"),
         "--model", "plain", "--features", "feat0", "--scores", "quantile", "--no-progress"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "--scores quantile: model plain v1 has no calibration" in run.stderr
    assert "varfx calibrate" in run.stderr
    assert not (tmp_path / "y.vcf").exists()


def test_resume_keeps_the_calibration_header(cal_server: Any, vcf: Path, tmp_path: Path) -> None:
    reference = tmp_path / "ref.vcf"
    with Client(cal_server.target) as client:
        score_vcf(client, vcf, reference, model="cal", features=["feat0"], batch_size=5)
    text = reference.read_text()
    head = [line for line in text.splitlines() if line.startswith("#")]
    body = data_lines(reference)
    out = tmp_path / "out.vcf"
    partial = Path(f"{out}.partial")
    partial.write_text("\n".join(head + body[:20]) + "\n")
    with Client(cal_server.target) as client:
        summary = score_vcf(
            client, vcf, out, model="cal", features=["feat0"], batch_size=5, resume=True
        )
    assert summary.resumed_records == 20
    assert out.read_text() == text
    # a partial written against another background is refused, naming the line
    other = [
        "##varfx_calibration=another background" if h.startswith("##varfx_calibration=") else h
        for h in head
    ]
    partial.write_text("\n".join(other + body[:20]) + "\n")
    with Client(cal_server.target) as client, pytest.raises(ScoreError, match="calibration"):
        score_vcf(client, vcf, out, model="cal", features=["feat0"], resume=True)


def test_client_table_has_the_calibrated_kinds(cal_server: Any, vcf: Path) -> None:
    variants = _variants(vcf)
    direct = _direct(cal_server, vcf, "cal", [])
    with Client(cal_server.target) as client:
        table = client.score_variants(variants, model="cal", scores="diff,quantile,pvalue")
        parts = list(
            client.iter_chunks(
                variants, model="cal", scores="quantile,signed_quantile", batch_size=9
            )
        )
        with pytest.raises(Exception, match="calibrat"):
            client.score_variants(variants[:3], model="plain", scores="quantile")
    assert table.kinds == ("diff", "quantile", "pvalue")
    assert table.manifest is not None
    assert table.manifest.calibration.startswith("600 random")
    ok = table.ok
    want_q = np.array([s.quantile for s in direct.scores if s.status.code == pb.OK])
    np.testing.assert_array_equal(table.array("quantile")[ok], want_q.astype(np.float32))
    assert np.isnan(table.quantile[~ok]).all()  # type: ignore[index]
    want_max = np.array([s.max_quantile for s in direct.scores], dtype=np.float32)
    assert table.max_quantile is not None
    assert table.max_quantile_index is not None
    np.testing.assert_array_equal(table.max_quantile[ok], want_max[ok])
    assert (table.max_quantile_index[~ok] == -1).all()
    first = int(np.flatnonzero(ok)[0])
    row = table.row(first)
    assert row.max_quantile == pytest.approx(float(want_max[first]))
    assert row.quantile_feature == direct.scores[first].max_quantile_feature
    assert row.pvalue is not None
    assert row.signed_quantile is None
    records = table.to_records()
    assert records[first]["max_quantile_feature"] == row.quantile_feature
    assert records[first]["pvalue_feat1"] == pytest.approx(direct.scores[first].pvalue[1])
    # chunks stacked again equal one call; the per-message form converts to the same table
    stacked = ScoreTable.concat(parts)
    assert stacked.kinds == ("quantile", "signed_quantile")
    # (other requests, other model batches: a float's last bit may move a rank by one step)
    np.testing.assert_allclose(stacked.max_quantile, table.max_quantile, atol=1.01 / 600)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.isnan(stacked.max_quantile), np.isnan(table.max_quantile))  # type: ignore[arg-type]
    per_message = table_from_response(
        direct, VariantBatch.from_variants(variants), ("diff", "quantile", "pvalue")
    )
    for kind in ("quantile", "pvalue"):
        np.testing.assert_array_equal(per_message.array(kind), table.array(kind))
    np.testing.assert_array_equal(per_message.max_quantile_index, table.max_quantile_index)  # type: ignore[arg-type]
    assert [Status(int(s)) for s in per_message.status] == [Status(int(s)) for s in table.status]
    pd = pytest.importorskip("pandas")
    frame = table.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[9:11]) == ["max_quantile", "max_quantile_feature"]
    assert "quantile_feat2" in frame.columns
    long = table.to_pandas(long=True)
    assert set(long["kind"].cat.categories) == {"diff", "quantile", "pvalue"}


def test_a_response_under_another_calibration_is_refused(cal_server: Any, vcf: Path) -> None:
    variants = _variants(vcf)[:5]
    with Client(cal_server.target) as client:
        manifest = client.score_variants(variants, model="cal", scores="diff").manifest
    assert manifest is not None
    desc = _info(cal_server, "cal").calibration
    _check_manifest(manifest, {"calibration": desc})  # the same background: fine
    _check_manifest(manifest, {"calibration": "none: model cal v1 has no calibration"})
    with pytest.raises(ScoreError, match="calibration .* where this run's output says other"):
        _check_manifest(manifest, {"calibration": "other"})


def test_committed_sim_chromatin_model_and_its_shipped_calibration(tmp_path: Path) -> None:
    """models/sim-chromatin/1 with its calibration.npz on a simulated genome of another seed."""
    model_dir = REPO / "models" / "sim-chromatin" / "1"
    shipped = json.loads((model_dir / "calibration.json").read_text())
    sim = tmp_path / "sim"
    assert varfx_main(["simulate", "--out", str(sim), "--seed", "3", "--size", "small",
                       "--variants", "200", "-q"]) == 0  # fmt: skip
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "sim-chromatin").symlink_to(REPO / "models" / "sim-chromatin")
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=repo, genome=sim / "genome.fa", host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, warmup_batch_sizes=(1,), ref_cache_mb=0,
    )  # fmt: skip
    feats = ["CTCF", "SPI1"]
    out = tmp_path / "scored.vcf.gz"
    vcf = sim / "variants.vcf.gz"
    with start_in_thread(config) as running, Client(running.target) as client:
        (info,) = client.list_models()
        # one request each, no reference cache: the same model runs as the direct call
        # (neutral diffs are ~1e-5, where a float's last bits move the quantile)
        score_vcf(client, vcf, out, features=feats, batch_size=1000)
        direct = list(_direct(running, vcf, "sim-chromatin", feats).scores)
    assert info.calibration == shipped["description"]
    head = _header(out)
    assert head["calibration"] == shipped["description"]
    assert head["calibration_model_sha256"] == shipped["model_sha256"] == info.sha256
    got: list[float] = []
    by_class: dict[str, list[float]] = {}
    with pysam.VariantFile(str(out)) as vf:
        for rec in vf:
            values = rec.info["VARFX_MAX_QUANTILE"]
            got += values
            quantiles = rec.info["VARFX_QUANTILE_SPI1"]
            assert all(0.0 <= q <= 1.0 for q in quantiles)
            by_class.setdefault(str(rec.info["SIMCLASS"][0]), []).append(values[0])
    assert all(s.status.code == pb.OK for s in direct)
    np.testing.assert_allclose(got, [s.max_quantile for s in direct], rtol=1e-5)
    # planted-motif breakers and creators rank high against the background, neutral ones not
    motif = by_class.get("break", []) + by_class.get("create", [])
    assert len(motif) >= 20
    assert float(np.median(motif)) > 0.95
    assert float(np.median(by_class["neutral"])) < 0.9
    data = collect(out)
    hist = data.hists["VARFX_MAX_QUANTILE"]
    assert hist.n == len(direct)
    assert hist.total == pytest.approx(sum(got), rel=1e-6)
