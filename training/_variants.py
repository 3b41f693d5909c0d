"""Simulated variants and their ground truth.

Three designs: *break* (a planted motif instance loses a high-information base: SNV to the least
likely base, MNV, deletion or insertion there), *create* (a near-miss motif window far from every
site becomes a hit through one substitution to the consensus base) and *neutral* (random positions
far from all sites and hits; SNV, MNV, insertions, deletions, multi-allelic records).

The truth of every ALT is computed, never assumed: the grammar (``_grammar.feature_sites``) is
evaluated on the reference and on the alternate local sequence (+-``FLANK`` bp), and a feature's
direction is the sign of the change in the number of its sites within +-``RADIUS`` bp of the variant.
A design is kept only when its truth matches its intent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from varfx.core.tokens import decode
from varfx.training._grammar import FEATURES, Hits, feature_sites, scan_hits
from varfx.training._planting import PlantedSite
from varfx.training.motifs import Motif, MotifScanner

__all__ = ["AltTruth", "ChromData", "VariantRecord", "design_variants", "variant_truth"]

FLANK = 300
RADIUS = 100
_NEUTRAL_SITE_DISTANCE = 400
_NEUTRAL_HIT_DISTANCE = 40
_CREATE_DISTANCE = 500
_SINGLE_MOTIFS = tuple(f.motifs[0] for f in FEATURES if f.kind == "single")


@dataclass
class ChromData:
    """One simulated chromosome: uint8 tokens [length], motif hits, feature sites, planted sites."""

    name: str
    tokens: np.ndarray
    hits: Hits
    sites: dict[str, np.ndarray]
    planted: list[PlantedSite]
    occupied: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.occupied = self.tokens == 4


@dataclass(frozen=True)
class AltTruth:
    """Truth for one ALT allele.

    Attributes:
        alt: the ALT allele string.
        vtype: SNV | MNV | INS | DEL | COMPLEX (see ``_vtype``).
        cls: break | create | neutral (from the computed directions).
        motif: TF name whose instance is broken / created ("." for neutral).
        motif_id: JASPAR ID of that motif (".").
        directions: int8 [n_features] in FEATURES order, -1 / 0 / +1.
        ref_score, alt_score: best PWM score (bits) of ``motif`` within +-3 bp of the instance
            start, before and after the variant (NaN for neutral).
    """

    alt: str
    vtype: str
    cls: str
    motif: str
    motif_id: str
    directions: np.ndarray
    ref_score: float
    alt_score: float


@dataclass(frozen=True)
class VariantRecord:
    """One VCF record: 1-based ``pos``, REF, one AltTruth per ALT."""

    chrom: str
    chrom_index: int
    pos: int
    ref: str
    alts: tuple[AltTruth, ...]


class _Ctx:
    def __init__(
        self, motifs: tuple[Motif, ...], thresholds: np.ndarray, rng: np.random.Generator
    ) -> None:
        self.motifs = motifs
        self.scanner = MotifScanner(motifs)
        self.thresholds = thresholds
        self.rng = rng


def _counts(
    seq: np.ndarray, scanner: MotifScanner, thresholds: np.ndarray, focus: int
) -> np.ndarray:
    sites = feature_sites(scan_hits(seq, scanner, thresholds), scanner.motifs)
    return np.array([int((np.abs(sites[f.name] - focus) <= RADIUS).sum()) for f in FEATURES])


def _local(
    tokens: np.ndarray, p0: int, ref_len: int, alt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """(reference, alternate) uint8 local sequences +-FLANK around REF, and their 0-based start."""
    lo = max(0, p0 - FLANK)
    hi = min(len(tokens), p0 + ref_len + FLANK)
    ref_seq = tokens[lo:hi]
    alt_seq = np.concatenate([tokens[lo:p0], alt, tokens[p0 + ref_len : hi]]).astype(np.uint8)
    return ref_seq, alt_seq, lo


def variant_truth(
    tokens: np.ndarray,
    p0: int,
    ref_len: int,
    alt: np.ndarray,
    scanner: MotifScanner,
    thresholds: np.ndarray,
    ref_counts: np.ndarray | None = None,
) -> np.ndarray:
    """int8 [n_features] directions of one ALT (see module docstring).

    Args:
        tokens: uint8 chromosome tokens.
        p0: 0-based start of REF; ref_len: REF length; alt: uint8 ALT tokens.
        ref_counts: int [n_features] site counts within +-RADIUS of p0 on the reference, when
            already known from the genome-wide scan (they equal the local ones: FLANK covers
            every hit that a site within RADIUS can use).
    """
    ref_seq, alt_seq, lo = _local(tokens, p0, ref_len, alt)
    focus = p0 - lo
    if ref_counts is None:
        ref_counts = _counts(ref_seq, scanner, thresholds, focus)
    diff = _counts(alt_seq, scanner, thresholds, focus) - ref_counts
    return np.sign(diff).astype(np.int8)


def _genome_counts(cd: ChromData, p0: int) -> np.ndarray:
    out = []
    for f in FEATURES:
        s = cd.sites[f.name]
        out.append(
            int(np.searchsorted(s, p0 + RADIUS, "right") - np.searchsorted(s, p0 - RADIUS, "left"))
        )
    return np.array(out)


def _best_score(m: Motif, seq: np.ndarray, lo: int, hi: int) -> float:
    fwd, rev = m.scan(seq)
    lo, hi = max(0, lo), min(len(fwd), hi + 1)
    if hi <= lo:
        return float("nan")
    return float(max(fwd[lo:hi].max(), rev[lo:hi].max()))


def _classify(d: np.ndarray) -> str:
    neg, pos = bool((d < 0).any()), bool((d > 0).any())
    if neg and not pos:
        return "break"
    if pos and not neg:
        return "create"
    return "neutral" if not (neg or pos) else "mixed"


def _vtype(ref: np.ndarray, alt: np.ndarray) -> str:
    """SNV / MNV (same length), INS (ALT extends REF), DEL (REF extends ALT), else COMPLEX."""
    if len(ref) == len(alt):
        return "SNV" if len(ref) == 1 else "MNV"
    if len(alt) > len(ref) and (alt[: len(ref)] == ref).all():
        return "INS"
    if len(ref) > len(alt) and (ref[: len(alt)] == alt).all():
        return "DEL"
    return "COMPLEX"


def _evaluate(
    cd: ChromData,
    ci: int,
    ctx: _Ctx,
    p0: int,
    ref: np.ndarray,
    alts: list[np.ndarray],
    motif: int | None,
    inst_start: int,
) -> VariantRecord | None:
    """Truth for every ALT; None when a REF/ALT is invalid or an ALT is 'mixed'."""
    if p0 < 0 or p0 + len(ref) > len(cd.tokens) or (ref == 4).any():
        return None
    if cd.occupied[max(0, p0 - 10) : p0 + len(ref) + 10].any():
        return None
    truths = []
    ref_counts = _genome_counts(cd, p0)
    for alt in alts:
        if len(alt) == len(ref) and (alt == ref).any():
            return None
        d = variant_truth(cd.tokens, p0, len(ref), alt, ctx.scanner, ctx.thresholds, ref_counts)
        cls = _classify(d)
        if cls == "mixed":
            return None
        name, mid, rs, as_ = ".", ".", float("nan"), float("nan")
        if motif is not None and cls != "neutral":
            m = ctx.motifs[motif]
            ref_seq, alt_seq, lo = _local(cd.tokens, p0, len(ref), alt)
            s = inst_start - lo
            name, mid = m.name, m.id
            rs, as_ = _best_score(m, ref_seq, s - 3, s + 3), _best_score(m, alt_seq, s - 3, s + 3)
        truths.append(AltTruth(decode(alt), _vtype(ref, alt), cls, name, mid, d, rs, as_))
    cd.occupied[max(0, p0 - 10) : p0 + len(ref) + 10] = True
    return VariantRecord(cd.name, ci, p0 + 1, decode(ref), tuple(truths))


def _other_base(rng: np.random.Generator, base: int) -> int:
    return int((base + rng.integers(1, 4)) % 4)


def _break_designs(
    rng: np.random.Generator, t: np.ndarray, site: PlantedSite, m: Motif, multi: float
) -> list[tuple[int, np.ndarray, list[np.ndarray]]]:
    """Candidate (p0, REF, ALTs) that break ``site``, preferred first, SNV fallback last."""
    top = np.argsort(-m.information, kind="stable")[:3]
    j = int(top[rng.integers(0, len(top))])
    g = site.start + j if site.strand > 0 else site.start + m.width - 1 - j
    order = np.argsort(m.probs[j], kind="stable")
    least, second = (int(b) if site.strand > 0 else 3 - int(b) for b in order[:2])
    if least == t[g]:
        least, second = second, int(order[2]) if site.strand > 0 else 3 - int(order[2])
    snv_alts = [np.array([least], np.uint8)]
    if rng.random() < multi and second != t[g]:
        snv_alts.append(np.array([second], np.uint8))
    snv = (g, t[g : g + 1].copy(), snv_alts)
    r = rng.random()
    k = int(rng.integers(1, 4))
    if r < 0.65:
        return [snv]
    if r < 0.8:
        mnv_alt = np.array([least, _other_base(rng, int(t[g + 1]))], np.uint8)
        return [(g, t[g : g + 2].copy(), [mnv_alt]), snv]
    if r < 0.9:
        return [(g - 1, t[g - 1 : g + k].copy(), [t[g - 1 : g].copy()]), snv]
    ins = np.concatenate([t[g : g + 1], rng.integers(0, 4, size=k).astype(np.uint8)])
    return [(g, t[g : g + 1].copy(), [ins]), snv]


def _create_pool(cds: list[ChromData], ctx: _Ctx) -> list[tuple[int, int, int, int, int]]:
    """Near-miss windows: (chrom index, motif index, window start, genome pos, new base)."""
    pool: list[tuple[int, int, int, int, int]] = []
    index = {m.name: i for i, m in enumerate(ctx.motifs)}
    for ci, cd in enumerate(cds):
        busy = np.sort(
            np.concatenate([cd.sites["ACCESSIBLE"], np.array([s.start for s in cd.planted])])
        ).astype(np.int64)
        for name in _SINGLE_MOTIFS:
            mi = index[name]
            m, thr = ctx.motifs[mi], float(ctx.thresholds[mi])
            lo = m.log_odds
            best = lo.max(axis=1)
            for strand, sc in zip((1, -1), m.scan(cd.tokens), strict=True):
                cand = np.nonzero((sc < thr) & (sc >= thr - 8.0))[0]
                if len(busy):
                    k = np.searchsorted(busy, cand).clip(1, len(busy) - 1)
                    dist = np.minimum(np.abs(busy[k] - cand), np.abs(busy[k - 1] - cand))
                    cand = cand[dist >= _CREATE_DISTANCE]
                win = cd.tokens[cand[:, None] + np.arange(m.width)[None, :]]
                if strand < 0:
                    win = 3 - win[:, ::-1]
                gain = best[None, :] - lo[np.arange(m.width)[None, :], win]
                j = gain.argmax(axis=1)
                ok = np.nonzero(sc[cand] + gain[np.arange(len(cand)), j] >= thr + 1.0)[0]
                if len(ok) > 400:
                    ok = np.sort(ctx.rng.choice(ok, size=400, replace=False))
                for c, jj in zip(cand[ok].tolist(), j[ok].tolist(), strict=True):
                    b = int(lo[jj].argmax())
                    g = int(c) + int(jj) if strand > 0 else int(c) + m.width - 1 - int(jj)
                    pool.append((ci, mi, int(c), g, b if strand > 0 else 3 - b))
    return pool


def _neutral_design(
    rng: np.random.Generator, t: np.ndarray, g: int, multi: float
) -> tuple[int, np.ndarray, list[np.ndarray]]:
    r = rng.random()
    k = int(rng.integers(1, 11))
    if r < multi:  # multi-allelic: two SNV alleles, or a deletion and an insertion
        if rng.random() < 0.6:
            a = _other_base(rng, int(t[g]))
            b = (a + 1) % 4 if (a + 1) % 4 != t[g] else (a + 2) % 4
            return g, t[g : g + 1].copy(), [np.array([a], np.uint8), np.array([b], np.uint8)]
        ref = t[g : g + 1 + k].copy()
        ins = np.concatenate([ref, rng.integers(0, 4, size=2).astype(np.uint8)])
        return g, ref, [ref[:1].copy(), ins]
    if r < multi + 0.6:
        return g, t[g : g + 1].copy(), [np.array([_other_base(rng, int(t[g]))], np.uint8)]
    if r < multi + 0.68:
        n = int(rng.integers(2, 4))
        alt = np.array([_other_base(rng, int(b)) for b in t[g : g + n]], np.uint8)
        return g, t[g : g + n].copy(), [alt]
    if r < multi + 0.84:
        return g, t[g : g + 1 + k].copy(), [t[g : g + 1].copy()]
    ins = np.concatenate([t[g : g + 1], rng.integers(0, 4, size=k).astype(np.uint8)])
    return g, t[g : g + 1].copy(), [ins]


def design_variants(
    rng: np.random.Generator,
    cds: list[ChromData],
    motifs: tuple[Motif, ...],
    thresholds: np.ndarray,
    n_break: int,
    n_create: int,
    n_neutral: int,
    multiallelic_fraction: float,
) -> list[VariantRecord]:
    """Design and verify variants; returns records sorted by (chromosome order, position).

    Fewer break/create records than asked come back only when the genome has too few planted
    sites or near-miss windows (logged by the caller through the returned counts).
    """
    ctx = _Ctx(motifs, thresholds, rng)
    records: list[VariantRecord] = []
    planted = [
        (ci, s) for ci, cd in enumerate(cds) for s in cd.planted if not s.kind.startswith("decoy")
    ]
    made = 0
    for pi in rng.permutation(len(planted)).tolist():  # loop per candidate variant
        if made >= n_break:
            break
        ci, site = planted[pi]
        cd = cds[ci]
        for p0, ref, alts in _break_designs(
            rng, cd.tokens, site, motifs[site.motif], 2 * multiallelic_fraction
        ):
            rec = _evaluate(cd, ci, ctx, p0, ref, alts, site.motif, site.start)
            if rec is not None and rec.alts[0].cls == "break":
                records.append(rec)
                made += 1
                break
            if rec is not None:  # kept by _evaluate but not a break: release and retry
                _release(cd, p0, len(ref))
    pool = _create_pool(cds, ctx)
    made = 0
    for qi in _round_robin(rng, [p[1] for p in pool]):
        if made >= n_create:
            break
        ci, mi, start, g, base = pool[qi]
        cd = cds[ci]
        alts = [np.array([base], np.uint8)]
        if rng.random() < multiallelic_fraction:
            rest = [b for b in range(4) if b not in (base, int(cd.tokens[g]))]
            alts.append(np.array([rest[int(rng.integers(0, len(rest)))]], np.uint8))
        rec = _evaluate(cd, ci, ctx, g, cd.tokens[g : g + 1].copy(), alts, mi, start)
        if rec is not None and rec.alts[0].cls == "create":
            records.append(rec)
            made += 1
        elif rec is not None:
            _release(cd, g, 1)
    made = 0
    lengths = np.array([len(cd.tokens) for cd in cds], dtype=np.float64)
    tries = 0
    while made < n_neutral and tries < 50 * (n_neutral + 10):
        tries += 1
        ci = int(rng.choice(len(cds), p=lengths / lengths.sum()))
        cd = cds[ci]
        g = int(rng.integers(FLANK, len(cd.tokens) - FLANK - 20))
        acc = cd.sites["ACCESSIBLE"]
        if len(acc) and np.abs(acc - g).min() < _NEUTRAL_SITE_DISTANCE:
            continue
        if len(cd.hits.centre) and np.abs(cd.hits.centre - g).min() < _NEUTRAL_HIT_DISTANCE:
            continue
        p0, ref, alts = _neutral_design(rng, cd.tokens, g, multiallelic_fraction)
        rec = _evaluate(cd, ci, ctx, p0, ref, alts, None, p0)
        if rec is not None and all(a.cls == "neutral" for a in rec.alts):
            records.append(rec)
            made += 1
        elif rec is not None:
            _release(cd, p0, len(ref))
    records.sort(key=lambda r: (r.chrom_index, r.pos))
    return records


def _round_robin(rng: np.random.Generator, groups: list[int]) -> list[int]:
    """Indices of ``groups`` shuffled within each group, then taken one group at a time in
    turn, so that every motif gets about the same number of created sites."""
    g = np.asarray(groups, dtype=np.int64)
    perm = rng.permutation(len(g))
    g = g[perm]
    order = np.argsort(g, kind="stable")
    rank = np.empty(len(g), dtype=np.int64)  # position of each item within its group
    sorted_g = g[order]
    starts = np.searchsorted(sorted_g, sorted_g, side="left")
    rank[order] = np.arange(len(g)) - starts
    return perm[np.lexsort((g, rank))].tolist()


def _release(cd: ChromData, p0: int, ref_len: int) -> None:
    lo, hi = max(0, p0 - 10), p0 + ref_len + 10
    cd.occupied[lo:hi] = cd.tokens[lo:hi] == 4
