"""Window index: labels vs brute force, N filter, blacklist, splits without leakage, streaming items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REAL, write_fasta
from tests.training._tiny import make_tiny
from varfx.core.tokens import encode as encode_tokens
from varfx.core.tokens import reverse_complement
from varfx.training._fasta import FastaTokens
from varfx.training.dataset import (
    IndexConfig,
    Region,
    SplitSpec,
    WindowDataset,
    build_index,
    parse_region,
)
from varfx.training.errors import DataError
from varfx.training.peaks import PeakSet


def encode(seq: str) -> np.ndarray:
    return encode_tokens(seq, strict=False)


def _brute_labels(peaks: PeakSet, contig: str, lo: int, bin_size: int) -> np.ndarray:
    out = []
    for m in peaks.intervals:
        iv = m.get(contig)
        covered = np.zeros(lo + bin_size + 1, bool)
        if iv is not None:
            for s, e in zip(iv.starts, iv.ends, strict=True):
                covered[s:e] = True
        out.append(int(covered[lo : lo + bin_size].sum() * 2 >= bin_size))
    return np.array(out, np.uint8)


def test_labels_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    seqs = {"chr1": "".join(rng.choice(list("ACGT"), 3000)), "2": "ACGT" * 500}
    fa = write_fasta(tmp_path / "g.fa", seqs)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.bed").write_text(
        "chr1\t100\t260\nchr1\t230\t330\nchr1\t1290\t1400\r\nchr2\t95\t160\nchr1\t2500\t2510\n"
    )
    (tmp_path / "p" / "y.bed").write_text("1\t600\t700\n1\t700\t760\nchr1\t1350\t1500\n")
    g = FastaTokens(fa)
    peaks = PeakSet.load([tmp_path / "p"], g.lengths)
    cfg = IndexConfig(length=100, bin_size=50, stride=25, negative_ratio=float("inf"))
    index = build_index(g, peaks, SplitSpec((Region("2"),), (Region("chr1", 2900, None),)), cfg)
    assert index.features == ("x", "y")
    seen = 0
    for r in range(len(index)):
        contig = index.contigs[index.contig_ids[r]]
        bin_lo = int(index.starts[r]) + 50 - 25  # window start + L/2 - bin/2
        assert np.array_equal(index.labels[r], _brute_labels(peaks, contig, bin_lo, 50))
        seen += 1
    # every bin with a brute-force label is in the index (no positive lost)
    for b in range(0, 3000 - 50 + 1, 25):
        want = _brute_labels(peaks, "chr1", b, 50)
        if want.any() and b + 25 - 50 >= 0 and b + 25 + 50 <= 2900:
            rows = (index.contig_ids == index.contigs.index("chr1")) & (index.starts == b + 25 - 50)
            assert rows.sum() == 1, b
    assert seen == len(index) > 0


def test_n_filter_blacklist_and_sampling(tmp_path: Path) -> None:
    seq = "ACGT" * 250 + "N" * 400 + "ACGT" * 400
    fa = write_fasta(tmp_path / "g.fa", {"c1": seq, "c2": "ACGT" * 500, "c3": "ACGT" * 500})
    (tmp_path / "f.bed").write_text("c1\t0\t2600\nc2\t0\t2000\nc3\t0\t2000\n")
    (tmp_path / "black.bed").write_text("chrc1\t1500\t1600\n")
    g = FastaTokens(fa)
    peaks = PeakSet.load([tmp_path / "f.bed"], g.lengths)
    split = SplitSpec.from_args(["c2"], ["c3"])
    cfg = IndexConfig(length=200, max_n_fraction=0.1, blacklist=str(tmp_path / "black.bed"))
    index = build_index(g, peaks, split, cfg)
    c1 = index.contig_ids == 0
    tokens = np.stack([g.window("c1", int(s), 200) for s in index.starts[c1]])
    assert np.all((tokens == 4).mean(axis=1) <= 0.1)  # includes padding beyond the contig ends
    bins = index.starts[c1] + 100 - 100
    assert not np.any((bins < 1600) & (bins + 200 > 1500))
    assert index.stats["dropped_n"] > 0
    assert index.stats["dropped_blacklist"] == 1
    # negative_ratio: half as many negatives as positives per split
    (tmp_path / "few.bed").write_text("c2\t0\t400\nc3\t0\t400\nc1\t0\t400\n")
    few = PeakSet.load([tmp_path / "few.bed"], g.lengths)
    idx = build_index(g, few, split, IndexConfig(length=200, negative_ratio=0.5))
    for s in (0, 1, 2):
        rows = idx.split == s
        pos = int(idx.labels[rows].any(axis=1).sum())
        assert pos == 2
        assert int((~idx.labels[rows].any(axis=1)).sum()) == 1


def test_split_by_chromosome_and_region_has_no_leakage(tmp_path: Path) -> None:
    data = make_tiny(tmp_path, n_contigs=3, length=9000)
    g = FastaTokens(data.genome)
    peaks = PeakSet.load([data.peaks_dir], g.lengths)
    cfg = IndexConfig(length=400, stride=100, negative_ratio=float("inf"))
    idx = build_index(g, peaks, SplitSpec.from_args(["2"], ["chr3"]), cfg)
    names = np.array(idx.contigs)[idx.contig_ids]
    assert set(names[idx.split == 0]) == {"chr1"}
    assert set(names[idx.split == 1]) == {"chr2"}
    assert set(names[idx.split == 2]) == {"chr3"}
    # region split of one chromosome: no training window touches held-out sequence
    split = SplitSpec.from_args(valid_regions=["chr1:3001-5000"], test_regions=["1:6001-9000"])
    idx = build_index(g, peaks, split, cfg)
    on1 = idx.contig_ids == idx.contigs.index("chr1")
    lo, hi = idx.starts, idx.starts + 400
    train = on1 & (idx.split == 0)
    assert not np.any(train & (lo < 5000) & (hi > 3000))
    assert not np.any(train & (lo < 9000) & (hi > 6000))
    valid = on1 & (idx.split == 1)
    assert valid.any()
    assert np.all((lo[valid] + 200 >= 3000) & (lo[valid] + 200 < 5000))
    assert not np.any(valid & (hi > 6000))
    assert (idx.split[~on1] == 0).all()
    with pytest.raises(DataError, match="chrZ"):
        build_index(g, peaks, SplitSpec.from_args(["chrZ"], ["chr3"]), cfg)


def test_parse_region() -> None:
    assert parse_region("20:1-30,000,000") == Region("20", 0, 30_000_000)
    assert parse_region("chrX") == Region("chrX")
    for bad in ("20:5-1", "20:0-10", "20:a-b", "a b"):
        with pytest.raises(DataError, match="region"):
            parse_region(bad)


def test_dataset_items_stream_from_fasta(tmp_path: Path) -> None:
    data = make_tiny(tmp_path)
    g = FastaTokens(data.genome)
    idx = build_index(
        g,
        PeakSet.load([data.peaks_dir], g.lengths),
        SplitSpec.from_args(["chr2"], ["chr3"]),
        IndexConfig(length=300),
    )
    ds = WindowDataset(g, idx, "train")
    assert len(ds) == int((idx.split == 0).sum())
    for i in (0, len(ds) // 2, len(ds) - 1):
        tokens, labels = ds[i]
        r = ds.rows[i]
        s = int(idx.starts[r])
        seq = data.contigs[idx.contigs[idx.contig_ids[r]]]
        want = encode(seq[max(s, 0) : s + 300].rjust(300 if s < 0 else 0, "N"))
        assert tokens.dtype == np.uint8
        assert tokens.shape == (300,)
        assert np.array_equal(tokens[: len(want)], want)
        assert labels.dtype == np.float32
        assert labels.shape == (2,)
    rc = WindowDataset(g, idx, "train", reverse_complement=True, seed=0)
    flipped = sum(not np.array_equal(rc[i][0], ds[i][0]) for i in range(20))
    assert 0 < flipped < 20
    assert np.array_equal(reverse_complement(encode("AACGTN")), encode("NACGTT"))


def test_real_brain_peaks_parse_against_hg19_chr20() -> None:
    fa = REAL / "hg19_ref_debian" / "vt-examples.20.fa.gz"
    peaks_dir = REAL / "hg19_nott_brain"
    if not fa.exists() or not peaks_dir.exists():
        pytest.skip("real hg19 data not present")
    g = FastaTokens(fa)
    assert "20" in g.lengths
    files = sorted(peaks_dir.glob("ATAC_*"))[:2]
    peaks = PeakSet.load(files, g.lengths)
    assert all("20" in m and len(m["20"]) > 100 for m in peaks.intervals)  # chr20 -> 20
    assert all("chr1" in u for u in peaks.unmatched)  # other chromosomes reported, not fatal
    # region split of the one real contig (as issue 7 needs); labels come from the real peaks
    split = SplitSpec.from_args(
        valid_regions=["chr20:30000001-40000000"], test_regions=["20:40000001-50000000"]
    )
    idx = build_index(g, peaks, split, IndexConfig())
    for s in (0, 1, 2):
        rows = idx.split == s
        assert rows.sum() > 100
        assert idx.labels[rows].sum() > 50
    iv = peaks.intervals[0]["20"]
    r = int(np.flatnonzero(idx.labels[:, 0])[0])
    centre = int(idx.starts[r]) + 500
    inside = (iv.starts < centre + 100) & (iv.ends > centre - 100)
    assert inside.any()  # a positive bin really lies on a peak of that feature
