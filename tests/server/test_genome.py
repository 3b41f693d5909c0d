"""Genome access with pysam: fetch vs plain string slicing (plain and bgzipped FASTA), N padding,
chromosome-name aliasing, threads, and the real GRCh38 fragment."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_seq, shared_path, write_fasta
from varfx.core.contigs import contig_aliases as chrom_aliases
from varfx.server.genome import Genome


def padded_slice(seq: str, start: int, end: int) -> bytes:
    """Independent reference: bases [start, end) of seq, N outside it."""
    return "".join(seq[i] if 0 <= i < len(seq) else "N" for i in range(start, end)).encode()


@pytest.fixture(scope="module")
def contigs() -> dict[str, str]:
    soft = random_seq(150, 11)
    soft = soft[:50] + soft[50:100].lower() + soft[100:]  # soft-masked stretch
    return {"chr1": random_seq(777, 10), "2": soft, "chrM": random_seq(61, 12), "x": "ACGT"}


@pytest.mark.parametrize("bgzip", [False, True], ids=["plain", "bgzip"])
def test_fetch_matches_string_slices(tmp_path: Path, contigs: dict[str, str], bgzip: bool) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", contigs, bgzip=bgzip))
    assert dict(genome.contigs) == {name: len(s) for name, s in contigs.items()}
    rng = np.random.default_rng(5)
    for name, seq in contigs.items():
        upper = seq.upper()
        n = len(seq)
        cases = [(0, n), (-5, 3), (n - 3, n + 5), (-10, -2), (n + 1, n + 9), (-3, n + 3), (4, 4)]
        cases += [tuple(sorted(rng.integers(-20, n + 20, 2).tolist())) for _ in range(40)]
        for start, end in cases:
            got = genome.fetch(name, start, end)
            assert got == padded_slice(upper, start, end), (name, start, end)
            assert len(got) == end - start
    genome.close()


@pytest.mark.parametrize("bgzip", [False, True], ids=["plain", "bgzip"])
def test_fetch_windows_match_fetch(tmp_path: Path, contigs: dict[str, str], bgzip: bool) -> None:
    """The batched window gather (memory map + .fai for plain FASTA) returns exactly what one
    fetch per window does: soft-masked bases upper case, N beyond either end of the contig."""
    genome = Genome(write_fasta(tmp_path / "g.fa", contigs, bgzip=bgzip))
    assert (genome._map is None) == bgzip
    rng = np.random.default_rng(9)
    for name, seq in contigs.items():
        n = len(seq)
        for length in (1, 7, 60, 61, 200):
            starts = np.concatenate(
                [[-length - 3, -length + 1, -1, 0, n - length, n - 1, n + 2],
                 rng.integers(-length, n + 5, 30)]
            )  # fmt: skip
            got = genome.fetch_windows(name, starts, length)
            assert got.shape == (len(starts), length)
            assert got.dtype == np.uint8
            for s, row in zip(starts.tolist(), got, strict=True):
                assert row.tobytes() == padded_slice(seq.upper(), s, s + length), (name, s)
    genome.close()


def test_soft_masked_bases_come_back_upper_case(tmp_path: Path, contigs: dict[str, str]) -> None:
    with Genome(write_fasta(tmp_path / "g.fa", contigs)) as genome:
        assert genome.fetch("2", 50, 100) == contigs["2"][50:100].upper().encode()


@pytest.mark.parametrize(
    ("asked", "present", "expected"),
    [
        ("chr1", ["chr1"], "chr1"),
        ("1", ["chr1"], "chr1"),
        ("chr1", ["1"], "1"),
        ("X", ["chrX"], "chrX"),
        ("chrX", ["X"], "X"),
        ("MT", ["chrM"], "chrM"),
        ("chrM", ["MT"], "MT"),
        ("chrMT", ["chrM"], "chrM"),
        ("M", ["MT"], "MT"),
        ("chrM", ["chrM", "MT"], "chrM"),  # exact name wins
        ("1", ["1", "chr1"], "1"),
        ("chr1_KI270706v1_random", ["1_KI270706v1_random"], "1_KI270706v1_random"),
        ("chr2", ["chr1"], None),
        ("chrM", ["chr1"], None),
        ("", ["chr1"], None),
    ],
)
def test_resolve_aliases(
    tmp_path: Path, asked: str, present: list[str], expected: str | None
) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", {name: "ACGTACGT" for name in present}))
    assert genome.resolve(asked) == expected
    assert genome.resolve(asked) == expected  # cached answer is the same


def test_unknown_names_do_not_grow_the_cache(tmp_path: Path) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": "ACGT"}))
    for i in range(2_000):
        assert genome.resolve(f"junk{i}" + "x" * 10_000) is None  # 20 MB of distinct names
    assert genome.resolve("1") == "chr1"  # known names are still cached and found
    cached = genome._resolver._found
    assert len(cached) <= 8 + 64
    assert sum(map(len, cached)) < 1_000


def test_chrom_aliases_order() -> None:
    assert chrom_aliases("Chr7") == ["Chr7", "7", "chr7"]  # any case of the prefix
    assert chrom_aliases("chr7") == ["chr7", "7"]
    assert chrom_aliases("7") == ["7", "chr7"]
    assert chrom_aliases("MT")[0] == "MT"
    assert set(chrom_aliases("MT")) == {"MT", "chrM", "chrMT", "M"}


def test_fetch_from_many_threads(tmp_path: Path, contigs: dict[str, str]) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", contigs, bgzip=True))
    seq = contigs["chr1"]
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            start = int(rng.integers(-10, len(seq)))
            end = start + int(rng.integers(0, 50))
            if genome.fetch("chr1", start, end) != padded_slice(seq, start, end):
                errors.append(f"{start}-{end}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_close_closes_every_threads_handle(tmp_path: Path, contigs: dict[str, str]) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", contigs))
    threads = [threading.Thread(target=genome.fetch, args=("chr1", 0, 10)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handles = list(genome._handles)
    assert len(handles) == 4  # the constructor's thread and three workers
    assert all(h.is_open() for h in handles)
    genome.close()
    assert not any(h.is_open() for h in handles)
    assert genome.fetch("chr1", 0, 5) == contigs["chr1"][:5].encode()  # reopens on use
    genome.close()


def _mapped(path: Path) -> bool:
    """Whether this process has ``path`` memory-mapped (Linux /proc/self/maps)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_close_unmaps_a_plain_fasta_and_windows_map_it_again(
    tmp_path: Path, contigs: dict[str, str]
) -> None:
    path = write_fasta(tmp_path / "g.fa", contigs)
    genome = Genome(path)
    starts = np.array([-3, 0, 100, 770])
    want = [padded_slice(contigs["chr1"], s, s + 10) for s in starts.tolist()]
    assert _mapped(Path(path))
    genome.close()
    assert not _mapped(Path(path))
    got = genome.fetch_windows("chr1", starts, 10)  # maps the file again on use
    assert [row.tobytes() for row in got] == want
    assert _mapped(Path(path))
    genome.close()
    assert not _mapped(Path(path))


