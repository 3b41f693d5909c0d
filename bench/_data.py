"""Benchmark inputs: a simulated genome (seeded i.i.d. bases, one contig) and VCFs of SNVs on it.

All variants carry the genome's REF base, so every one is scored (status OK) and the server
computes real windows (one genome fetch per variant, as in production).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SimGenome", "Site", "distinct_sites", "multiallelic_sites", "write_vcf"]

_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


@dataclass(frozen=True)
class Site:
    """One VCF record: 1-based pos, REF and one or more ALTs."""

    chrom: str
    pos: int
    ref: str
    alts: tuple[str, ...]


class SimGenome:
    """A random genome with one contig ``chrB`` written as FASTA (+ .fai) under ``directory``."""

    chrom = "chrB"

    def __init__(self, directory: Path, size: int = 2_000_000, seed: int = 0) -> None:
        import pysam

        rng = np.random.default_rng(seed)
        self.seq = _BASES[rng.integers(0, 4, size)].tobytes()
        self.path = directory / "genome.fa"
        with open(self.path, "wb") as fh:
            fh.write(f">{self.chrom}\n".encode())
            for i in range(0, size, 80):
                fh.write(self.seq[i : i + 80] + b"\n")
        pysam.faidx(str(self.path))

    def __len__(self) -> int:
        return len(self.seq)


def _positions(genome: SimGenome, n: int, seed: int, margin: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    span = len(genome) - 2 * margin
    if n > span:
        raise ValueError(f"{n} distinct sites do not fit a genome of {len(genome)} bases")
    return np.sort(rng.choice(span, n, replace=False) + margin + 1)


def distinct_sites(genome: SimGenome, n: int, seed: int = 1) -> list[Site]:
    """n SNVs at n distinct positions (one ALT each), sorted by position."""
    out = []
    for p in _positions(genome, n, seed).tolist():
        ref = chr(genome.seq[p - 1])
        out.append(Site(genome.chrom, p, ref, ("ACGT"[("ACGT".index(ref) + 1) % 4],)))
    return out


def multiallelic_sites(genome: SimGenome, n_sites: int, seed: int = 2) -> list[Site]:
    """n_sites records with all three ALTs each (3 variants per record)."""
    out = []
    for p in _positions(genome, n_sites, seed).tolist():
        ref = chr(genome.seq[p - 1])
        out.append(Site(genome.chrom, p, ref, tuple(b for b in "ACGT" if b != ref)))
    return out


def write_vcf(path: Path, genome: SimGenome, sites: list[Site]) -> int:
    """Write a VCF 4.2 file; returns the number of variants (ALTs)."""
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        fh.write(f"##contig=<ID={genome.chrom},length={len(genome)}>\n")
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, s in enumerate(sites):
            fh.write(f"{s.chrom}\t{s.pos}\tv{i}\t{s.ref}\t{','.join(s.alts)}\t.\tPASS\t.\n")
    return sum(len(s.alts) for s in sites)
