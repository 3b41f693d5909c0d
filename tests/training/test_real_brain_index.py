"""`varfx train`'s window index on the real brain data (GRCh37 chr20 + the 12 Nott et al. peak
sets + the ENCODE hg19 blacklist); skipped where the shared data is absent."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REAL
from varfx.training._fasta import FastaTokens
from varfx.training.dataset import IndexConfig, SplitSpec, build_index
from varfx.training.negatives import gc_fraction
from varfx.training.peaks import PeakSet, read_bed

FASTA = REAL / "hg19_ref_debian" / "vt-examples.20.fa.gz"
PEAKS = REAL / "hg19_nott_brain"
BLACKLIST = REAL / "blacklists" / "hg19_blacklist_ENCFF001TDO.bed.gz"

pytestmark = pytest.mark.skipif(
    not FASTA.exists() or not PEAKS.is_dir() or not BLACKLIST.exists(),
    reason="real data (shared/data/real) not present",
)

VALID, TEST = "chr20:20000001-29500000", "chr20:29500001-"


@pytest.fixture(scope="module")
def genome_peaks() -> tuple[FastaTokens, PeakSet]:
    g = FastaTokens(FASTA)  # chr20 only: the chrX peaks are skipped (no such contig)
    return g, PeakSet.load([PEAKS], g.lengths)


def test_real_split_blacklist_and_gc_matched_negatives(
    genome_peaks: tuple[FastaTokens, PeakSet],
) -> None:
    g, peaks = genome_peaks
    split = SplitSpec.from_args(valid_regions=[VALID], test_regions=[TEST])
    cfg = IndexConfig(blacklist=str(BLACKLIST), negatives="gc-matched")
    idx = build_index(g, peaks, split, cfg)
    assert idx.stats["dropped_blacklist"] > 0
    valid = idx.starts[idx.split == 1]
    assert valid.min() >= 20_000_000
    assert valid.max() + 1000 <= 29_500_000
    test = idx.starts[idx.split == 2]
    assert test.min() >= 29_500_000
    train = np.sort(idx.starts[idx.split == 0])
    assert train.max() + 1000 <= 20_000_000  # no training window reaches held-out sequence
    # no window overlaps the blacklist
    bl = read_bed(BLACKLIST)["chr20"]
    k = np.searchsorted(bl.starts, idx.starts + 1000)  # blacklist intervals starting before end
    prev_end = np.where(k > 0, bl.ends[np.maximum(k - 1, 0)], -1)
    assert not np.any(prev_end > idx.starts)
    # GC-matched negatives: GC no longer separates positives from negatives in the train split
    tokens = g.contig_tokens("20")
    rows = np.flatnonzero(idx.split == 0)
    win = tokens[np.clip(idx.starts[rows, None] + np.arange(1000), 0, len(tokens) - 1)]
    gc = gc_fraction(win)
    pos = idx.labels[rows].any(1)
    assert abs(gc[pos].mean() - gc[~pos].mean()) < 0.01
    assert idx.stats.get("train_negative_shortfall", 0) < 0.05 * pos.sum()  # GC-rich bins run short
    random = build_index(g, peaks, split, IndexConfig(blacklist=str(BLACKLIST)))
    r_rows = np.flatnonzero(random.split == 0)
    r_win = tokens[np.clip(random.starts[r_rows, None] + np.arange(1000), 0, len(tokens) - 1)]
    r_gc, r_pos = gc_fraction(r_win), random.labels[r_rows].any(1)
    assert r_gc[r_pos].mean() - r_gc[~r_pos].mean() > 0.04  # random negatives are AT-richer
    assert int(pos.sum()) == int(r_pos.sum())  # same positives, other negatives
