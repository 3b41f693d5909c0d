"""Token encoding, one-hot, reverse complement, genome fetch and the score formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_fasta
from varfx.core.tokens import (
    InvalidSequenceError,
    decode,
    encode,
    encode_batch,
    one_hot,
    reverse_complement,
)
from varfx.server.genome import Genome
from varfx.server.scores import compute_scores


def test_encode_decode_roundtrip_and_errors() -> None:
    assert encode("ACGTNacgtn").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert decode(encode("GATTACA")) == "GATTACA"
    with pytest.raises(InvalidSequenceError, match=r"'R' at position 2"):
        encode("ACRT")
    batch = encode_batch([b"ACGT", b"TTXA"], 4)
    assert batch.tolist() == [[0, 1, 2, 3], [3, 3, 4, 0]]


def test_reverse_complement() -> None:
    assert decode(reverse_complement(encode("AACGTN"))) == "NACGTT"
    x = encode_batch([b"ACCG", b"TTTA"], 4)
    assert [decode(r) for r in reverse_complement(x)] == ["CGGT", "TAAA"]


def test_one_hot_channel_order_and_n_value() -> None:
    tokens = encode("ACGTN")[None, :]
    acgt = one_hot(tokens)
    assert acgt.shape == (1, 4, 5)
    assert acgt[0, :, :4].argmax(axis=0).tolist() == [0, 1, 2, 3]
    assert np.allclose(acgt[0, :, 4], 0.25)
    agct = one_hot(tokens, "AGCT", n_value=0.0)
    # channel 1 is G, channel 2 is C
    assert agct[0, :, :4].argmax(axis=0).tolist() == [0, 2, 1, 3]
    assert np.allclose(agct[0, :, 4], 0.0)
    with pytest.raises(ValueError, match="permutation"):
        one_hot(tokens, "ACGU")


def test_genome_fetch_pads_and_bgzip(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "g.fa", {"chr1": "acgtACGTNN"}, bgzip=True)
    genome = Genome(path)
    assert genome.fetch("chr1", -3, 4) == b"NNNACGT"
    assert genome.fetch("chr1", 8, 13) == b"NNNNN"
    assert genome.fetch("chr1", 20, 22) == b"NN"
    assert genome.resolve("1") == "chr1"
    assert genome.resolve("chr2") is None
    with pytest.raises(FileNotFoundError, match="nope.fa"):
        Genome(tmp_path / "nope.fa")


def test_scores_match_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 1, (50, 7)).astype(np.float32)
    alt = rng.uniform(0, 1, (50, 7)).astype(np.float32)
    ref[0, 0], alt[0, 1] = 0.0, 1.0  # clipping
    s = compute_scores(ref, alt)
    eps = 1e-6
    expected_lfc = []
    for r_row, a_row in zip(ref.astype(float), alt.astype(float), strict=True):
        row = []
        for r, a in zip(r_row, a_row, strict=True):
            r, a = min(max(r, eps), 1 - eps), min(max(a, eps), 1 - eps)
            row.append(np.log2(a / (1 - a)) - np.log2(r / (1 - r)))
        expected_lfc.append(row)
    np.testing.assert_allclose(s.log2fc, np.array(expected_lfc), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(s.diff, alt - ref)
    for i in range(50):
        j = int(np.argmax(np.abs(alt[i] - ref[i])))
        assert s.max_index[i] == j
        assert s.max_abs_diff[i] == pytest.approx(abs(alt[i, j] - ref[i, j]))
