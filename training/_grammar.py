"""The motif grammar of the simulated chromatin features (see ``simulate`` for the table).

A *hit* is a window whose PWM score reaches its motif's threshold (p-value under a uniform
background: ``SINGLE_PVALUE`` for motifs that make a feature on their own, ``PARTNER_PVALUE`` for
motifs that only act in pairs). A feature's *sites* are the positions where its rule holds, computed
from the hits alone; the same function serves the genome-wide peak calls and the per-variant truth,
so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from varfx.training.motifs import Motif, MotifScanner

__all__ = [
    "FEATURES",
    "FeatureSpec",
    "Hits",
    "feature_sites",
    "motif_thresholds",
    "planting_floors",
    "scan_hits",
]

SINGLE_PVALUE = 1e-5
PARTNER_PVALUE = 1e-4


@dataclass(frozen=True)
class FeatureSpec:
    """One simulated chromatin feature.

    Attributes:
        name: feature name (also the peak file stem).
        kind: "single" | "pair" | "convergent" | "spacing" | "union".
        motifs: TF names (JASPAR spelling) the rule uses.
        min_dist, max_dist: allowed distance in bp between the two motif centres (pair rules).
        rule: the rule in words (written to features.tsv).
    """

    name: str
    kind: str
    motifs: tuple[str, ...]
    min_dist: int
    max_dist: int
    rule: str


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("CTCF", "single", ("CTCF",), 0, 0, "any CTCF (MA0139.2) hit"),
    FeatureSpec("SPI1", "single", ("Spi1",), 0, 0, "any SPI1 (MA0080.7) hit"),
    FeatureSpec("CEBPB", "single", ("CEBPB",), 0, 0, "any CEBPB (MA0466.4) hit"),
    FeatureSpec("AP1", "single", ("FOS::JUN",), 0, 0, "any FOS::JUN (MA0099.4) hit"),
    FeatureSpec("RFX1", "single", ("RFX1",), 0, 0, "any RFX1 (MA0509.3) hit"),
    FeatureSpec(
        "GATA1_TAL1",
        "pair",
        ("GATA1", "TAL1::TCF3"),
        0,
        30,
        "GATA1 (MA0035.4) and TAL1::TCF3 (MA0091.2) hits, centres <= 30 bp apart, any strands",
    ),
    FeatureSpec(
        "FOXA1_HNF4A",
        "pair",
        ("FOXA1", "HNF4A"),
        0,
        50,
        "FOXA1 (MA0148.5) and HNF4A (MA1494.2) hits, centres <= 50 bp apart, any strands",
    ),
    FeatureSpec(
        "CTCF_CONVERGENT",
        "convergent",
        ("CTCF",),
        30,
        150,
        "CTCF hit on + then CTCF hit on - downstream, centres 30-150 bp apart (convergent pair)",
    ),
    FeatureSpec(
        "EBOX_PAIR",
        "spacing",
        ("NEUROD1",),
        10,
        11,
        "two NEUROD1 (MA1109.2) hits whose centres are 10-11 bp apart (one helical turn)",
    ),
    FeatureSpec(
        "ACCESSIBLE",
        "union",
        (),
        0,
        0,
        "union of the sites of all other features (open chromatin)",
    ),
)

_PARTNER_MOTIFS = frozenset(
    m for f in FEATURES if f.kind in ("pair", "spacing") for m in f.motifs
) - frozenset(f.motifs[0] for f in FEATURES if f.kind == "single")


def motif_thresholds(motifs: tuple[Motif, ...]) -> np.ndarray:
    """float64 [n_motifs] hit thresholds in bits (by p-value, see module docstring)."""
    return np.array(
        [
            m.threshold(PARTNER_PVALUE if m.name in _PARTNER_MOTIFS else SINGLE_PVALUE)
            for m in motifs
        ]
    )


def planting_floors(motifs: tuple[Motif, ...], thresholds: np.ndarray, margin: float) -> np.ndarray:
    """float64 [n_motifs] minimum score of a planted instance: ``margin`` bits above the hit
    threshold, but at most half-way from the threshold to the consensus score (so that
    motifs whose threshold is close to their consensus still get varied instances)."""
    best = np.array([m.max_score for m in motifs])
    return thresholds + np.minimum(margin, 0.5 * (best - thresholds))


@dataclass(frozen=True)
class Hits:
    """Motif hits in one sequence (all arrays [n_hits], sorted by start).

    Attributes:
        motif: int64 index into the motif tuple.
        start: int64 0-based start of the window in the scanned sequence.
        strand: int8 +1 (motif read forward) or -1 (reverse complement).
        score: float32 log-odds score in bits.
        centre: int64 start + width // 2.
    """

    motif: np.ndarray
    start: np.ndarray
    strand: np.ndarray
    score: np.ndarray
    centre: np.ndarray


def scan_hits(tokens: np.ndarray, scanner: MotifScanner, thresholds: np.ndarray) -> Hits:
    """All hits of every motif of ``scanner`` on both strands of uint8 ``tokens``."""
    scores = scanner.scan(tokens)  # [2 * n_motifs, n]
    row_thr = np.repeat(np.asarray(thresholds, dtype=np.float32), 2)
    row, start = np.nonzero(scores >= row_thr[:, None])
    order = np.lexsort((row, start))
    row, start = row[order], start[order]
    motif = (row // 2).astype(np.int64)
    return Hits(
        motif,
        start.astype(np.int64),
        np.where(row % 2 == 0, 1, -1).astype(np.int8),
        scores[row, start],
        start.astype(np.int64) + scanner.widths[motif] // 2,
    )


def _pairs(a: np.ndarray, b: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with lo <= b[j] - a[i] <= hi; b must be sorted."""
    left = np.searchsorted(b, a + lo, side="left")
    right = np.searchsorted(b, a + hi, side="right")
    n = np.maximum(right - left, 0)
    i = np.repeat(np.arange(len(a)), n)
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    j = np.repeat(left, n) + offs
    return i, j


