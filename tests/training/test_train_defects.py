"""`varfx train` refusals and guarantees of issue 18: deterministic resume, disjoint splits,
held-out windows that share no base with training windows, resume with other settings refused
before anything is written, features without positives refused, peaks past a contig's end."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fasta
from tests.training._tiny import make_tiny
from varfx.cli import main
from varfx.training._fasta import FastaTokens
from varfx.training.dataset import IndexConfig, Region, SplitSpec, build_index, parse_region
from varfx.training.errors import DataError
from varfx.training.models import ModelConfig
from varfx.training.peaks import PeakSet
from varfx.training.train import TrainConfig, train

L = 200


def _config(data_dir: Path, out: Path, epochs: int, **kw: object) -> TrainConfig:
    if not (data_dir / "genome.fa").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        make_tiny(data_dir, n_contigs=3, length=6000)
    cfg = TrainConfig(
        genome=(str(data_dir / "genome.fa"),),
        peaks=(str(data_dir / "peaks"),),
        out=str(out),
        model=ModelConfig("deepsea", L, channels=(8, 8), hidden=8, kernel_size=9, dropout=0.3),
        index=IndexConfig(length=L, bin_size=100, stride=50, negative_ratio=2.0),
        split=SplitSpec.from_args(["chr2"], ["chr3"]),
        epochs=epochs,
        batch_size=16,
        lr=3e-3,
        patience=10,
        device="cpu",
        reverse_complement=True,
        progress=False,
        threads=1,
    )
    return dataclasses.replace(cfg, **kw)  # type: ignore[arg-type]


def _losses(run: Path) -> list[tuple[str, str, str]]:
    with (run / "metrics.csv").open() as fh:
        return [(r["epoch"], r["train_loss"], r["valid_loss"]) for r in csv.DictReader(fh)]


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    whole = tmp_path / "whole"
    train(_config(data, whole, epochs=4))
    cut = tmp_path / "cut"
    train(_config(data, cut, epochs=2))  # "interrupted" after epoch 2
    train(_config(data, cut, epochs=4, resume=True))
    assert len(_losses(whole)) == 4
    # shuffle order, RC augmentation and dropout continue where they stopped: same losses
    assert _losses(cut) == _losses(whole)
    a = json.loads((whole / "summary.json").read_text())["test"]
    b = json.loads((cut / "summary.json").read_text())["test"]
    assert a == b


def test_resume_with_other_settings_is_refused_before_writing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = tmp_path / "run"
    train(_config(data, run, epochs=1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    other = dataclasses.replace(
        _config(data, run, epochs=2, resume=True),
        model=ModelConfig("deepsea", L, channels=(16, 8), hidden=8, kernel_size=9, dropout=0.3),
    )
    with pytest.raises(DataError, match=r"channels.*\[8, 8\].*\[16, 8\]"):
        train(other)
    with pytest.raises(DataError, match="lr"):
        train(dataclasses.replace(_config(data, run, epochs=2, resume=True), lr=1e-2))
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # config.json, last.pt, metrics.csv untouched
    # more epochs is a legitimate resume
    train(_config(data, run, epochs=2, resume=True))
    assert [e for e, *_ in _losses(run)] == ["1", "2"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--valid-chroms", "chr2", "--test-chroms", "chr2"], "chr2"),
        (["--valid-chroms", "chr2", "--test-chroms", "2"], "2"),
        (["--valid-regions", "chr1:1-3000", "--test-regions", "1:2001-4000"], "1:2001-4000"),
        (["--valid-chroms", "chr1", "--test-regions", "chr1:2001-"], "chr1:2001-"),
    ],
)
def test_identical_or_overlapping_splits_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    data = make_tiny(tmp_path, n_contigs=3, length=6000)
    run = tmp_path / "run"
    rc = main(["train", "--genome", str(data.genome), "--peaks", str(data.peaks_dir),
               "--out", str(run), "--length", "200", "--no-progress", *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert "overlap" in err
    assert named in err
    assert not run.exists()  # refused before anything was written


def test_open_ended_region() -> None:
    assert parse_region("chr20:29500001-") == Region("chr20", 29_500_000, None)
    assert parse_region("chr20:29,500,001-63,025,520") == Region("chr20", 29_500_000, 63_025_520)
    with pytest.raises(DataError, match="START"):
        parse_region("chr20:0-")


def test_held_out_windows_share_no_base_with_training_windows(tmp_path: Path) -> None:
    data = make_tiny(tmp_path, n_contigs=2, length=12_000)
    g = FastaTokens(data.genome)
    peaks = PeakSet.load([data.peaks_dir], g.lengths)
    split = SplitSpec.from_args([], [], ["chr1:3001-6000"], ["chr1:6001-9000", "chr2"])
    cfg = IndexConfig(length=600, bin_size=200, stride=50, negative_ratio=float("inf"))
    idx = build_index(g, peaks, split, cfg)
    c1 = idx.contig_ids == idx.contigs.index("chr1")
    for a in (0, 1, 2):
        for b in (0, 1, 2):
            if a >= b:
                continue
            sa = np.sort(idx.starts[c1 & (idx.split == a)])
            sb = idx.starts[c1 & (idx.split == b)]
            assert len(sa) > 0
            assert len(sb) > 0
            # windows of equal length L overlap iff their starts are < L apart
            k = np.clip(np.searchsorted(sa, sb), 1, len(sa) - 1)
            nearest = np.minimum(np.abs(sa[k] - sb), np.abs(sa[k - 1] - sb))
            assert nearest.min() >= 600, (a, b)
    # and held-out windows lie inside their own region
    valid = idx.starts[c1 & (idx.split == 1)]
    assert valid.min() >= 3000
    assert valid.max() + 600 <= 6000
    assert idx.stats["dropped_overlap"] > 0


def test_feature_without_positives_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _config(data, tmp_path / "x", 1)  # writes the tiny data
    (data / "peaks" / "empty.bed").write_text("")
    with pytest.raises(DataError, match=r"feature 'empty'.*no positive window in the train"):
        train(_config(data, tmp_path / "run", epochs=1))
    (data / "peaks" / "empty.bed").write_text("chr1\t100\t400\nchr3\t100\t400\n")  # no chr2
    with pytest.raises(DataError, match=r"feature 'empty'.*valid split"):
        train(_config(data, tmp_path / "run2", epochs=1))


def test_peak_past_contig_end_names_file_and_line(tmp_path: Path) -> None:
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 500})
    bed = tmp_path / "p.bed"
    bed.write_text("track x\nchr1\t10\t200\nchr1\t1900\t2100\nchr1\t2500\t2600\n")
    g = FastaTokens(fa)
    with pytest.raises(DataError, match=rf"{bed}:3: peak chr1:1900-2100 ends past"):
        PeakSet.load([bed], g.lengths)
    ok = PeakSet.load([bed], g.lengths, allow_past_end=True)
    iv = ok.intervals[0]["chr1"]
    assert iv.ends.max() == 2000  # clipped; the peak starting past the end is dropped
    assert ok.past_end == (2,)


def test_several_fastas_form_one_genome(tmp_path: Path) -> None:
    a = write_fasta(tmp_path / "a.fa", {"chr1": "ACGT" * 100})
    b = write_fasta(tmp_path / "b.fa", {"2": "GGCC" * 50}, bgzip=True)
    g = FastaTokens([a, b])
    assert g.lengths == {"chr1": 400, "2": 200}
    assert g.window("2", -2, 4).tolist() == [4, 4, 2, 2]
    assert g.window("chr1", 398, 4).tolist() == [2, 3, 4, 4]
    with pytest.raises(DataError, match="chr1.*a.fa.*c.fa"):
        FastaTokens([a, write_fasta(tmp_path / "c.fa", {"chr1": "A" * 10})])


def test_skip_test_leaves_the_test_split_unscored(tmp_path: Path) -> None:
    from varfx.training.export import export_run

    data = tmp_path / "data"
    run = tmp_path / "run"
    result = train(_config(data, run, epochs=1, evaluate_test=False))
    assert result.test is None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"] is None
    assert "varfx evaluate" in summary["test_note"]
    assert set(summary["valid"]["per_feature"]) == {"featA", "featB"}
    assert result.valid.mean_auroc == pytest.approx(summary["valid"]["mean_auroc"], abs=1e-6)
    assert not (run / "test_roc.png").exists()
    meta = export_run(run, tmp_path / "repo", "tiny").metadata
    assert meta["training_summary"]["test_mean_auroc"] is None


def test_cli_trains_on_two_fastas_with_regions_blacklist_and_gc_matched_negatives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_tiny(tmp_path, n_contigs=3, length=6000)
    a = write_fasta(tmp_path / "a.fa", {k: data.contigs[k] for k in ("chr1", "chr2")})
    b = write_fasta(tmp_path / "b.fa", {"chr3": data.contigs["chr3"]}, bgzip=True)
    (tmp_path / "black.bed").write_text("chr1\t1000\t1400\n")
    run = tmp_path / "run"
    rc = main(["train", "--genome", str(a), str(b), "--peaks", str(data.peaks_dir),
               "--out", str(run), "--length", "200", "--bin-size", "100",
               "--valid-regions", "chr2:1-", "--test-regions", "chr3:1001-",
               "--blacklist", str(tmp_path / "black.bed"), "--negatives", "gc-matched",
               "--arch", "basset", "--channels", "8", "8", "--hidden", "8", "--epochs", "1",
               "--batch-size", "32", "--no-progress", "--threads", "1", "--skip-test"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "valid (test not scored) mean auROC" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["windows"]["negatives"] == "gc-matched"
    assert summary["windows"]["dropped_blacklist"] > 0
    assert len(summary["data"]["genome"]) == 2
    cfg = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    assert cfg.genome == (str(a), str(b))
    from varfx.training.dataset import WindowIndex

    idx = WindowIndex.load(run / "index.npz")
    c3 = idx.contig_ids == idx.contigs.index("chr3")
    assert set(idx.split[c3].tolist()) == {0, 2}  # chr3:1-1000 trains, the rest is test
    assert idx.starts[c3 & (idx.split == 2)].min() >= 1000
    assert idx.starts[c3 & (idx.split == 0)].max() + 200 <= 1000


def test_metrics_name_features_left_out_of_the_mean() -> None:
    from varfx.training.evaluate import per_feature_metrics

    y = np.zeros((6, 2), np.uint8)
    y[:3, 0] = 1  # feature b has no positive
    p = np.tile(np.linspace(1, 0, 6)[:, None], (1, 2)).astype(np.float32)
    m = per_feature_metrics(y, p, ("a", "b"))
    assert m.mean_auroc == pytest.approx(1.0)
    assert m.to_json()["excluded_from_mean"] == ["b"]
