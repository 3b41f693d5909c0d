"""Variant windows checked against an independent, base-by-base implementation of the DESIGN.md
formulas on random variants, plus the edge cases and real variant files not covered in
test_windows.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_seq, shared_path, write_fasta
from varfx.core.tokens import decode
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.genome import Genome
from varfx.server.windows import build_windows, sequence_windows

CONTIGS = {
    "chr1": random_seq(500, 21),
    "chr2": random_seq(37, 22),
    "chrM": random_seq(120, 23),
    "gap": "ACGTNNNNNNACGT",
}


def expected_windows(seq: str, pos: int, ref: str, alt: str, length: int) -> tuple[str, str]:
    """DESIGN.md, written out base by base (independent of varfx.server.windows)."""
    c = length // 2 - 1

    def g(i: int) -> str:
        return seq[i] if 0 <= i < len(seq) else "N"

    start = pos - 1 - c
    ref_w = "".join(g(i) for i in range(start, start + length))
    left = "".join(g(i) for i in range(start, pos - 1))
    right = "".join(g(i) for i in range(pos - 1 + len(ref), pos - 1 + len(ref) + length))
    return ref_w, (left + alt + right)[:length]


@pytest.fixture(scope="module", params=[True, False], ids=["bgzip", "plain"])
def genome(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Genome:
    """Both ways of reading windows: pysam fetches (bgzip) and the memory-mapped plain FASTA."""
    path = write_fasta(tmp_path_factory.mktemp("wref") / "g.fa", CONTIGS, bgzip=request.param)
    return Genome(path)


def random_variants(rng: np.random.Generator, n: int, length: int) -> list[pb.Variant]:
    limit = length // 2
    out = []
    names = ["chr1", "chr2", "chrM"]
    while len(out) < n:
        chrom = names[int(rng.integers(0, 3))]
        seq = CONTIGS[chrom]
        kind = rng.choice(["snv", "mnv", "ins", "del"])
        size = int(rng.integers(1, max(2, min(limit, 6)) + 1))
        ref_len = {"snv": 1, "mnv": size, "ins": 1, "del": size + 1}[str(kind)]
        alt_len = {"snv": 1, "mnv": size, "ins": size + 1, "del": 1}[str(kind)]
        if abs(ref_len - alt_len) > limit or min(ref_len, alt_len) > limit:
            continue
        # positions anywhere, including the first and last bases of the contig
        pos = int(rng.choice([1, len(seq) - ref_len + 1, int(rng.integers(1, len(seq) + 1))]))
        if pos - 1 + ref_len > len(seq):
            continue
        ref = seq[pos - 1 : pos - 1 + ref_len]
        alt = "".join(rng.choice(list("ACGT"), alt_len))
        if kind in ("ins", "del"):
            alt = ref[0] + alt[1:]  # VCF anchor base
        if alt == ref:
            continue
        alias = {"chr1": "1", "chrM": "MT"}.get(chrom, chrom) if rng.random() < 0.3 else chrom
        out.append(pb.Variant(chrom=alias, pos=pos, ref=ref.lower(), alt=alt))
    return out


@pytest.mark.parametrize("length", [2, 10, 64, 1000])
def test_random_variants_match_reference(genome: Genome, length: int) -> None:
    variants = random_variants(np.random.default_rng(length), 300, length)
    w = build_windows(genome, variants, length, indels_as_written=True)
    assert w.ref.shape == w.alt.shape == (300, length)
    assert w.ref.dtype == w.alt.dtype == np.uint8
    assert w.status.dtype == np.int32
    assert w.ok.dtype == np.bool_
    assert w.ok.all(), [m for m in w.messages if m]
    # the only notes are N counts, exactly where the ref window reaches past a contig end
    for i, message in enumerate(w.messages):
        n_count = int((w.ref[i] == 4).sum())
        assert message == (
            f"window has {n_count} N bases (contig end or assembly gap)" if n_count else ""
        )
    assert w.noted == [i for i, m in enumerate(w.messages) if m]
    for i, v in enumerate(variants):
        seq = CONTIGS[genome.resolve(v.chrom) or ""]
        ref_w, alt_w = expected_windows(seq, v.pos, v.ref.upper(), v.alt, length)
        assert decode(w.ref[i]) == ref_w, (v, length)
        assert decode(w.alt[i]) == alt_w, (v, length)


def test_mixed_batch_rows_are_independent(genome: Genome) -> None:
    good = random_variants(np.random.default_rng(5), 20, 16)
    bad = [pb.Variant(chrom="chrZ", pos=3, ref="A", alt="C")] * 5
    mixed = [x for pair in zip(good[:5], bad, strict=True) for x in pair] + good[5:]
    alone = build_windows(genome, good, 16)
    together = build_windows(genome, mixed, 16)
    ok = together.ok
    assert ok.sum() == 20
    np.testing.assert_array_equal(together.ref[ok], alone.ref)
    np.testing.assert_array_equal(together.alt[ok], alone.alt)
    assert (together.ref[~ok] == 4).all()
    assert build_windows(genome, [], 16).ref.shape == (0, 16)


def test_window_length_must_be_even(genome: Genome) -> None:
    for bad in (0, 1, 9):
        with pytest.raises(ValueError, match=f"got {bad}"):
            build_windows(genome, [], bad)


def test_genome_n_versus_ref(genome: Genome) -> None:
    v = [
        pb.Variant(chrom="gap", pos=6, ref="A", alt="C"),  # genome has N
        pb.Variant(chrom="gap", pos=6, ref="N", alt="C"),  # REF N on genome N
        pb.Variant(chrom="gap", pos=2, ref="N", alt="C"),  # REF N on genome C
    ]
    w = build_windows(genome, v, 10)
    # REF over an assembly gap (genome N): a status of its own, whatever the REF says
    assert w.status.tolist() == [pb.REFERENCE_GAP, pb.REFERENCE_GAP, pb.REF_MISMATCH]
    assert "'A'" in w.messages[0]
    assert "assembly gap" in w.messages[0]
    assert "gap:6" in w.messages[0]
    assert "'N'" in w.messages[2]


@pytest.mark.parametrize(
    ("ref_len", "alt_len", "max_indel", "ok"),
    [
        (1, 6, None, True),  # L=10: 5 inserted bases is the default limit
        (1, 7, None, False),
        (6, 1, None, True),
        (7, 1, None, False),
        (5, 5, None, True),  # MNV as long as the limit
        (6, 6, None, False),
        (1, 3, 1, False),
        (1, 3, 2, True),
        (1, 12, 20, True),  # longer than the window: the window is cut to L
    ],
)
def test_indel_limit(
    genome: Genome, ref_len: int, alt_len: int, max_indel: int | None, ok: bool
) -> None:
    seq = CONTIGS["chr1"]
    pos = 100
    ref = seq[pos - 1 : pos - 1 + ref_len]
    alt = (
        ref[0] + "T" * (alt_len - 1)
        if alt_len != ref_len
        else "".join({"A": "C", "C": "G", "G": "T", "T": "A"}[b] for b in ref)
    )
    w = build_windows(genome, [pb.Variant(chrom="chr1", pos=pos, ref=ref, alt=alt)], 10,
                      max_indel=max_indel)  # fmt: skip
    if ok:
        assert w.status.tolist() == [pb.OK]
        assert (decode(w.ref[0]), decode(w.alt[0])) == expected_windows(seq, pos, ref, alt, 10)
    else:
        assert w.status.tolist() == [pb.INDEL_TOO_LONG]
        assert alt in w.messages[0]
        assert "chr1:100" in w.messages[0]


R5 = CONTIGS["chr1"][4]  # REF that matches the genome at chr1:5
NOT_R5 = "C" if R5 != "C" else "G"
LAST = CONTIGS["chr2"][-1]


@pytest.mark.parametrize(
    ("chrom", "pos", "ref", "alt", "code", "needle"),
    [
        ("chr2", 37, LAST, "C" if LAST != "C" else "G", pb.OK, ""),  # last base is scorable
        ("chr2", 37, LAST + "A", "C", pb.POSITION_OUT_OF_RANGE, "position 37"),
        ("chr2", 38, "A", "C", pb.POSITION_OUT_OF_RANGE, "position 38"),
        ("chr2", 10**9, "A", "C", pb.POSITION_OUT_OF_RANGE, "length 37"),
        ("chr2", -4, "A", "C", pb.POSITION_OUT_OF_RANGE, "position -4"),
        ("chr1", 5, "R", "A", pb.INVALID_ALLELE, "REF allele 'R'"),
        ("chr1", 5, R5, "", pb.INVALID_ALLELE, "missing ALT"),
        ("chr1", 5, "", "A", pb.INVALID_ALLELE, "missing REF"),
        ("chr1", 5, R5, NOT_R5 + "," + R5, pb.INVALID_ALLELE, "','"),
        ("chr1", 5, R5, R5 + ".", pb.SYMBOLIC_ALLELE, repr(R5 + ".")),
        ("chr1", 5, R5, "." + R5, pb.SYMBOLIC_ALLELE, repr("." + R5)),
        ("chr1", 5, R5, "<INS>", pb.SYMBOLIC_ALLELE, "<INS>"),
        ("chr1", 5, R5, R5 + "[chr2:5[", pb.SYMBOLIC_ALLELE, "[chr2:5["),
        ("chr1", 5, R5, "*", pb.SYMBOLIC_ALLELE, "'*'"),
        ("chr1", 5, R5.lower(), R5, pb.REF_EQUALS_ALT, repr(R5)),
        ("chr1", 5, NOT_R5, R5 + "T", pb.REF_MISMATCH, f"{NOT_R5!r} does not match the genome"),
        ("chrUn_x", 5, "A", "C", pb.UNKNOWN_CHROMOSOME, "'chrUn_x'"),
    ],
)
def test_statuses_name_the_offending_value(
    genome: Genome, chrom: str, pos: int, ref: str, alt: str, code: int, needle: str
) -> None:
    w = build_windows(genome, [pb.Variant(chrom=chrom, pos=pos, ref=ref, alt=alt)], 10)
    assert w.status.tolist() == [code], w.messages
    assert needle in w.messages[0]
    assert bool(w.ok[0]) == (code == pb.OK)
    if code != pb.OK:
        assert (w.ref[0] == 4).all()
        assert (w.alt[0] == 4).all()


def test_warn_policy_with_a_deletion(genome: Genome) -> None:
    seq = CONTIGS["chr1"]
    pos = 200
    genome_ref = seq[pos - 1 : pos + 2]
    wrong = genome_ref[0] + ("A" if genome_ref[1] != "A" else "C") + genome_ref[2]
    v = pb.Variant(chrom="chr1", pos=pos, ref=wrong, alt=wrong[0])
    assert build_windows(genome, [v], 20).status.tolist() == [pb.REF_MISMATCH]
    w = build_windows(genome, [v], 20, ref_policy=pb.REF_POLICY_WARN, indels_as_written=True)
    assert w.status.tolist() == [pb.OK]
    assert repr(wrong) in w.messages[0]
    assert repr(genome_ref) in w.messages[0]
    assert (decode(w.ref[0]), decode(w.alt[0])) == expected_windows(seq, pos, wrong, wrong[0], 20)
    # UNSPECIFIED means STRICT
    unspecified = build_windows(genome, [v], 20, ref_policy=pb.REF_POLICY_UNSPECIFIED)
    assert unspecified.status.tolist() == [pb.REF_MISMATCH]


def test_flip_policy_turns_a_backwards_deletion_into_an_insertion(genome: Genome) -> None:
    seq = CONTIGS["chr1"]
    pos = 300
    on_genome = seq[pos - 1]
    # the sample's allele (3 bases) was written as REF, the genome's base as ALT
    backwards_ref = on_genome + ("GG" if seq[pos : pos + 2] != "GG" else "TT")
    v = pb.Variant(chrom="1", pos=pos, ref=backwards_ref, alt=on_genome)
    assert build_windows(genome, [v], 20).status.tolist() == [pb.REF_MISMATCH]
    w = build_windows(genome, [v], 20, ref_policy=pb.REF_POLICY_FLIP)
    assert w.status.tolist() == [pb.OK], w.messages
    assert "swapped" in w.messages[0]
    assert repr(backwards_ref) in w.messages[0]
    assert (decode(w.ref[0]), decode(w.alt[0])) == expected_windows(
        seq, pos, on_genome, backwards_ref, 20
    )
    # neither allele on the genome: FLIP still reports the mismatch
    other = "A" if on_genome != "A" else "C"
    neither = pb.Variant(chrom="1", pos=pos, ref=other + "GG", alt=other)
    flip = build_windows(genome, [neither], 20, ref_policy=pb.REF_POLICY_FLIP)
    assert flip.status.tolist() == [pb.REF_MISMATCH]


def fit(seq: str, length: int) -> str:
    """Independent centring: pad with N (extra N on the right) or keep the central bases."""
    s = seq.upper()
    if len(s) >= length:
        off = (len(s) - length) // 2
        return s[off : off + length]
    left = (length - len(s)) // 2
    return "N" * left + s + "N" * (length - len(s) - left)


def test_sequence_pairs_against_reference() -> None:
    rng = np.random.default_rng(3)
    pairs = [
        ("".join(rng.choice(list("ACGTNacgt"), int(n))), "".join(rng.choice(list("ACGT"), int(m))))
        for n, m in rng.integers(1, 30, (40, 2))
    ]
    w = sequence_windows(pairs, 16)
    assert w.ok.all()
    for i, (r, a) in enumerate(pairs):
        assert decode(w.ref[i]) == fit(r, 16)
        assert decode(w.alt[i]) == fit(a, 16)


def test_sequence_pairs_bad_input() -> None:
    w = sequence_windows([("", "ACGT"), ("ACGT", "ACRT"), ("ACGT", "AC GT"), ("ACGT", "TTTT")], 8)
    assert w.status.tolist() == [pb.INVALID_ALLELE] * 3 + [pb.OK]
    assert "empty ref" in w.messages[0]
    assert "'R' at position 2 of the alt" in w.messages[1]
    assert "' ' at position 2" in w.messages[2]
    assert (w.ref[:3] == 4).all()


# --- real variant files ---------------------------------------------------------------------


def read_table(path: Path, cols: tuple[int, int, int, int]) -> list[pb.Variant]:
    out = []
    with open(path) as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if row and not row[0].startswith("#"):
                chrom, pos, ref, alt = (row[i] for i in cols)
                out.append(pb.Variant(chrom=chrom, pos=int(pos), ref=ref, alt=alt))
    return out


@pytest.fixture(scope="module")
def hg38() -> Genome:
    return Genome(shared_path("data", "real", "hg38_chr1_1mb", "hg38_1m.fa.gz"))


def test_real_invalid_alleles_file(hg38: Genome) -> None:
    path = shared_path(
        "data", "real", "hg38_chr1_1mb", "variant-scorer.test.chrombpnet.incorrect.tsv"
    )
    variants = read_table(path, (0, 1, 2, 3))
    w = build_windows(hg38, variants, 1000)
    assert len(variants) == 6
    assert w.status.tolist() == [
        pb.OK, pb.OK, pb.OK, pb.OK,  # the 4 real caQTLs (one with ALT N)
        pb.INVALID_ALLELE,  # REF X
        pb.INVALID_ALLELE,  # ALT Y (checked before the unknown chr2)
    ]  # fmt: skip
    assert "REF allele 'X'" in w.messages[4]
    assert "ALT allele 'Y'" in w.messages[5]
    assert decode(w.alt[3][499:500]) == "N"


@pytest.mark.parametrize("name", ["variant-scorer.test.chrombpnet.tsv",
                                  "variant-scorer.test.chrombpnet.no_chr.tsv"])  # fmt: skip
def test_real_caqtls_every_record_comes_back(hg38: Genome, name: str) -> None:
    variants = read_table(shared_path("data", "real", "hg38_chr1_1mb", name), (0, 1, 2, 3))
    w = build_windows(hg38, variants, 1000)
    codes = dict(zip((f"{v.chrom}:{v.pos}" for v in variants), w.status.tolist(), strict=True))
    prefix = "chr" if name.endswith("chrombpnet.tsv") else ""
    assert len(codes) == 10
    assert codes[f"{prefix}1:976215"] == pb.OK  # the only one inside chr1:1-1,000,000
    for key, code in codes.items():
        if key.startswith(f"{prefix}1:10") or key.startswith(f"{prefix}1:3"):
            assert code == pb.POSITION_OUT_OF_RANGE, key
        elif key.startswith(f"{prefix}2:"):
            assert code == pb.UNKNOWN_CHROMOSOME, key


def test_real_kidney_eqtls_none_dropped(hg38: Genome) -> None:
    path = shared_path("data", "real", "hg38_chr1_1mb", "snp_kidney_eqtl.vcf")
    variants = read_table(path, (0, 1, 3, 4))
    w = build_windows(hg38, variants, 1000)
    assert len(variants) == 54
    on_chr1 = np.array([v.chrom == "chr1" for v in variants])
    assert on_chr1.sum() == 3
    assert (w.status[on_chr1] == pb.POSITION_OUT_OF_RANGE).all()
    assert (w.status[~on_chr1] == pb.UNKNOWN_CHROMOSOME).all()
    assert all(m for m in w.messages)
