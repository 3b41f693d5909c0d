"""A tiny real data set for training tests: random contigs with a motif planted at peak loci."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import write_fasta

MOTIF_A = "GGGACTTTCC"  # NF-kB-like site -> feature featA
MOTIF_B = "CACGTGAC"  # E-box-like site -> feature featB


@dataclass(frozen=True)
class TinyData:
    genome: Path
    peaks_dir: Path
    contigs: dict[str, str]


def make_tiny(tmp: Path, n_contigs: int = 3, length: int = 12_000, seed: int = 0) -> TinyData:
    """Contigs chr1..chrN with MOTIF_A / MOTIF_B planted every ~600 bp and narrowPeaks on them."""
    rng = np.random.default_rng(seed)
    contigs: dict[str, str] = {}
    peaks: dict[str, list[str]] = {"featA": [], "featB": []}
    for c in range(n_contigs):
        name = f"chr{c + 1}"
        seq = np.array(list(rng.choice(list("ACGT"), length)))
        for k, centre in enumerate(range(400, length - 400, 600)):
            feat, motif = ("featA", MOTIF_A) if k % 2 == 0 else ("featB", MOTIF_B)
            if k % 5 == 4:
                continue  # leave some gaps: negatives
            pos = centre + int(rng.integers(-30, 30))
            seq[pos : pos + len(motif)] = list(motif)
            peaks[feat].append(
                f"{name}\t{pos - 120}\t{pos + 130}\t{feat}.{k}\t500\t.\t5\t5\t5\t120"
            )
        contigs[name] = "".join(seq)
    genome = write_fasta(tmp / "genome.fa", contigs)
    peaks_dir = tmp / "peaks"
    peaks_dir.mkdir(exist_ok=True)
    for feat, lines in peaks.items():
        rng.shuffle(lines)  # unsorted on purpose
        (peaks_dir / f"{feat}.narrowPeak").write_text("\n".join(lines) + "\n")
    return TinyData(genome, peaks_dir, contigs)