def feature_sites(hits: Hits, motifs: tuple[Motif, ...]) -> dict[str, np.ndarray]:
    """Sites of every feature: sorted unique int64 centre positions where its rule holds."""
    index = {m.name: i for i, m in enumerate(motifs)}
    out: dict[str, np.ndarray] = {}
    union: list[np.ndarray] = []
    for f in FEATURES:
        if f.kind == "union":
            continue
        if f.kind == "single":
            sites = np.unique(hits.centre[hits.motif == index[f.motifs[0]]])
        elif f.kind == "pair":
            a = np.unique(hits.centre[hits.motif == index[f.motifs[0]]])
            b = np.unique(hits.centre[hits.motif == index[f.motifs[1]]])
            i, j = _pairs(a, b, -f.max_dist, f.max_dist)
            sites = np.unique((a[i] + b[j]) // 2)
        elif f.kind == "convergent":
            sel = hits.motif == index[f.motifs[0]]
            plus = np.unique(hits.centre[sel & (hits.strand > 0)])
            minus = np.unique(hits.centre[sel & (hits.strand < 0)])
            i, j = _pairs(plus, minus, f.min_dist, f.max_dist)
            sites = np.unique((plus[i] + minus[j]) // 2)
        else:  # spacing: same motif, fixed centre distance, any strands
            c = np.unique(hits.centre[hits.motif == index[f.motifs[0]]])
            i, j = _pairs(c, c, f.min_dist, f.max_dist)
            sites = np.unique((c[i] + c[j]) // 2)
        out[f.name] = sites.astype(np.int64)
        union.append(out[f.name])
    out["ACCESSIBLE"] = np.unique(np.concatenate(union)) if union else np.zeros(0, np.int64)
    return out
