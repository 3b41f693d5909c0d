"""Motif calls ranked by sequence change and the model's importance (server/motifs.py): two
planted matches broken by one variant, the ISM importance decides which is called first; the
relative score is the fraction of the matrix's range."""

from __future__ import annotations

import numpy as np
import pytest

from varfx.server.motifs import MotifDatabase, call_motifs, motif_database
from varfx.training.motifs import Motif


@pytest.fixture(scope="module")
def db() -> MotifDatabase:
    return motif_database("shipped")


def _motif(db: MotifDatabase, name: str) -> Motif:
    return next(m for m in db.motifs if m.name == name)


def _two_sites(db: MotifDatabase) -> tuple[np.ndarray, np.ndarray, tuple[int, int], dict]:
    """A random sequence with CEBPB's then CTCF's consensus side by side, and an alt where a
    6-bp MNV over the junction sets each base to the matrix's worst; the spans of each site."""
    rng = np.random.default_rng(3)
    a, b = _motif(db, "CEBPB"), _motif(db, "CTCF")
    ref = rng.integers(0, 4, 120).astype(np.uint8)
    s1 = 40
    s2 = s1 + a.width
    ref[s1:s2] = a.consensus
    ref[s2 : s2 + b.width] = b.consensus
    alt = ref.copy()
    lo, hi = s2 - 3, s2 + 3
    for i in range(lo, hi):
        m, j = (a, i - s1) if i < s2 else (b, i - s2)
        alt[i] = int(m.log_odds[j].argmin())
    return ref, alt, (lo, hi), {"CEBPB": (s1, s2), "CTCF": (s2, s2 + b.width)}


def _importance_on(n: int, span: tuple[int, int]) -> np.ndarray:
    out = np.full(n, 0.01)
    out[span[0] : span[1]] = 1.0
    return out


def test_importance_decides_between_two_broken_sites(db: MotifDatabase) -> None:
    ref, alt, span, sites = _two_sites(db)
    plain = call_motifs(db, ref, alt, span, span, top=10)
    names = [c.name for c in plain]
    assert {"CEBPB", "CTCF"} <= set(names)  # both matches are lost
    assert all(c.model_importance == 1.0 for c in plain)  # no importance given
    for planted, other in (("CEBPB", "CTCF"), ("CTCF", "CEBPB")):
        imp = _importance_on(len(ref), sites[planted])
        calls = call_motifs(db, ref, alt, span, span, top=10, importance=(imp, imp.copy()))
        by_name = {c.name: c for c in calls}
        assert calls[0].name == planted
        assert by_name[planted].model_importance > 0.9
        assert by_name[other].model_importance < by_name[planted].model_importance
        keys = [c.relative_change * c.model_importance for c in calls]
        assert keys == sorted(keys, reverse=True)
        # the call's match is the planted site, read on the ref (the match was lost)
        assert by_name[planted].start == sites[planted][0]
        assert by_name[planted].ref_score > by_name[planted].alt_score


def test_relative_change_is_the_fraction_of_the_matrix_range(db: MotifDatabase) -> None:
    ref, alt, span, _ = _two_sites(db)
    for c in call_motifs(db, ref, alt, span, span, top=10):
        k = [m.id for m in db.motifs].index(c.jaspar_id)
        m = db.motifs[k]
        t = float(db.thresholds[k])
        low, high = m.log_odds.min(axis=1).sum(), m.log_odds.max(axis=1).sum()
        expect = abs(max(c.alt_score, t) - max(c.ref_score, t)) / (high - low)
        assert c.relative_change == pytest.approx(expect, abs=1e-5)
        assert 0 < c.relative_change <= 1


def test_zero_importance_falls_back_to_sequence_and_bad_lengths_are_refused(
    db: MotifDatabase,
) -> None:
    ref, alt, span, _ = _two_sites(db)
    plain = call_motifs(db, ref, alt, span, span, top=5)
    zero = call_motifs(db, ref, alt, span, span, top=5, importance=(np.zeros(120), np.zeros(120)))
    assert [c.jaspar_id for c in zero] == [c.jaspar_id for c in plain]
    unmeasured = np.full(120, np.nan)
    nan = call_motifs(db, ref, alt, span, span, top=5, importance=(unmeasured, unmeasured))
    assert [c.jaspar_id for c in nan] == [c.jaspar_id for c in plain]
    with pytest.raises(ValueError, match="importance of 119 and 120 bases"):
        call_motifs(db, ref, alt, span, span, top=5, importance=(np.ones(119), np.ones(120)))
