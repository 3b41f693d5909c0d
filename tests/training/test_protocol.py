"""The locked evaluation protocol (`varfx evaluate`), negative sampling and bootstrap metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import write_fasta
from tests.training._tiny import make_tiny
from varfx.cli import main
from varfx.training._fasta import FastaTokens
from varfx.training.bootstrap import bootstrap_counts, interval, weighted_auc
from varfx.training.dataset import IndexConfig, SplitSpec, build_index
from varfx.training.errors import DataError
from varfx.training.export import export_run
from varfx.training.models import ModelConfig
from varfx.training.negatives import gc_fraction, sample_negatives, window_gc
from varfx.training.peaks import PeakSet
from varfx.training.protocol import MIXES, ProtocolConfig, evaluate_model
from varfx.training.train import TrainConfig, train


def test_weighted_auc_equals_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.3
    s = np.round(rng.random(3000) + 0.4 * y, 1)  # many ties
    (r,), (p,) = weighted_auc(y, s)
    assert r == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert p == pytest.approx(average_precision_score(y, s), abs=1e-12)
    w = bootstrap_counts(3000, 5, rng)
    assert w.sum(1).tolist() == [3000] * 5
    rb, pb = weighted_auc(y, s, w)
    for b in range(5):
        assert rb[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]), abs=1e-12)
        assert pb[b] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]), abs=1e-12)
    lo, hi = interval(weighted_auc(y, s, bootstrap_counts(3000, 200, rng))[0])
    assert lo < r < hi
    assert hi - lo < 0.05
    assert np.isnan(weighted_auc(np.zeros(4, bool), np.arange(4.0))[0][0])


def test_gc_matched_negatives_follow_the_positives_gc() -> None:
    rng = np.random.default_rng(0)
    pos = np.clip(rng.normal(0.62, 0.05, 2000), 0, 1)
    neg = rng.uniform(0.2, 0.9, 50_000)
    pick, short = sample_negatives("gc-matched", 1.0, len(pos), pos, neg, rng)
    assert short == 0
    assert len(pick) == len(pos)
    assert len(np.unique(pick)) == len(pick)
    assert abs(neg[pick].mean() - pos.mean()) < 0.005
    edges = np.linspace(0, 1, 51)
    h_pos, _ = np.histogram(pos, edges)
    h_neg, _ = np.histogram(neg[pick], edges)
    assert np.abs(h_pos - h_neg).max() <= 1
    rand, _ = sample_negatives("random", 2.0, len(pos), pos, neg, rng)
    assert len(rand) == 4000
    assert abs(neg[rand].mean() - 0.55) < 0.01  # random ones are not matched
    assert len(sample_negatives("all", 1.0, 5, pos, neg, rng)[0]) == len(neg)
    few = rng.uniform(0.3, 0.4, 100)  # no negatives near the positives' GC
    _, short = sample_negatives("gc-matched", 1.0, len(pos), pos, few, rng)
    assert short > 0
    with pytest.raises(DataError, match="policy"):
        sample_negatives("dinuc", 1.0, 1, pos, neg, rng)


def test_window_gc_matches_the_windows() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 5, 5000).astype(np.uint8)
    starts = np.array([-50, 0, 1234, 4900])
    want = gc_fraction(
        np.stack([np.pad(tokens, 200, constant_values=4)[s + 200 : s + 400] for s in starts])
    )
    assert np.allclose(window_gc(tokens, starts, 200), want)


def test_blacklist_excludes_windows_not_only_bins(tmp_path: Path) -> None:
    fa = write_fasta(tmp_path / "g.fa", {"c1": "ACGT" * 1000, "c2": "ACGT" * 500, "c3": "AC" * 500})
    (tmp_path / "f.bed").write_text("c1\t0\t4000\nc2\t0\t2000\nc3\t0\t1000\n")
    (tmp_path / "black.bed").write_text("c1\t2050\t2060\n")
    g = FastaTokens(fa)
    peaks = PeakSet.load([tmp_path / "f.bed"], g.lengths)
    cfg = IndexConfig(length=600, bin_size=200, blacklist=str(tmp_path / "black.bed"))
    idx = build_index(g, peaks, SplitSpec.from_args(["c2"], ["c3"]), cfg)
    w = idx.starts[idx.contig_ids == 0]
    assert not np.any((w < 2060) & (w + 600 > 2050))  # no window touches the blacklist
    assert idx.stats["dropped_blacklist"] == 3  # the bin's window and both neighbours'
    gcm = build_index(
        g, peaks, SplitSpec.from_args(["c2"], ["c3"]), IndexConfig(length=600, negatives="all")
    )
    assert gcm.stats["negatives"] == "all"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("protocol")
    data = make_tiny(tmp, n_contigs=3, length=8000)
    run = tmp / "run"
    train(
        TrainConfig(
            genome=(str(data.genome),),
            peaks=(str(data.peaks_dir),),
            out=str(run),
            model=ModelConfig("deepsea", 200, channels=(8, 8), hidden=8, kernel_size=9),
            index=IndexConfig(length=200, bin_size=100, stride=100),
            split=SplitSpec.from_args(["chr2"], ["chr3"]),
            epochs=2,
            batch_size=32,
            lr=3e-3,
            progress=False,
            threads=1,
            device="cpu",
        )
    )
    r = export_run(run, tmp / "repo", "tiny")
    return r.path, data.genome, data.peaks_dir


def test_locked_protocol_report(shipped: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, genome, peaks = shipped
    cfg = ProtocolConfig(
        model=str(model), genome=(str(genome),), peaks=(str(peaks),), out=str(tmp_path / "ev"),
        test_regions=("chr3",), valid_regions=("chr2",), bin_size=100, stride=100,
        bootstrap=30, kmer_windows=(400,), kmer_C=(0.1,), kmer_k=3,
    )  # fmt: skip
    rep = evaluate_model(cfg)
    assert set(rep["mixes"]) == set(MIXES)
    # every bin of the test contig, independently rebuilt
    g = FastaTokens(genome)
    idx = build_index(g, PeakSet.load([peaks], g.lengths), SplitSpec.from_args([], ["chr3"]),
                      IndexConfig(length=200, bin_size=100, stride=100, negatives="all"))  # fmt: skip
    labels = idx.labels[idx.rows("test")]
    allmix = rep["mixes"]["all"]
    assert allmix["windows"] == len(labels)
    z = np.load(tmp_path / "ev" / "predictions.npz")
    for j, f in enumerate(rep["features"]):
        got = allmix["model"]["per_feature"][f]
        assert got["auroc"] == pytest.approx(roc_auc_score(labels[:, j], z["probabilities"][:, j]))
        lo, hi = got["auroc_ci"]
        assert lo <= hi
        assert got["positives"] == int(labels[:, j].sum())
    for mix in ("random", "gc-matched"):  # 1:1 mixes
        assert rep["mixes"][mix]["windows"] == 2 * rep["mixes"][mix]["positives"]
    for name in ("model", "kmer", "gc", "cpg"):
        assert 0.0 <= rep["mixes"]["random"][name]["mean_auroc"] <= 1.0
    assert rep["model_sha256"] in (tmp_path / "ev" / "protocol.md").read_text()
    # the test region is evaluated once per model
    with pytest.raises(DataError, match="once per model"):
        evaluate_model(cfg)


def test_cli_evaluate(
    shipped: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, genome, peaks = shipped
    args = ["evaluate", "--model", str(model), "--genome", str(genome), "--peaks", str(peaks),
            "--out", str(tmp_path / "ev"), "--test-regions", "chr3", "--bin-size", "100",
            "--bootstrap", "10", "--kmer-windows", "300", "--kmer-k", "2",
            "--valid-regions", "chr2"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gc-matched" in out
    assert "model mean auROC" in out
    assert "chosen on" in out or "validation" in out
    assert json.loads((tmp_path / "ev" / "protocol.json").read_text())["mixes"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "once per model" in err
    assert "Traceback" not in err
    bad = [*args[:-14], "--out", str(tmp_path / "e2"), "--test-regions", "chrQ", "--kmer-C", "1"]
    assert main(bad) == 2
    assert "chrQ" in capsys.readouterr().err


def _peaks_copy(src: Path, dst: Path, keep: Callable[[str], bool]) -> Path:
    """The peak folder with only the lines ``keep`` accepts (same file names)."""
    dst.mkdir()
    for f in src.iterdir():
        lines = [ln for ln in f.read_text().splitlines() if ln and keep(ln)]
        (dst / f.name).write_text("\n".join(lines) + "\n")
    return dst


def test_kmer_choice_reads_validation_only(
    shipped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The k-mer baseline's fit size and C come from the validation rows alone: changing the
    test labels changes the test numbers but not the choice; changing validation labels does."""
    model, genome, peaks = shipped

    def run(name: str, peak_dir: Path) -> dict[str, Any]:
        return evaluate_model(ProtocolConfig(
            model=str(model), genome=(str(genome),), peaks=(str(peak_dir),),
            out=str(tmp_path / name), test_regions=("chr3",), valid_regions=("chr2",),
            bin_size=100, stride=100, bootstrap=5, kmer_windows=(20, 40),
            kmer_C=(0.0001, 0.01, 1.0), kmer_k=3,
        ))  # fmt: skip

    base = run("base", peaks)
    rec = base["kmer_baseline"]
    assert rec["grid"] == {"fit_windows": [20, 40], "C": [0.0001, 0.01, 1.0]}
    scores = rec["validation"]["scores"]
    assert [(s["fit_windows"], s["C"]) for s in scores] == [
        (n, c) for n in (20, 40) for c in (0.0001, 0.01, 1.0)
    ]
    best = max(scores, key=lambda s: s["valid_mean_auroc"])
    assert (rec["fit_windows"], rec["C"]) == (best["fit_windows"], best["C"])
    assert rec["validation"]["regions"] == ["chr2"]
    assert rec["validation"]["windows"] == 2 * rec["validation"]["positives"]
    assert "validation" in rec["chosen_on"]
    on_disk = json.loads((tmp_path / "base" / "protocol.json").read_text())["kmer_baseline"]
    assert on_disk == json.loads(json.dumps(rec))
    assert f"C = {rec['C']:g}" in (tmp_path / "base" / "protocol.md").read_text()

    # every other chr3 peak gone: the test labels change, the choice does not
    odd = _peaks_copy(peaks, tmp_path / "p_test",
                      lambda ln: not (ln.startswith("chr3\t") and int(ln.split()[1]) % 2))  # fmt: skip
    other = run("test_changed", odd)
    assert other["mixes"]["all"]["positives"] < base["mixes"]["all"]["positives"]
    assert other["kmer_baseline"] == rec
    # the same on chr2 (validation) changes the validation scores
    odd2 = _peaks_copy(peaks, tmp_path / "p_valid",
                       lambda ln: not (ln.startswith("chr2\t") and int(ln.split()[1]) % 2))  # fmt: skip
    moved = run("valid_changed", odd2)
    assert moved["kmer_baseline"]["validation"]["scores"] != scores


def test_kmer_grid_needs_a_validation_region_away_from_the_locked_test(
    shipped: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, genome, peaks = shipped
    cfg = ProtocolConfig(
        model=str(model), genome=(str(genome),), peaks=(str(peaks),), out=str(tmp_path / "ev"),
        test_regions=("chr3",), bin_size=100, stride=100, bootstrap=5, kmer_windows=(60,),
        kmer_k=2,
    )  # fmt: skip
    with pytest.raises(DataError, match="chosen on the validation region"):
        evaluate_model(cfg)
    with pytest.raises(DataError, match="locked test"):
        evaluate_model(replace(cfg, valid_regions=("chr20:40000001-50000000",)))
    fixed = evaluate_model(replace(cfg, kmer_C=(0.05,)))  # one value: nothing to choose
    assert fixed["kmer_baseline"]["C"] == 0.05
    assert "nothing chosen" in fixed["kmer_baseline"]["chosen_on"]
    assert "validation" not in fixed["kmer_baseline"]
