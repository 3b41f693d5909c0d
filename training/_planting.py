"""Planting motif loci into the simulated background (the register of planted sites).

A *locus* is one or two motif instances around a centre. Locus kinds that satisfy a feature's
rule are named after the feature; decoy kinds (``decoy_*``) hold the same motifs in an arrangement
that breaks the rule (lone partner motif, too far apart, wrong orientation or spacing), so a model
has to learn the grammar rather than motif presence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from varfx.core.tokens import reverse_complement
from varfx.training.motifs import Motif

__all__ = ["LOCUS_KINDS", "PlantedSite", "plant_chromosome"]

# (motif name, strand, centre offset from the locus centre)
Instance = tuple[str, int, int]


def _strand(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def _single(name: str) -> Callable[[np.random.Generator], list[Instance]]:
    def build(rng: np.random.Generator) -> list[Instance]:
        return [(name, _strand(rng), 0)]

    return build


def _pair(a: str, b: str, lo: int, hi: int) -> Callable[[np.random.Generator], list[Instance]]:
    def build(rng: np.random.Generator) -> list[Instance]:
        d = int(rng.integers(lo, hi + 1))
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        return [(first, _strand(rng), -(d // 2)), (second, _strand(rng), d - d // 2)]

    return build


def _ctcf_pair(strands: tuple[tuple[int, int], ...]) -> Callable[..., list[Instance]]:
    def build(rng: np.random.Generator) -> list[Instance]:
        d = int(rng.integers(30, 151))
        s1, s2 = strands[int(rng.integers(0, len(strands)))]
        return [("CTCF", s1, -(d // 2)), ("CTCF", s2, d - d // 2)]

    return build


# kind -> (builder, is_decoy)
LOCUS_KINDS: dict[str, tuple[Callable[[np.random.Generator], list[Instance]], bool]] = {
    "CTCF": (_single("CTCF"), False),
    "SPI1": (_single("Spi1"), False),
    "CEBPB": (_single("CEBPB"), False),
    "AP1": (_single("FOS::JUN"), False),
    "RFX1": (_single("RFX1"), False),
    "GATA1_TAL1": (_pair("GATA1", "TAL1::TCF3", 12, 30), False),
    "FOXA1_HNF4A": (_pair("FOXA1", "HNF4A", 15, 50), False),
    "CTCF_CONVERGENT": (_ctcf_pair(((1, -1),)), False),
    "EBOX_PAIR": (_pair("NEUROD1", "NEUROD1", 10, 11), False),
    "decoy_GATA1": (_single("GATA1"), True),
    "decoy_TAL1": (_single("TAL1::TCF3"), True),
    "decoy_FOXA1": (_single("FOXA1"), True),
    "decoy_HNF4A": (_single("HNF4A"), True),
    "decoy_NEUROD1": (_single("NEUROD1"), True),
    "decoy_GATA1_TAL1_far": (_pair("GATA1", "TAL1::TCF3", 60, 200), True),
    "decoy_FOXA1_HNF4A_far": (_pair("FOXA1", "HNF4A", 80, 250), True),
    "decoy_CTCF_not_convergent": (_ctcf_pair(((1, 1), (-1, -1), (-1, 1))), True),
    "decoy_EBOX_spaced": (_pair("NEUROD1", "NEUROD1", 15, 40), True),
}

_LOCUS_HALF_SPAN = 150  # no locus reaches further than this from its centre


@dataclass(frozen=True)
class PlantedSite:
    """One planted motif instance (a row of ``sites.tsv``).

    Attributes:
        chrom: chromosome name.
        start: 0-based start; end = start + motif width.
        strand: +1 or -1.
        motif: index into the motif tuple.
        score: PWM score in bits of the planted instance (on its strand).
        locus: locus id (``L000001``), shared by the instances of one locus.
        kind: locus kind (a key of ``LOCUS_KINDS``).
    """

    chrom: str
    start: int
    end: int
    strand: int
    motif: int
    score: float
    locus: str
    kind: str


def plant_chromosome(
    rng: np.random.Generator,
    chrom: str,
    tokens: np.ndarray,
    counts: dict[str, int],
    motifs: tuple[Motif, ...],
    min_scores: np.ndarray,
    first_locus: int,
) -> list[PlantedSite]:
    """Plant ``counts[kind]`` loci of each kind into ``tokens`` (uint8, modified in place).

    Loci go into distinct slots of equal size spread over the chromosome, each away from N.
    Raises ValueError when the chromosome has too few free slots for the requested loci.
    """
    n_loci = sum(counts.values())
    out: list[PlantedSite] = []
    if n_loci == 0:
        return out
    slot = max(2 * _LOCUS_HALF_SPAN + 100, len(tokens) // (n_loci * 2))
    n_slots = len(tokens) // slot
    starts = np.arange(n_slots) * slot
    is_n = np.concatenate([[0], np.cumsum(tokens == 4)])
    free = (is_n[starts + slot] - is_n[starts]) == 0
    free_slots = starts[free]
    if len(free_slots) < n_loci:
        raise ValueError(
            f"{chrom}: {n_loci} loci requested but only {len(free_slots)} free slots of {slot} bp; "
            "lower the locus densities or use longer chromosomes"
        )
    chosen = np.sort(rng.choice(free_slots, size=n_loci, replace=False))
    kinds = [k for k in LOCUS_KINDS for _ in range(counts.get(k, 0))]
    order = rng.permutation(len(kinds))
    index = {m.name: i for i, m in enumerate(motifs)}
    jitter = slot // 2 - _LOCUS_HALF_SPAN - 20
    layouts = [LOCUS_KINDS[kinds[ki]][0](rng) for ki in order.tolist()]
    need = np.zeros(len(motifs), dtype=np.int64)
    for layout in layouts:
        for name, _, _ in layout:
            need[index[name]] += 1
    pools = [
        m.sample(rng, int(k), float(min_scores[i]))
        for i, (m, k) in enumerate(zip(motifs, need, strict=True))
    ]
    scores = [m.score_windows(pool) for m, pool in zip(motifs, pools, strict=True)]
    used = np.zeros(len(motifs), dtype=np.int64)
    for n, (slot_start, ki, layout) in enumerate(
        zip(chosen.tolist(), order.tolist(), layouts, strict=True)
    ):
        kind = kinds[ki]
        centre = slot_start + slot // 2 + int(rng.integers(-jitter, jitter + 1))
        locus = f"L{first_locus + n:06d}"
        for name, strand, offset in layout:
            mi = index[name]
            m = motifs[mi]
            inst, score = pools[mi][used[mi]], float(scores[mi][used[mi]])
            used[mi] += 1
            start = centre + offset - m.width // 2
            tokens[start : start + m.width] = inst if strand > 0 else reverse_complement(inst)
            out.append(PlantedSite(chrom, start, start + m.width, strand, mi, score, locus, kind))
    return out
