"""JASPAR motifs shipped for the simulator, PWM scanning, thresholds and sampling."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from varfx.core.tokens import decode, reverse_complement
from varfx.core.tokens import encode as encode_tokens
from varfx.training.motifs import MotifScanner, load_motifs


def encode(seq: str) -> np.ndarray:
    return encode_tokens(seq, strict=False)


MOTIFS = load_motifs()


def by_name(name: str):
    return next(m for m in MOTIFS if m.name == name)


def test_shipped_matrices_have_jaspar_ids_and_are_pfms() -> None:
    assert len(MOTIFS) >= 10
    names = {m.name for m in MOTIFS}
    assert {"CTCF", "Spi1", "CEBPB", "FOS::JUN", "GATA1", "FOXA1", "HNF4A"} <= names
    for m in MOTIFS:
        assert re.fullmatch(r"MA\d{4}\.\d+", m.id), m.id
        assert m.counts.ndim == 2
        assert m.counts.shape[1] == 4
        assert m.width >= 6
        assert (m.counts >= 0).all(), m.id
        assert (m.counts.sum(axis=1) > 0).all(), m.id
        assert np.allclose(m.probs.sum(axis=1), 1.0)
        assert (m.information > 0).all()
        assert m.information.max() <= 2.0


def test_ctcf_consensus_is_the_known_core() -> None:
    ctcf = by_name("CTCF")
    cons = decode(ctcf.consensus)
    # CTCF core CCGCGNGGNGGCAG, or its reverse complement CTGCCNCCNCGCGG
    rc = decode(reverse_complement(ctcf.consensus))
    assert re.search(r"CCA.{1,2}AGG.GG", cons) or re.search(r"CC.CCT.{1,2}TGG", rc), cons


def test_shipped_matrices_equal_pyjaspar() -> None:
    pyjaspar = pytest.importorskip("pyjaspar")
    db = pyjaspar.jaspardb(release="JASPAR2024")
    for m in MOTIFS:
        ref = db.fetch_motif_by_id(m.id)
        assert ref.name == m.name
        counts = np.array([[ref.counts[b][i] for b in "ACGT"] for i in range(ref.length)])
        np.testing.assert_allclose(m.counts, counts)


def test_encode_decode_reverse_complement() -> None:
    t = encode("ACGTNacgtx")
    assert t.dtype == np.uint8
    assert t.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert decode(t) == "ACGTNACGTN"
    assert decode(reverse_complement(encode("AACGTN"))) == "NACGTT"


def test_scan_matches_window_scores_on_both_strands() -> None:
    rng = np.random.default_rng(3)
    seq = rng.integers(0, 4, size=500).astype(np.uint8)
    seq[100] = 4
    for m in MOTIFS:
        fwd, rev = m.scan(seq)
        win = np.lib.stride_tricks.sliding_window_view(seq, m.width)
        np.testing.assert_allclose(fwd, m.score_windows(win), rtol=1e-5, atol=1e-3)
        # the minus strand of window i is the forward score of its reverse complement
        rc_win = np.where(win < 4, 3 - win, 4)[:, ::-1]
        np.testing.assert_allclose(rev, m.score_windows(rc_win), rtol=1e-5, atol=1e-3)
        assert (fwd[max(0, 101 - m.width) : 101] < -1000).all()


def test_scanner_equals_per_motif_scan_in_chunks() -> None:
    rng = np.random.default_rng(4)
    seq = rng.integers(0, 5, size=3000).astype(np.uint8)
    scores = MotifScanner(MOTIFS, chunk=700).scan(seq)
    assert scores.shape == (2 * len(MOTIFS), len(seq))
    for k, m in enumerate(MOTIFS):
        fwd, rev = m.scan(seq)
        n = len(fwd)
        np.testing.assert_allclose(scores[2 * k, :n], fwd, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(scores[2 * k + 1, :n], rev, rtol=1e-5, atol=1e-3)
        assert (scores[2 * k : 2 * k + 2, n:] < -1000).all()  # windows running off the end


@pytest.mark.parametrize("name", ["CTCF", "FOXA1"])
def test_threshold_pvalue_holds_on_random_sequence(name: str) -> None:
    m = by_name(name)
    thr = m.threshold(1e-3)
    assert thr < m.max_score
    rng = np.random.default_rng(5)
    win = rng.integers(0, 4, size=(200_000, m.width)).astype(np.uint8)
    frac = float((m.score_windows(win) >= thr).mean())
    assert 0.3e-3 < frac <= 1.3e-3, frac
    assert m.threshold(1e-30) <= m.max_score + 1e-9


def test_sampled_instances_score_above_the_floor() -> None:
    rng = np.random.default_rng(6)
    for m in MOTIFS:
        floor = m.threshold(1e-4) + 1.0
        inst = m.sample(rng, 50, floor)
        assert inst.shape == (50, m.width)
        assert inst.dtype == np.uint8
        assert (m.score_windows(inst) >= min(floor, m.max_score - 1e-6)).all()
        assert m.score_windows(m.consensus[None, :])[0] == pytest.approx(m.max_score)
    # a floor above the consensus score is capped there: only consensus instances come back
    short = by_name("FOXA1")
    inst = short.sample(rng, 5, short.max_score + 3.0)
    assert (inst == short.consensus[None, :]).all()


def test_simulator_imports_neither_torch_nor_pyjaspar() -> None:
    code = (
        "import sys, varfx.training.simulate, varfx.training._simulate_cli;"
        "bad = [m for m in ('torch', 'pyjaspar', 'onnx') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
