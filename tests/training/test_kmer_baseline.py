"""k-mer baseline: counts vs a brute-force count, and a fit that finds a planted motif."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from varfx.training.kmer_baseline import (
    KmerBaseline,
    kmer_counts,
    kmer_dimension,
    per_feature_metrics,
    select_kmer_baseline,
)

RC = str.maketrans("ACGT", "TGCA")


def _brute(seq: str, k: int, canonical: bool) -> dict[str, float]:
    kmers = [seq[i : i + k] for i in range(len(seq) - k + 1)]
    kmers = [m for m in kmers if "N" not in m]
    counts: dict[str, float] = {}
    for m in kmers:
        key = min(m, m.translate(RC)[::-1]) if canonical else m
        counts[key] = counts.get(key, 0) + 1
    return {m: c / len(kmers) for m, c in counts.items()} if kmers else {}


def _columns(k: int, canonical: bool) -> list[str]:
    all_kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    if not canonical:
        return all_kmers
    return sorted({min(m, m.translate(RC)[::-1]) for m in all_kmers})


@pytest.mark.parametrize("canonical", [True, False])
def test_counts_match_brute_force(canonical: bool) -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 4, (5, 40), dtype=np.uint8)
    tokens[1, 10:13] = 4  # an N run: k-mers touching it are not counted
    tokens[2, :] = 4  # all N -> zero row
    ks = (1, 2, 3)
    got = kmer_counts(tokens, ks, canonical)
    assert got.shape == (5, kmer_dimension(ks, canonical))
    for r in range(5):
        seq = "".join("ACGTN"[t] for t in tokens[r])
        off = 0
        for k in ks:
            cols = _columns(k, canonical)
            want = _brute(seq, k, canonical)
            row = got[r, off : off + len(cols)]
            np.testing.assert_allclose(row, [want.get(c, 0.0) for c in cols], atol=1e-6)
            off += len(cols)
    assert not got[2].any()


def test_dimension_of_canonical_6mers() -> None:
    assert kmer_dimension([6]) == 2080
    assert kmer_dimension([1, 2, 3, 4, 5, 6]) == 2 + 10 + 32 + 136 + 512 + 2080


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"\[n, L\]"):
        kmer_counts(np.zeros(10, dtype=np.uint8))
    with pytest.raises(ValueError, match="k=7"):
        kmer_counts(np.zeros((1, 5), dtype=np.uint8), ks=(7,))


def test_baseline_learns_planted_motif() -> None:
    rng = np.random.default_rng(0)
    n, length = 600, 120
    tokens = rng.integers(0, 4, (n, length), dtype=np.uint8)
    motif = np.array([2, 2, 0, 0, 3, 1], dtype=np.uint8)  # GGAATC
    labels = np.zeros((n, 2), dtype=np.uint8)
    labels[:, 0] = rng.random(n) < 0.5
    labels[:, 1] = rng.random(n) < 0.5  # noise feature
    for i in np.flatnonzero(labels[:, 0]):
        for p in rng.choice(length - 6, 3, replace=False):
            tokens[i, p : p + 6] = motif
    model = KmerBaseline(ks=(4, 5, 6), C=0.1).fit(tokens[:400], labels[:400])
    probs = model.predict_proba(tokens[400:])
    assert probs.shape == (200, 2)
    m = per_feature_metrics(labels[400:], probs, ["motif", "noise"])
    assert m[0].auroc > 0.95
    assert 0.3 < m[1].auroc < 0.7


def test_select_kmer_baseline_scores_every_pair_on_validation_only() -> None:
    rng = np.random.default_rng(1)
    n, length = 500, 100
    tokens = rng.integers(0, 4, (n, length), dtype=np.uint8)
    labels = (rng.random((n, 1)) < 0.5).astype(np.uint8)
    for i in np.flatnonzero(labels[:, 0]):
        p = rng.integers(0, length - 6)
        tokens[i, p : p + 6] = [2, 2, 0, 0, 3, 1]
    proto = KmerBaseline(ks=(3, 4))
    x = proto.features(tokens)
    fit, val = np.arange(300), np.arange(300, n)
    subsets = [np.arange(100), np.arange(300)]
    best, scores = select_kmer_baseline(x[fit], labels[fit], subsets, x[val], labels[val],
                                        (1e-4, 1.0), (3, 4))  # fmt: skip
    assert [(s["fit_windows"], s["C"]) for s in scores] == [(100, 1e-4), (100, 1.0),
                                                              (300, 1e-4), (300, 1.0)]  # fmt: skip
    top = max(scores, key=lambda s: s["valid_mean_auroc"])
    assert top["C"] == best.C
    m = per_feature_metrics(labels[val], best.predict_counts(x[val]), ["motif"])
    assert m[0].auroc == pytest.approx(top["valid_mean_auroc"])
    with pytest.raises(ValueError, match="single class"):
        select_kmer_baseline(x[fit], labels[fit], subsets, x[val], np.zeros_like(labels[val]),
                             (1.0,), (3, 4))  # fmt: skip
