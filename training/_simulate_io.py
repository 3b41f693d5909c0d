"""Writers for the files of ``varfx simulate`` (FASTA, narrowPeak, VCF, TSV registers).

All output is a pure function of its inputs (no dates, no host names), so the same seed gives
byte-identical files. FASTA and VCF are indexed with pysam (faidx; bgzip + tabix).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pysam

from varfx.core.tokens import decode
from varfx.training._grammar import FEATURES
from varfx.training._peaks import Peak
from varfx.training._planting import PlantedSite
from varfx.training._variants import VariantRecord
from varfx.training.motifs import Motif

__all__ = [
    "write_fasta",
    "write_features",
    "write_grammar_sites",
    "write_narrowpeak",
    "write_sites",
    "write_summary",
    "write_truth",
    "write_vcf",
]

FASTA_WIDTH = 60


def write_fasta(path: Path, names: Sequence[str], tokens: Sequence[np.ndarray]) -> None:
    """Plain FASTA, 60 columns, upper case; then ``path.fai`` via pysam.faidx."""
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        for name, tok in zip(names, tokens, strict=True):
            seq = decode(tok)
            fh.write(f">{name}\n")
            fh.write("\n".join(seq[i : i + FASTA_WIDTH] for i in range(0, len(seq), FASTA_WIDTH)))
            fh.write("\n")
    pysam.faidx(str(path))


def write_narrowpeak(path: Path, feature: str, peaks: Sequence[tuple[str, Peak]]) -> int:
    """10-column narrowPeak, rows in genome order (chromosome as in the FASTA, then start).

    Columns: chrom, start, end, name (``<feature>.<k>`` or ``<feature>.noise.<k>``), score
    (0-1000, from the signal), strand ``.``, signalValue (fold enrichment, arbitrary units),
    pValue and qValue (-log10, derived from the signal), peak (summit offset from start).
    Returns the number of rows.
    """
    lines = []
    k_real = k_noise = 0
    for chrom, p in peaks:
        if p.noise:
            k_noise += 1
            name = f"{feature}.noise.{k_noise}"
        else:
            k_real += 1
            name = f"{feature}.{k_real}"
        score = min(1000, round(p.signal * 40))
        pval = round(2.0 * p.signal, 3)
        qval = round(max(0.0, pval - 1.0), 3)
        lines.append(
            f"{chrom}\t{p.start}\t{p.end}\t{name}\t{score}\t.\t{p.signal:.3f}"
            f"\t{pval:.3f}\t{qval:.3f}\t{p.summit}\n"
        )
    path.write_text("".join(lines), encoding="ascii")
    return len(lines)


def write_sites(path: Path, planted: Sequence[PlantedSite], motifs: Sequence[Motif]) -> None:
    """Register of planted motif instances (``sites.tsv``), 0-based half-open."""
    rows = ["chrom\tstart\tend\tstrand\tmotif_id\tmotif\tscore\tlocus\tkind\n"]
    for s in planted:
        m = motifs[s.motif]
        strand = "+" if s.strand > 0 else "-"
        rows.append(
            f"{s.chrom}\t{s.start}\t{s.end}\t{strand}\t{m.id}\t{m.name}\t{s.score:.3f}"
            f"\t{s.locus}\t{s.kind}\n"
        )
    path.write_text("".join(rows), encoding="ascii")


def write_grammar_sites(path: Path, rows: Sequence[tuple[str, int, str, str, int]]) -> None:
    """Every position where a feature's rule holds (``grammar_sites.tsv``).

    Columns: chrom, centre (0-based), feature, origin (planted: inside a planted locus;
    chance: background or side effect), in_peak (1, or 0 for a simulated missed peak).
    """
    out = ["chrom\tcentre\tfeature\torigin\tin_peak\n"]
    out.extend(f"{c}\t{p}\t{f}\t{o}\t{i}\n" for c, p, f, o, i in rows)
    path.write_text("".join(out), encoding="ascii")


def write_features(path: Path, counts: dict[str, tuple[int, int]]) -> None:
    """``features.tsv``: name, kind, motifs, rule, n_sites, n_peaks (in output order)."""
    out = ["feature\tkind\tmotifs\trule\tn_sites\tn_peaks\n"]
    for f in FEATURES:
        n_sites, n_peaks = counts[f.name]
        motifs = ",".join(f.motifs) if f.motifs else "."
        out.append(f"{f.name}\t{f.kind}\t{motifs}\t{f.rule}\t{n_sites}\t{n_peaks}\n")
    path.write_text("".join(out), encoding="ascii")


def write_summary(
    path: Path,
    *,
    seed: int,
    config: dict[str, object],
    counts: dict[str, int],
    motifs: list[dict[str, object]],
    chroms: Sequence[tuple[str, int]],
) -> None:
    """``summary.json``: everything needed to describe (and rebuild) the data set."""
    doc = {
        "generator": "varfx simulate",
        "seed": seed,
        "config": config,
        "chroms": [{"name": c, "length": n} for c, n in chroms],
        "motifs": motifs,
        "motif_source": "JASPAR2024 CORE (training/data/jaspar_motifs.json)",
        "features": [
            {
                "name": f.name,
                "kind": f.kind,
                "motifs": list(f.motifs),
                "min_dist": f.min_dist,
                "max_dist": f.max_dist,
                "rule": f.rule,
            }
            for f in FEATURES
        ],
        "counts": counts,
    }
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="ascii")


def _direction_text(d: np.ndarray) -> tuple[str, str]:
    names = [f.name for f, v in zip(FEATURES, d.tolist(), strict=True) if v != 0]
    dirs = [f"{f.name}:{v:+d}" for f, v in zip(FEATURES, d.tolist(), strict=True) if v != 0]
    return (",".join(names) or "."), (",".join(dirs) or ".")


def _fmt(x: float) -> str:
    return "." if math.isnan(x) else f"{x:.3f}"


def write_truth(path: Path, records: Sequence[VariantRecord], ids: Sequence[str]) -> None:
    """``truth.tsv``: one row per variant and ALT (see ``simulate`` for the columns)."""
    out = [
        "chrom\tpos\tid\tref\talt\tclass\tmotif\taffected_features\tdirection"
        "\tvtype\tmotif_id\tref_score\talt_score\n"
    ]
    for rec, vid in zip(records, ids, strict=True):
        for a in rec.alts:
            feats, dirs = _direction_text(a.directions)
            out.append(
                f"{rec.chrom}\t{rec.pos}\t{vid}\t{rec.ref}\t{a.alt}\t{a.cls}\t{a.motif}\t{feats}"
                f"\t{dirs}\t{a.vtype}\t{a.motif_id}\t{_fmt(a.ref_score)}\t{_fmt(a.alt_score)}\n"
            )
    path.write_text("".join(out), encoding="ascii")


def write_vcf(
    path_gz: Path,
    records: Sequence[VariantRecord],
    ids: Sequence[str],
    contigs: Sequence[tuple[str, int]],
    seed: int,
) -> None:
    """VCFv4.2 (sorted, bgzipped, tabix-indexed) with ##contig and ##INFO definitions."""
    head = [
        "##fileformat=VCFv4.2",
        f"##source=varfx simulate (seed={seed})",
        "##reference=genome.fa",
    ]
    head += [f"##contig=<ID={c},length={n}>" for c, n in contigs]
    head += [
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=VT,Number=A,Type=String,Description="Variant type of each ALT: '
        'SNV, MNV, INS, DEL or COMPLEX">',
        '##INFO=<ID=SIMCLASS,Number=A,Type=String,Description="Simulated effect of each ALT: '
        "break (a planted motif loses a feature), create (a new motif hit), neutral; "
        'see truth.tsv">',
        '##INFO=<ID=MOTIF,Number=A,Type=String,Description="JASPAR matrix ID of the motif '
        'broken or created by each ALT (. for neutral)">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    lines = ["\n".join(head) + "\n"]
    for rec, vid in zip(records, ids, strict=True):
        alts = ",".join(a.alt for a in rec.alts)
        vt = ",".join(a.vtype for a in rec.alts)
        cls = ",".join(a.cls for a in rec.alts)
        mot = ",".join(a.motif_id for a in rec.alts)
        lines.append(
            f"{rec.chrom}\t{rec.pos}\t{vid}\t{rec.ref}\t{alts}\t.\tPASS"
            f"\tVT={vt};SIMCLASS={cls};MOTIF={mot}\n"
        )
    plain = path_gz.with_suffix("")
    plain.write_text("".join(lines), encoding="ascii")
    pysam.tabix_compress(str(plain), str(path_gz), force=True)
    os.remove(plain)
    pysam.tabix_index(str(path_gz), preset="vcf", force=True)
