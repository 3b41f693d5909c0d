"""Token encoding, decoding, reverse complement and one-hot, checked against plain-Python
string implementations written independently here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from varfx.core.tokens import (
    N_TOKEN,
    InvalidSequenceError,
    decode,
    encode,
    encode_batch,
    first_invalid,
    one_hot,
    reverse_complement,
)

TOKEN = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def random_dna(rng: np.random.Generator, n: int, alphabet: str = "ACGTNacgtn") -> str:
    return "".join(rng.choice(list(alphabet), n))


def test_encode_matches_python_mapping_any_case() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 1000):
        seq = random_dna(rng, n)
        tokens = encode(seq)
        assert tokens.dtype == np.uint8
        assert tokens.shape == (n,)
        assert tokens.tolist() == [TOKEN[b] for b in seq.upper()]
        # bytes and str give the same tokens
        assert np.array_equal(encode(seq.encode()), tokens)
        assert decode(tokens) == seq.upper()


@pytest.mark.parametrize(
    ("seq", "char", "pos"),
    [
        ("ACGR", "R", 3),  # IUPAC code
        ("Y", "Y", 0),
        ("AC-GT", "-", 2),
        ("ACG T", " ", 3),
        ("ACGTU", "U", 4),  # RNA
        ("AC.", ".", 2),
        ("ACé", "é", 2),  # non-ASCII named as itself
        (b"AC\xffA", "\xff", 2),
        ("ACGTNX" + "A" * 100 + "Z", "X", 5),  # the first bad character is named
    ],
)
def test_encode_names_bad_char_and_position(seq: str | bytes, char: str, pos: int) -> None:
    with pytest.raises(InvalidSequenceError) as info:
        encode(seq)
    assert info.value.char == char
    assert info.value.position == pos
    assert repr(char) in str(info.value)
    assert f"position {pos}" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert first_invalid(seq) == pos


def test_first_invalid_clean_sequence() -> None:
    assert first_invalid("ACGTNacgtn") == -1
    assert first_invalid("") == -1


def test_encode_batch_equals_row_by_row_encode() -> None:
    rng = np.random.default_rng(1)
    seqs = [random_dna(rng, 33).encode() for _ in range(25)]
    batch = encode_batch(seqs, 33)
    assert batch.dtype == np.uint8
    assert batch.shape == (25, 33)
    assert batch.flags.writeable
    assert batch.flags.c_contiguous
    for row, seq in zip(batch, seqs, strict=True):
        assert np.array_equal(row, encode(seq))


def test_encode_batch_edge_cases() -> None:
    assert encode_batch([], 12).shape == (0, 12)
    # pre-validated input: anything that slipped through becomes N rather than garbage
    assert encode_batch([b"AXG?"], 4).tolist() == [[0, N_TOKEN, 2, N_TOKEN]]
    with pytest.raises(ValueError, match="length 4"):
        encode_batch([b"ACGT", b"ACG"], 4)


def test_decode_rows_and_dtypes() -> None:
    assert decode(np.array([4, 3, 2, 1, 0], dtype=np.uint8)) == "NTGCA"
    assert decode(np.array([0, 1], dtype=np.int64)) == "AC"
    assert decode(np.zeros(0, dtype=np.uint8)) == ""


def test_reverse_complement_matches_string_version() -> None:
    rng = np.random.default_rng(2)
    seqs = [random_dna(rng, 40, "ACGTN") for _ in range(10)]
    tokens = encode_batch([s.encode() for s in seqs], 40)
    rc = reverse_complement(tokens)
    assert rc.dtype == np.uint8
    assert rc.flags.c_contiguous
    for row, seq in zip(rc, seqs, strict=True):
        assert decode(row) == seq.translate(COMPLEMENT)[::-1]
    assert np.array_equal(reverse_complement(rc), tokens)  # an involution
    assert tokens.tolist() == encode_batch([s.encode() for s in seqs], 40).tolist()  # not mutated


def test_reverse_complement_any_leading_shape() -> None:
    tokens = np.array([[[0, 1, 4], [2, 2, 3]]], dtype=np.uint8)  # [1, 2, 3]
    rc = reverse_complement(tokens)
    assert rc.shape == (1, 2, 3)
    assert [decode(r) for r in rc[0]] == ["NGT", "ACC"]
    assert decode(reverse_complement(encode("GATTACA"))) == "TGTAATC"


@pytest.mark.parametrize("alphabet", ["".join(p) for p in itertools.permutations("ACGT")])
def test_one_hot_every_channel_order(alphabet: str) -> None:
    rng = np.random.default_rng(3)
    seqs = [random_dna(rng, 17, "ACGTN") for _ in range(3)]
    tokens = encode_batch([s.encode() for s in seqs], 17)
    x = one_hot(tokens, alphabet)
    assert x.dtype == np.float32
    assert x.shape == (3, 4, 17)
    assert x.flags.c_contiguous
    for b, seq in enumerate(seqs):
        for i, base in enumerate(seq):
            expected = [0.25] * 4 if base == "N" else [float(base == ch) for ch in alphabet]
            assert x[b, :, i].tolist() == expected, (alphabet, seq, i)


def test_one_hot_n_value_and_bad_alphabet() -> None:
    tokens = encode("ANC")[None, :]
    assert one_hot(tokens, "AGCT", n_value=0.0)[0, :, 1].tolist() == [0, 0, 0, 0]
    assert one_hot(tokens, "ACGT", n_value=1.0)[0, :, 1].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"\[B, L\], got shape \(3,\)"):
        one_hot(encode("ANC"))
    for bad in ("ACGU", "ACG", "AACG", "ACGTN"):
        with pytest.raises(ValueError, match=repr(bad)):
            one_hot(tokens, bad)
