"""``varfx simulate``: a genome with real TF motifs planted at known loci, peaks, variants, truth.

Genome
    ``chr1..chrN``; background from a 5th-order Markov chain estimated from GRCh38
    chr1:1-1,000,000 (``data/background_markov5.json``): ~41% GC, CpG observed/expected ~0.3.
    Low-complexity repeats (micro-satellites, poly-A), N at both contig ends and one internal gap.

Motifs
    Ten real JASPAR2024 CORE matrices (``data/jaspar_motifs.json``, IDs in the table). A *hit* is
    a window whose log-odds score (bits, uniform background, pseudocount 0.8) reaches the motif's
    threshold: p <= 1e-5 for motifs that make a feature alone, p <= 1e-4 for partner motifs
    (GATA1, TAL1::TCF3, FOXA1, HNF4A, NEUROD1). Planted instances are sampled from the matrix and
    kept only when they score >= threshold + ``score_margin`` bits (at most half-way to the
    consensus score).

Features (``features.tsv``; rules in ``_grammar.FEATURES``). A feature holds at a *site*:

=================  ==========  ============================================================
feature            kind        rule (site = motif centre, or midpoint of the pair)
=================  ==========  ============================================================
CTCF               single      any CTCF (MA0139.2) hit
SPI1               single      any SPI1 / PU.1 (MA0080.7) hit
CEBPB              single      any CEBPB (MA0466.4) hit
AP1                single      any FOS::JUN (MA0099.4) hit
RFX1               single      any RFX1 (MA0509.3) hit
GATA1_TAL1         co-binding  GATA1 (MA0035.4) + TAL1::TCF3 (MA0091.2) hits, centres <= 30 bp
FOXA1_HNF4A        co-binding  FOXA1 (MA0148.5) + HNF4A (MA1494.2) hits, centres <= 50 bp
CTCF_CONVERGENT    orientation CTCF on + then CTCF on - downstream, centres 30-150 bp apart
EBOX_PAIR          spacing     two NEUROD1 (MA1109.2) hits with centres 10-11 bp apart
ACCESSIBLE         union       any site of the nine features above
=================  ==========  ============================================================

The rule is evaluated on a genome-wide scan after planting, so sites include chance matches in
the background (``grammar_sites.tsv`` tells planted from chance). Decoy loci plant the same motifs
where the rule fails (lone partner, too far apart, tandem/divergent CTCF, E-boxes 15-40 bp apart).

Outputs in ``--out``: ``genome.fa`` + ``.fai`` + ``.varfx-genome.json`` (declares assembly
``varfx-sim-seed<seed>`` of family ``varfx-sim``, so models trained on any simulated genome
are served on this one: ``varfx.core.fasta_identity``); ``peaks/<feature>.narrowPeak`` (peaks of 200-400
bp around site clusters, ~3% of clusters missed, ~3% random noise peaks named
``<feature>.noise.<k>``); ``features.tsv``; ``sites.tsv`` (register of planted instances);
``grammar_sites.tsv``; ``summary.json`` (seed, config, counts, motif thresholds, feature rules);
``variants.vcf.gz`` + ``.tbi``; ``truth.tsv`` with one row per variant and
ALT: chrom, pos, id, ref, alt, class (break|create|neutral), motif, affected_features, direction
(``FEATURE:+1`` / ``FEATURE:-1``, "." when none), vtype, motif_id, ref_score, alt_score. A
direction is the sign of the change in the number of sites of that feature within +-100 bp of
the variant (alt versus ref sequence, grammar re-evaluated); class follows the directions.
Same seed -> byte-identical files. Needs numpy and pysam only.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varfx.core.fasta_identity import write_declaration
from varfx.core.genomes import SIM_FAMILY
from varfx.training import _simulate_io as io
from varfx.training._background import add_gaps, add_repeats, markov_sequence
from varfx.training._grammar import (
    FEATURES,
    feature_sites,
    motif_thresholds,
    planting_floors,
    scan_hits,
)
from varfx.training._peaks import Peak, call_peaks
from varfx.training._planting import LOCUS_KINDS, PlantedSite, plant_chromosome
from varfx.training._variants import ChromData, design_variants
from varfx.training.motifs import MotifScanner, load_motifs

__all__ = [
    "FEATURE_NAMES",
    "SIZES",
    "SimulationConfig",
    "SimulationError",
    "SimulationPaths",
    "SimulationResult",
    "simulate",
]

log = logging.getLogger(__name__)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


class SimulationError(ValueError):
    """A simulation setting is invalid (the message names the value)."""


@dataclass(frozen=True)
class SimulationConfig:
    """Typed settings of one simulation (all lengths in bp, densities per Mb of non-N sequence).

    Attributes:
        n_chroms, chrom_length: genome shape (chr1..chrN, equal lengths).
        feature_loci_per_mb: planted loci per feature kind (CTCF_CONVERGENT and EBOX_PAIR get
            60% of it).
        decoy_loci_per_mb: planted loci per decoy kind.
        repeats_per_mb: low-complexity repeats (20-60 bp).
        end_gap, internal_gap: N at both contig ends, and one internal N gap.
        at_weight: A/T tilt of the Markov chain (GC content).
        score_margin: planted instances score >= hit threshold + this (bits), capped at half
            the distance from the threshold to the consensus score.
        missed_fraction, noise_peak_fraction: peak-call noise.
        n_variants: VCF records; break_fraction / create_fraction of them are designed to break /
            create a motif, the rest are neutral; multiallelic_fraction of records carry 2 ALTs.
    """

    n_chroms: int = 5
    chrom_length: int = 400_000
    feature_loci_per_mb: float = 100.0
    decoy_loci_per_mb: float = 20.0
    repeats_per_mb: float = 150.0
    end_gap: int = 5_000
    internal_gap: int = 10_000
    at_weight: float = 1.15
    score_margin: float = 1.0
    missed_fraction: float = 0.03
    noise_peak_fraction: float = 0.03
    n_variants: int = 2_000
    break_fraction: float = 0.15
    create_fraction: float = 0.10
    multiallelic_fraction: float = 0.06

    def validate(self) -> None:
        """Raise SimulationError naming the first invalid setting."""
        if self.n_chroms < 1:
            raise SimulationError(f"n_chroms must be >= 1, got {self.n_chroms}")
        min_len = 2 * self.end_gap + 20_000
        if self.chrom_length < min_len:
            raise SimulationError(
                f"chrom_length must be >= {min_len} bp (end gaps + 20 kb), got {self.chrom_length}"
            )
        for name in ("end_gap", "internal_gap", "n_variants"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("feature_loci_per_mb", "decoy_loci_per_mb", "repeats_per_mb", "at_weight"):
            if not getattr(self, name) >= 0:
                raise SimulationError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "missed_fraction",
            "noise_peak_fraction",
            "break_fraction",
            "create_fraction",
            "multiallelic_fraction",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise SimulationError(f"{name} must be within [0, 1], got {v}")
        if self.break_fraction + self.create_fraction > 1.0:
            raise SimulationError(
                f"break_fraction + create_fraction must be <= 1, got "
                f"{self.break_fraction} + {self.create_fraction}"
            )


SIZES: dict[str, SimulationConfig] = {
    "small": SimulationConfig(
        n_chroms=3, chrom_length=60_000, end_gap=1_000, internal_gap=2_000, n_variants=200
    ),
    "default": SimulationConfig(),
    "large": SimulationConfig(
        n_chroms=10, chrom_length=2_000_000, end_gap=10_000, internal_gap=50_000, n_variants=10_000
    ),
}


@dataclass(frozen=True)
class SimulationPaths:
    """Files written by ``simulate`` (all inside ``out_dir``)."""

    genome: Path
    fai: Path
    features: Path
    peaks: dict[str, Path]
    sites: Path
    grammar_sites: Path
    vcf: Path
    tbi: Path
    truth: Path
    summary: Path


@dataclass(frozen=True)
class SimulationResult:
    """What ``simulate`` made.

    Attributes:
        out_dir: the output folder.
        paths: every file written.
        features: feature names, in features.tsv / truth order.
        chroms: (name, length) per chromosome.
        counts: named totals: planted_sites, loci, records, alts, break, create, neutral,
            sites:<feature>, peaks:<feature>, noise_peaks:<feature>, missed:<feature>.
    """

    out_dir: Path
    paths: SimulationPaths
    features: tuple[str, ...]
    chroms: tuple[tuple[str, int], ...]
    counts: dict[str, int]


def _locus_counts(config: SimulationConfig, usable_bp: int) -> dict[str, int]:
    mb = usable_bp / 1e6
    out = {}
    for kind, (_, decoy) in LOCUS_KINDS.items():
        density = config.decoy_loci_per_mb if decoy else config.feature_loci_per_mb
        if kind in ("CTCF_CONVERGENT", "EBOX_PAIR"):
            density *= 0.6
        out[kind] = round(density * mb)
    return out


def simulate(
    out_dir: str | Path, *, seed: int = 0, config: SimulationConfig | None = None
) -> SimulationResult:
    """Write a complete simulated data set into ``out_dir`` (created if missing).

    Args:
        out_dir: output folder; existing files of the same names are overwritten.
        seed: the only source of randomness (same seed and config -> byte-identical files).
        config: settings; ``SIZES["default"]`` when None.

    Raises:
        SimulationError: invalid settings, or loci that do not fit the chromosomes.
    """
    cfg = config if config is not None else SIZES["default"]
    cfg.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SimulationError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    (out / "peaks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    motifs = load_motifs()
    thresholds = motif_thresholds(motifs)
    scanner = MotifScanner(motifs)
    floors = planting_floors(motifs, thresholds, cfg.score_margin)
    names = [f"chr{i + 1}" for i in range(cfg.n_chroms)]

    chroms: list[ChromData] = []
    first_locus = 1
    for name in names:
        tokens = markov_sequence(rng, cfg.chrom_length, cfg.at_weight)
        add_repeats(rng, tokens, cfg.repeats_per_mb)
        add_gaps(tokens, cfg.end_gap, cfg.internal_gap)
        counts = _locus_counts(cfg, int((tokens != 4).sum()))
        try:
            planted = plant_chromosome(rng, name, tokens, counts, motifs, floors, first_locus)
        except ValueError as exc:
            raise SimulationError(str(exc)) from exc
        first_locus += len({p.locus for p in planted})
        hits = scan_hits(tokens, scanner, thresholds)
        chroms.append(ChromData(name, tokens, hits, feature_sites(hits, motifs), planted))
        log.info("%s: %d planted instances, %d motif hits", name, len(planted), len(hits.start))

    totals: dict[str, int] = {"loci": first_locus - 1}
    peak_paths = _write_peaks(rng, out, chroms, cfg, totals)

    n_break = round(cfg.n_variants * cfg.break_fraction)
    n_create = round(cfg.n_variants * cfg.create_fraction)
    records = design_variants(
        rng,
        chroms,
        motifs,
        thresholds,
        n_break,
        n_create,
        cfg.n_variants - n_break - n_create,
        cfg.multiallelic_fraction,
    )
    ids = [f"vfx{k + 1:06d}" for k in range(len(records))]
    contigs = tuple((c.name, len(c.tokens)) for c in chroms)

    paths = SimulationPaths(
        genome=out / "genome.fa",
        fai=out / "genome.fa.fai",
        features=out / "features.tsv",
        peaks=peak_paths,
        sites=out / "sites.tsv",
        grammar_sites=out / "grammar_sites.tsv",
        vcf=out / "variants.vcf.gz",
        tbi=out / "variants.vcf.gz.tbi",
        truth=out / "truth.tsv",
        summary=out / "summary.json",
    )
    io.write_fasta(paths.genome, names, [c.tokens for c in chroms])
    write_declaration(paths.genome, assembly=f"{SIM_FAMILY}-seed{seed}", family=SIM_FAMILY)
    all_planted: list[PlantedSite] = [p for c in chroms for p in c.planted]
    io.write_sites(paths.sites, all_planted, motifs)
    io.write_features(
        paths.features,
        {f: (totals[f"sites:{f}"], totals[f"peaks:{f}"]) for f in FEATURE_NAMES},
    )
    io.write_vcf(paths.vcf, records, ids, contigs, seed)
    io.write_truth(paths.truth, records, ids)

    alts = [a for r in records for a in r.alts]
    totals.update(
        planted_sites=len(all_planted),
        records=len(records),
        alts=len(alts),
        **{cls: sum(a.cls == cls for a in alts) for cls in ("break", "create", "neutral")},
    )
    io.write_summary(
        paths.summary,
        seed=seed,
        config=dataclasses.asdict(cfg),
        counts=totals,
        motifs=[
            {"id": m.id, "name": m.name, "width": m.width, "threshold_bits": round(float(t), 4)}
            for m, t in zip(motifs, thresholds, strict=True)
        ],
        chroms=contigs,
    )
    if totals["break"] < n_break or totals["create"] < n_create:
        log.warning(
            "only %d break / %d create ALTs could be designed (asked %d / %d)",
            totals["break"],
            totals["create"],
            n_break,
            n_create,
        )
    return SimulationResult(out, paths, FEATURE_NAMES, contigs, totals)


def _write_peaks(
    rng: np.random.Generator,
    out: Path,
    chroms: list[ChromData],
    cfg: SimulationConfig,
    totals: dict[str, int],
) -> dict[str, Path]:
    rows: list[tuple[str, int, str, str, int]] = []
    paths: dict[str, Path] = {}
    for f in FEATURE_NAMES:
        peaks: list[tuple[str, Peak]] = []
        n_sites = n_missed = 0
        for c in chroms:
            sites = c.sites[f]
            valid = c.tokens != 4
            chrom_peaks, in_peak = call_peaks(
                rng, sites, valid, cfg.missed_fraction, cfg.noise_peak_fraction
            )
            peaks.extend((c.name, p) for p in chrom_peaks)
            planted = _planted_mask(c, sites)
            rows.extend(
                (c.name, int(s), f, "planted" if pl else "chance", int(ip))
                for s, pl, ip in zip(
                    sites.tolist(), planted.tolist(), in_peak.tolist(), strict=True
                )
            )
            n_sites += len(sites)
            n_missed += int((~in_peak).sum())
        paths[f] = out / "peaks" / f"{f}.narrowPeak"
        n_rows = io.write_narrowpeak(paths[f], f, peaks)
        n_noise = sum(p.noise for _, p in peaks)
        totals[f"sites:{f}"] = n_sites
        totals[f"peaks:{f}"] = n_rows
        totals[f"noise_peaks:{f}"] = n_noise
        totals[f"missed:{f}"] = n_missed
    io.write_grammar_sites(out / "grammar_sites.tsv", rows)
    return paths


def _planted_mask(c: ChromData, sites: np.ndarray) -> np.ndarray:
    """bool [n_sites]: the site lies within a planted instance's locus span (+-80 bp)."""
    if not c.planted or not len(sites):
        return np.zeros(len(sites), dtype=bool)
    mid = np.sort(np.array([(p.start + p.end) // 2 for p in c.planted], dtype=np.int64))
    k = np.searchsorted(mid, sites).clip(1, len(mid) - 1)
    dist = np.minimum(np.abs(mid[k] - sites), np.abs(mid[k - 1] - sites))
    if len(mid) == 1:
        dist = np.abs(mid[0] - sites)
    return dist <= 80