def test_unopenable_files_say_why(tmp_path: Path) -> None:
    import gzip

    plain_gz = tmp_path / "plain.fa.gz"
    plain_gz.write_bytes(gzip.compress(b">chr1\nACGTACGT\n"))
    with pytest.raises(OSError, match="gzip-compressed but not with bgzip"):
        Genome(plain_gz)
    not_fasta = tmp_path / "notes.txt"
    not_fasta.write_text("# hello\n")
    with pytest.raises(OSError, match="not a FASTA file"):
        Genome(not_fasta)
    bgz = write_fasta(tmp_path / "ok.fa", {"chr1": "ACGT" * 10}, bgzip=True)
    Path(str(bgz) + ".gzi").write_bytes(b"broken")
    with pytest.raises(OSError, match="index is missing or broken"):
        Genome(bgz)


def test_missing_fasta_and_unknown_contig(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.fa"):
        Genome(tmp_path / "absent.fa")
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": "ACGT"}))
    with pytest.raises(KeyError):
        genome.fetch("chr9", 0, 2)


def test_real_grch38_fragment_plain_and_bgzip_agree() -> None:
    base = shared_path("data", "real", "hg38_chr1_1mb")
    with Genome(base / "hg38_1m.fa.gz") as bgz, Genome(base / "hg38_1m.plain.fa") as plain:
        assert dict(bgz.contigs) == {"chr1": 1_000_000}
        assert bgz.resolve("1") == "chr1"
        # the assembly gap at the start of chr1 and the first gap boundary at 207,666
        assert bgz.fetch("chr1", 0, 10_000) == b"N" * 10_000
        assert bgz.fetch("chr1", 10_000, 10_001) != b"N"
        assert bgz.fetch("chr1", 207_660, 207_670)[6:] == b"NNNN"
        assert b"N" not in bgz.fetch("chr1", 207_660, 207_666)
        # eQTL chr1_14677_G_A_b38: REF G at 1-based 14677
        assert bgz.fetch("chr1", 14_676, 14_677) == b"G"
        rng = np.random.default_rng(0)
        for start in rng.integers(-500, 1_000_000, 50).tolist():
            assert bgz.fetch("chr1", start, start + 1000) == plain.fetch(
                "chr1", start, start + 1000
            )
