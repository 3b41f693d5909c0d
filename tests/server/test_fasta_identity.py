"""varfx.core.fasta_identity: per-contig MD5s of a FASTA, streamed, cached beside it or per
user, recomputed when the FASTA changes; checked against hashlib on the whole sequence."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from pathlib import Path

import pysam
import pytest

from tests.conftest import REAL, write_fasta
from varfx.core.fasta_identity import (
    CACHE_SUFFIX,
    FastaIdentityError,
    cache_paths,
    compute_contigs,
    fasta_identity,
    fastas_identity,
    write_declaration,
)
from varfx.core.genomes import canonical_assembly, genome_conflict

CHR20 = REAL / "hg19_ref_debian" / "vt-examples.20.fa.gz"
HG38 = REAL / "hg38_chr1_1mb" / "hg38_1m.fa.gz"


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _md5(seq: str) -> str:
    return hashlib.md5(seq.upper().encode()).hexdigest()


def _contigs(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        f"c{i}": "".join(rng.choice("ACGTNacgtn") for _ in range(rng.randint(1, 3000)))
        for i in range(4)
    }


def test_md5_equals_hashlib_of_the_upper_cased_sequence(tmp_path: Path) -> None:
    seqs = _contigs()
    plain = write_fasta(tmp_path / "g.fa", seqs)
    bgz = write_fasta(tmp_path / "b.fa", seqs, bgzip=True)
    # odd layout: CRLF, ragged lines, a description after the name, plain gzip (not bgzip)
    odd = tmp_path / "odd.fa.gz"
    with gzip.open(odd, "wt", newline="") as fh:
        for name, seq in seqs.items():
            fh.write(f">{name} some description\r\n")
            for i, j in enumerate(range(0, len(seq), 77)):
                fh.write(seq[j : j + 77 - (i % 3)] + "\r\n")
                if 77 - (i % 3) < 77:
                    fh.write(seq[j + 77 - (i % 3) : j + 77] + "\r\n")
    want = [(n, len(s), _md5(s)) for n, s in seqs.items()]
    for path in (plain, bgz, odd):
        got = [(c.name, c.length, c.md5) for c in compute_contigs(path)]
        assert got == want, path


@pytest.mark.skipif(not HG38.exists(), reason="hg38_chr1_1mb not present")
def test_md5_of_a_real_fasta_equals_pysam_and_hashlib() -> None:
    with pysam.FastaFile(str(HG38)) as fa:
        seq = fa.fetch("chr1")
    (c,) = fasta_identity(HG38).contigs
    assert (c.name, c.length, c.md5) == ("chr1", 1_000_000, _md5(seq))


@pytest.mark.skipif(not CHR20.exists(), reason="hg19_ref_debian not present")
def test_real_grch37_chr20_has_its_published_md5(tmp_path: Path) -> None:
    (c,) = fasta_identity(CHR20).contigs
    with pysam.FastaFile(str(CHR20)) as fa:
        assert c.md5 == _md5(fa.fetch("20"))
    # the 1000 Genomes / UCSC sequence dictionaries give this MD5 for GRCh37 chr20
    assert (c.length, c.md5) == (63_025_520, "0dec9660ec1efaaf33281c0d5ea2560f")
    # /work/shared is read-only: the cache went to the per-user folder, nothing beside it
    assert not Path(str(CHR20) + CACHE_SUFFIX).exists()
    assert cache_paths(CHR20)[1].is_file()


def test_cache_is_reused_and_recomputed_when_the_fasta_changes(tmp_path: Path) -> None:
    fa = write_fasta(tmp_path / "g.fa", {"a": "ACGT" * 10})
    first = fasta_identity(fa)
    beside = Path(str(fa) + CACHE_SUFFIX)
    assert beside.is_file()
    # doctor the cache: a reused cache gives the doctored MD5 back
    data = json.loads(beside.read_text())
    data["contigs"][0][2] = "0" * 32
    beside.write_text(json.dumps(data))
    assert fasta_identity(fa).contigs[0].md5 == "0" * 32
    # a changed FASTA (new size and mtime) is hashed again
    write_fasta(fa, {"a": "TTTT" * 11})
    os.utime(fa, ns=(1, 1))
    again = fasta_identity(fa)
    assert again.contigs[0].md5 == _md5("TTTT" * 11) != first.contigs[0].md5
    assert json.loads(beside.read_text())["contigs"][0][2] == _md5("TTTT" * 11)


def test_read_only_directory_falls_back_to_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    fa = write_fasta(d / "g.fa", {"a": "ACGTN" * 9})
    d.chmod(0o555)
    try:
        ident = fasta_identity(fa)
        assert not Path(str(fa) + CACHE_SUFFIX).exists()
        per_user = cache_paths(fa)[1]
        assert per_user.is_file()
        assert per_user.is_relative_to(tmp_path / "xdg")
        assert json.loads(per_user.read_text())["path"] == str(fa)
        # nowhere writable: still an answer, no error
        monkeypatch.setenv("XDG_CACHE_HOME", str(d / "nope"))
        assert fasta_identity(fa) == ident
    finally:
        d.chmod(0o755)


def test_a_link_in_the_cache_path_is_not_written_through(tmp_path: Path) -> None:
    fa = write_fasta(tmp_path / "g.fa", {"a": "ACGT"})
    target = tmp_path / "victim.txt"
    target.write_text("keep")
    Path(str(fa) + CACHE_SUFFIX).symlink_to(target)
    assert fasta_identity(fa).contigs[0].md5 == _md5("ACGT")
    assert target.read_text() == "keep"


def test_not_a_fasta_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fa"
    bad.write_text("ACGT\n>a\nACGT\n")
    with pytest.raises(FastaIdentityError, match=r"bad\.fa:1: sequence before the first"):
        compute_contigs(bad)
    dup = tmp_path / "dup.fa"
    dup.write_text(">a\nAC\n>b\nGT\n>a\nTT\n")
    with pytest.raises(FastaIdentityError, match=r"dup\.fa:5: contig 'a' appears twice"):
        compute_contigs(dup)
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(gzip.compress(b">a\n" + b"ACGT" * 5000)[:-20])
    with pytest.raises(FastaIdentityError, match="truncated or corrupt gzip"):
        compute_contigs(cut)


def test_declaration_gives_assembly_and_family(tmp_path: Path) -> None:
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 5})
    write_declaration(fa, assembly="varfx-sim-seed4", family="varfx-sim")
    ident = fasta_identity(fa)
    assert (ident.assembly, ident.family) == ("varfx-sim-seed4", "varfx-sim")
    with pytest.raises(FastaIdentityError, match="declared assembly 'varfx-sim-seed4'"):
        fasta_identity(fa, assembly="GRCh38")
    other = write_fasta(tmp_path / "h.fa", {"chrX": "AC"})
    both = fastas_identity([fa, other])
    assert [c.name for c in both.contigs] == ["chr1", "chrX"]
    assert both.family == "varfx-sim"


def test_assembly_aliases_and_conflicts() -> None:
    from varfx.core.genomes import ContigIdentity, GenomeIdentity

    assert canonical_assembly("hg19") == canonical_assembly("b37") == "GRCh37"
    assert canonical_assembly("unknown") == ""
    a = GenomeIdentity("hg19", (ContigIdentity("chr20", 63_025_520, "0dec"),))
    b = GenomeIdentity("GRCh37", (ContigIdentity("20", 63_025_520, "0dec"),))
    assert genome_conflict(a, b) is None
    c = GenomeIdentity("GRCh38", (ContigIdentity("chr20", 64_444_167),))
    assert "assembly 'GRCh38'" in (genome_conflict(a, c) or "")
    d = GenomeIdentity("", (ContigIdentity("20", 64_444_167),))
    assert "64,444,167 bp" in (genome_conflict(a, d) or "")
