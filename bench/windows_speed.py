"""Speed of variant-window building (``varfx.server.windows.build_windows``) on a real genome.

Draws N random SNVs (REF taken from the genome, outside the assembly gaps) on the GRCh38
chr1:1-1,000,000 fragment in ``../shared/data/real/hg38_chr1_1mb`` and times ``build_windows``
for several window lengths; prints variants/s (best of ``--repeats``), and the time of
``one_hot`` on a [512, 1000] batch (the input adapter of one-hot models).

    .venv/bin/python -m bench.windows_speed [--n 20000] [--lengths 1000 2000 ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from varfx.core.tokens import one_hot
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.genome import Genome
from varfx.server.windows import build_windows

DEFAULT_FASTA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "real"
    / "hg38_chr1_1mb"
    / "hg38_1m.fa.gz"
)


def random_snvs(genome: Genome, contig: str, n: int, seed: int = 0) -> list[pb.Variant]:
    """n SNVs at random non-N positions of ``contig``, REF from the genome, ALT another base."""
    seq = np.frombuffer(genome.fetch(contig, 0, genome.contigs[contig]), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(seq != ord("N"))
    positions = np.sort(rng.choice(candidates, n, replace=False))
    shift = rng.integers(1, 4, n)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    out = []
    for p, s in zip(positions.tolist(), shift.tolist(), strict=True):
        ref = chr(seq[p])
        alt = chr(bases[("ACGT".index(ref) + s) % 4])
        out.append(pb.Variant(chrom=contig, pos=p + 1, ref=ref, alt=alt))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.fasta.exists():
        sys.stderr.write(f"genome not found: {args.fasta}\n")
        return 2
    genome = Genome(args.fasta)
    contig = next(iter(genome.contigs))
    variants = random_snvs(genome, contig, args.n)
    sys.stdout.write(f"genome {args.fasta.name} ({contig}, {genome.contigs[contig]:,} bp), "
                     f"{len(variants):,} SNVs\n")  # fmt: skip
    sys.stdout.write("L\tbest_s\tvariants_per_s\tok\n")
    for length in args.lengths:
        best = float("inf")
        ok = 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            w = build_windows(genome, variants, length)
            best = min(best, time.perf_counter() - t0)
            ok = int(w.ok.sum())
        sys.stdout.write(f"{length}\t{best:.3f}\t{len(variants) / best:,.0f}\t{ok}\n")
    # one-hot for models with float input (runs in front of every batch of such a model)
    w = build_windows(genome, variants[:512], 1000)
    best = float("inf")
    for _ in range(args.repeats * 5):
        t0 = time.perf_counter()
        one_hot(w.ref, "AGCT")
        best = min(best, time.perf_counter() - t0)
    sys.stdout.write(f"one_hot [512, 1000] AGCT: {best * 1e3:.2f} ms\n")
    genome.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
