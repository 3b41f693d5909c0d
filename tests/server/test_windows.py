"""Variant windows: the DESIGN.md vectors, hand-built cases, statuses, real data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import shared_path, write_fasta
from varfx.core.tokens import decode
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.genome import Genome
from varfx.server.windows import build_windows, fit_sequence, sequence_windows

#          0123456789012345678901234567890123456789
TOY = "TTTCCTCATGCAATTCAAAACCATGTCCGTAATGTAGGCG"  # same contig as shared/vectors/toy.fa


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Genome:
    path = write_fasta(tmp_path_factory.mktemp("toy") / "toy.fa", {"chrT": TOY, "chrM": TOY[:12]})
    return Genome(path)


def one(genome: Genome, chrom: str, pos: int, ref: str, alt: str, length: int = 10, **kw: object):
    w = build_windows(genome, [pb.Variant(chrom=chrom, pos=pos, ref=ref, alt=alt)], length, **kw)  # type: ignore[arg-type]
    return int(w.status[0]), decode(w.ref[0]), decode(w.alt[0]), w.messages[0]


def test_design_vectors_every_row() -> None:
    vectors = shared_path("vectors", "windows.tsv")
    genome = Genome(shared_path("vectors", "toy.fa"))
    lines = [ln for ln in vectors.read_text().splitlines() if ln and not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    assert len(rows) >= 8
    for row in rows:
        status, ref_w, alt_w, _ = one(
            genome,
            row["chrom"],
            int(row["pos"]),
            row["ref"],
            row["alt"],
            max_indel=100,
            indels_as_written=True,  # the vectors pin the window rule, not normalisation
        )
        assert status == pb.OK, row["case"]
        assert ref_w == row["ref_window"], row["case"]
        assert alt_w == row["alt_window"], row["case"]


@pytest.mark.parametrize(
    ("pos", "ref", "alt", "ref_w", "alt_w"),
    [
        (20, "A", "C", "CAAAACCATG", "CAAACCCATG"),  # SNV: variant at index 4
        (15, "TCA", "AGT", "CAATTCAAAA", "CAATAGTAAA"),  # MNV
        (22, "C", "CGG", "AAACCATGTC", "AAACCGGATG"),  # insertion pushes right flank out
        (25, "GTCC", "G", "CCATGTCCGT", "CCATGGTAAT"),  # deletion pulls right flank in
        (1, "T", "A", "NNNNTTTCCT", "NNNNATTCCT"),  # contig start: N padding
        (40, "G", "A", "AGGCGNNNNN", "AGGCANNNNN"),  # contig end
        (37, "GGCG", "G", "TGTAGGCGNN", "TGTAGNNNNN"),  # deletion at the end (as written)
    ],
)
def test_hand_built_windows(
    toy: Genome, pos: int, ref: str, alt: str, ref_w: str, alt_w: str
) -> None:
    # expected windows computed by hand from TOY with the L/2-1 convention
    status, got_ref, got_alt, _ = one(toy, "chrT", pos, ref, alt, indels_as_written=True)
    assert (status, got_ref, got_alt) == (pb.OK, ref_w, alt_w)
    assert got_ref == (("N" * 10) + TOY + ("N" * 10))[pos - 1 - 4 + 10 : pos - 1 - 4 + 20]


def test_lowercase_alleles_and_chrom_aliases(toy: Genome) -> None:
    assert one(toy, "T", 20, "a", "c")[0] == pb.OK  # chr prefix added
    assert one(toy, "chrZ", 20, "a", "c")[0] == pb.UNKNOWN_CHROMOSOME
    s1 = one(toy, "chrT", 20, "a", "c")
    assert s1[0] == pb.OK
    # chrM <-> MT
    for name in ("MT", "chrM", "M", "chrMT"):
        status, ref_w, _, _ = one(toy, name, 5, TOY[4], "A" if TOY[4] != "A" else "C")
        assert status == pb.OK, name
        assert ref_w == TOY[:10], name


def test_chr_prefix_both_ways(tmp_path: Path) -> None:
    genome = Genome(write_fasta(tmp_path / "g.fa", {"1": TOY, "chrX": TOY}))
    assert one(genome, "chr1", 20, "A", "C")[0] == pb.OK
    assert one(genome, "X", 20, "A", "C")[0] == pb.OK


def test_multi_allelic_site_shares_ref_window(toy: Genome) -> None:
    variants = [pb.Variant(chrom="chrT", pos=20, ref="A", alt=a) for a in ("C", "G", "T", "AC")]
    w = build_windows(toy, variants, 10)
    assert list(w.status) == [pb.OK] * 4
    assert (w.ref == w.ref[0]).all()
    assert len({decode(r) for r in w.alt}) == 4


@pytest.mark.parametrize(
    ("chrom", "pos", "ref", "alt", "code", "needle"),
    [
        ("chrT", 20, "G", "C", pb.REF_MISMATCH, "'G'"),
        ("chr9", 20, "A", "C", pb.UNKNOWN_CHROMOSOME, "chr9"),
        ("chrT", 0, "A", "C", pb.POSITION_OUT_OF_RANGE, "0"),
        ("chrT", 40, "GA", "C", pb.POSITION_OUT_OF_RANGE, "40"),
        ("chrT", 20, "A", "<DEL>", pb.SYMBOLIC_ALLELE, "<DEL>"),
        ("chrT", 20, "A", "*", pb.SYMBOLIC_ALLELE, "*"),
        ("chrT", 20, "A", "A]chrT:5]", pb.SYMBOLIC_ALLELE, "]"),
        ("chrT", 20, "A", "ACGTACGT", pb.INDEL_TOO_LONG, "ACGTACGT"),
        ("chrT", 20, "A", "X", pb.INVALID_ALLELE, "'X'"),
        ("chrT", 20, "A", "R", pb.INVALID_ALLELE, "'R'"),
        ("chrT", 20, "A", ".", pb.INVALID_ALLELE, "'.'"),
        ("chrT", 20, "A", "A", pb.REF_EQUALS_ALT, "'A'"),
    ],
)
def test_unscorable_variants_get_status_and_message(
    toy: Genome, chrom: str, pos: int, ref: str, alt: str, code: int, needle: str
) -> None:
    status, ref_w, alt_w, message = one(toy, chrom, pos, ref, alt)
    assert status == code
    assert needle in message
    assert ref_w == alt_w == "N" * 10


def test_ref_policies(toy: Genome) -> None:
    # genome has A at 20; VCF says REF=C ALT=A (swapped)
    strict = one(toy, "chrT", 20, "C", "A")
    assert strict[0] == pb.REF_MISMATCH
    flip = one(toy, "chrT", 20, "C", "A", ref_policy=pb.REF_POLICY_FLIP)
    assert flip[0] == pb.OK
    assert flip[1:3] == ("CAAAACCATG", "CAAACCCATG")
    assert "swapped" in flip[3]
    warn = one(toy, "chrT", 20, "G", "T", ref_policy=pb.REF_POLICY_WARN)
    assert warn[0] == pb.OK
    assert warn[1:3] == ("CAAAACCATG", "CAAATCCATG")
    assert "does not match" in warn[3]
    # FLIP where ALT does not match either: still a mismatch
    assert one(toy, "chrT", 20, "C", "G", ref_policy=pb.REF_POLICY_FLIP)[0] == pb.REF_MISMATCH


def test_sequence_pairs_fit_and_validate() -> None:
    assert fit_sequence("ACG", 7) == b"NNACGNN"
    assert fit_sequence("AACCGGTT", 4) == b"CCGG"
    w = sequence_windows([("ACGT", "ACTT"), ("ACGX", "ACGT")], 6)
    assert list(w.status) == [pb.OK, pb.INVALID_ALLELE]
    assert decode(w.ref[0]) == "NACGTN"
    assert "'X'" in w.messages[1]


def _read_headerless_vcf(path: Path) -> list[pb.Variant]:
    out = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            chrom, pos, vid, ref, alt = line.split("\t")[:5]
            out.append(pb.Variant(id=vid, chrom=chrom, pos=int(pos), ref=ref, alt=alt))
    return out


def test_real_eqtl_snps_match_grch38() -> None:
    genome = Genome(shared_path("data", "real", "hg38_chr1_1mb", "hg38_1m.fa.gz"))
    variants = _read_headerless_vcf(shared_path("data", "real", "hg38_chr1_1mb", "snp_eqtl.vcf"))
    w = build_windows(genome, variants, 1000)
    assert len(variants) == 8
    assert list(w.status) == [pb.OK] * 8
    assert (w.ref[:, 499] != w.alt[:, 499]).all()  # the SNV sits at L/2-1


def test_real_flipped_eqtl_snps() -> None:
    genome = Genome(shared_path("data", "real", "hg38_chr1_1mb", "hg38_1m.fa.gz"))
    variants = _read_headerless_vcf(
        shared_path("data", "real", "hg38_chr1_1mb", "snp_eqtl_flip.vcf")
    )
    strict = build_windows(genome, variants, 1000)
    assert list(strict.status) == [pb.REF_MISMATCH] * 8
    flipped = build_windows(genome, variants, 1000, ref_policy=pb.REF_POLICY_FLIP)
    assert list(flipped.status) == [pb.OK] * 8
    plain = build_windows(
        genome,
        _read_headerless_vcf(shared_path("data", "real", "hg38_chr1_1mb", "snp_eqtl.vcf")),
        1000,
    )
    assert (flipped.ref == plain.ref).all()
    assert (flipped.alt == plain.alt).all()


def test_indels_are_left_aligned_before_windows(toy: Genome) -> None:
    # chrT 34..40 is GTAGGCG: deleting GCG at 38-40 leaves the same haplotype as deleting GGC
    # at 37-39, whose left-aligned form anchors at 36 (A): AGGC>A
    as_written = one(toy, "chrT", 37, "GGCG", "G", indels_as_written=True)
    normalised = one(toy, "chrT", 37, "GGCG", "G")
    left = one(toy, "chrT", 36, "AGGC", "A")
    assert normalised[0] == pb.OK
    assert normalised[1:3] == left[1:3]  # one haplotype, one pair of windows
    assert as_written[1:3] != normalised[1:3]
    assert "normalised chrT:37:GGCG>G to chrT:36:AGGC>A" in normalised[3]
    assert left[3] == "" or "normalised" not in left[3]  # already left-aligned: no word
    # trailing shared bases are trimmed: an MNV written with padding is an SNV
    assert one(toy, "chrT", 19, "AAC", "ACC")[1:3] == one(toy, "chrT", 20, "A", "C")[1:3]


def test_real_chr20_indels_every_spelling_one_score() -> None:
    """vt's normalize test VCF (GRCh37 chr20): left-aligning by hand (independent, base by
    base against the FASTA) gives the windows varfx builds by default."""
    fasta = shared_path("data", "real", "hg19_ref_debian", "vt-examples.20.fa.gz")
    vcf = shared_path(
        "data", "real", "hg19_ref_debian", "vt-examples.normalize_IN.chr20_indels.vcf.gz"
    )
    import gzip

    genome = Genome(fasta)
    variants = []
    with gzip.open(vcf, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            f = line.split("\t")
            for alt in f[4].split(","):
                variants.append(pb.Variant(chrom=f[0], pos=int(f[1]), ref=f[3], alt=alt))
    w = build_windows(genome, variants, 200)
    moved = [i for i, m in enumerate(w.messages) if "normalised" in m]
    assert len(moved) >= 50  # the issue counts 80 of 194 records not left-aligned
    contig = genome.resolve("20") or "20"
    for i in moved[:40]:
        v = variants[i]
        pos, ref, alt = v.pos, v.ref.upper(), v.alt.upper()
        # independent left-align: shift the indel left while the base before equals the last
        while ref[-1] == alt[-1] and (len(ref) > 1 and len(alt) > 1):
            ref, alt = ref[:-1], alt[:-1]
        while ref[-1] == alt[-1]:
            base = genome.fetch(contig, pos - 2, pos - 1).decode()
            ref, alt, pos = base + ref[:-1], base + alt[:-1], pos - 1
        while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
            ref, alt, pos = ref[1:], alt[1:], pos + 1
        again = build_windows(genome, [pb.Variant(chrom=v.chrom, pos=pos, ref=ref, alt=alt)], 200)
        assert int(again.status[0]) == pb.OK
        assert decode(again.ref[0]) == decode(w.ref[i]), v
        assert decode(again.alt[0]) == decode(w.alt[i]), v
