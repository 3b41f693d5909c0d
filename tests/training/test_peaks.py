"""Peak files: format oddities, contig name mapping, interval maths vs brute force."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from varfx.core.contigs import contig_aliases
from varfx.training.errors import DataError
from varfx.training.peaks import (
    PeakSet,
    bin_coverage,
    feature_name,
    find_peak_files,
    merge_intervals,
    read_bed,
    resolve_contig,
)


def test_crlf_gzip_unsorted_headers(tmp_path: Path) -> None:
    text = "track name=x\r\n#comment\r\nchr2\t50\t80\r\nchr1\t30\t40\r\nchr1\t10\t20\r\n\r\nchr1\t15\t35\r\n"
    plain = tmp_path / "a.bed"
    plain.write_bytes(text.encode())
    gz = tmp_path / "b.narrowPeak.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(text.encode())
    for path in (plain, gz):
        got = read_bed(path)
        assert sorted(got) == ["chr1", "chr2"]
        assert got["chr1"].starts.tolist() == [10]  # 10-20, 15-35, 30-40 merge into one
        assert got["chr1"].ends.tolist() == [40]
        assert got["chr2"].starts.tolist() == [50]
    assert feature_name(gz) == "b"
    assert feature_name(tmp_path / "CTCF.narrowPeak") == "CTCF"


def test_space_separated_and_bad_lines(tmp_path: Path) -> None:
    ok = tmp_path / "ok.bed"
    ok.write_text("1 5 9\n")
    assert read_bed(ok)["1"].ends.tolist() == [9]
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\t20\nchr1\tten\t20\n")
    with pytest.raises(DataError, match=r"bad\.bed:2.*integers"):
        read_bed(bad)
    rev = tmp_path / "rev.bed"
    rev.write_text("chr1\t30\t20\n")
    with pytest.raises(DataError, match="chr1:30-20"):
        read_bed(rev)
    short = tmp_path / "short.bed"
    short.write_text("chr1\t30\n")
    with pytest.raises(DataError, match="3 columns"):
        read_bed(short)
    with pytest.raises(DataError, match="not found"):
        read_bed(tmp_path / "missing.bed")


def test_contig_aliases_both_ways() -> None:
    assert resolve_contig("chr20", ["20", "X"]) == "20"
    assert resolve_contig("20", ["chr20"]) == "chr20"
    assert resolve_contig("chrM", ["MT"]) == "MT"
    assert resolve_contig("MT", ["chrM"]) == "chrM"
    assert resolve_contig("chr7", ["chr1"]) is None
    assert "chrX" in contig_aliases("X")


def test_peakset_maps_names_and_reports_unknown(tmp_path: Path) -> None:
    d = tmp_path / "peaks"
    d.mkdir()
    (d / "f1.bed").write_text("chr1\t0\t10\n1\t20\t30\nchrUn\t0\t5\nchrM\t1\t4\n")
    (d / "f2.narrowPeak").write_text("chr2\t5\t9\n")
    (d / "notes.txt").write_text("ignored\n")
    ps = PeakSet.load([d], ["1", "2", "MT"])
    assert ps.features == ("f1", "f2")
    assert ps.intervals[0]["1"].starts.tolist() == [0, 20]  # chr1 and 1 rows both land on "1"
    assert ps.intervals[0]["MT"].ends.tolist() == [4]
    assert ps.unmatched[0] == ("chrUn",)
    assert ps.contig_intervals("2")[1].starts.tolist() == [5]
    assert len(ps.contig_intervals("2")[0]) == 0
    with pytest.raises(DataError, match="nowhere"):
        find_peak_files([tmp_path / "nowhere"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no peak files"):
        find_peak_files([empty])


def test_merge_and_coverage_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    size = 2000
    for _ in range(20):
        n = int(rng.integers(0, 40))
        s = rng.integers(0, size - 1, n)
        e = s + rng.integers(0, 120, n)
        mask = np.zeros(size + 200, bool)
        for a, b in zip(s, e, strict=True):
            mask[a:b] = True
        iv = merge_intervals(s, e)
        rebuilt = np.zeros_like(mask)
        for a, b in zip(iv.starts, iv.ends, strict=True):
            rebuilt[a:b] = True
        assert np.array_equal(rebuilt, mask)
        assert np.all(iv.starts[1:] > iv.ends[:-1])
        q0 = rng.integers(0, size, 50)
        q1 = q0 + rng.integers(0, 300, 50)
        want = np.array([mask[a:b].sum() for a, b in zip(q0, q1, strict=True)])
        assert np.array_equal(bin_coverage(iv, q0, q1), want)
