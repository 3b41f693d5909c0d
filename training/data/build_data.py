"""One-off builder of the shipped simulation data (NOT imported at run time).

Run from the repository root with the dev environment:

    .venv/bin/python training/data/build_data.py

It writes, next to this file:

* ``jaspar_motifs.json``: position frequency matrices (counts, rows = positions, columns = A C G T)
  of the motifs ``varfx simulate`` plants, with their JASPAR matrix IDs, taken from the JASPAR2024
  CORE release through the ``pyjaspar`` package (its bundled SQLite database).
* ``background_markov5.json``: 5th-order Markov transition counts (1,024 contexts x 4 next bases)
  estimated from GRCh38 chr1:1-1,000,000 (``../shared/data/real/hg38_chr1_1mb/hg38_1m.plain.fa``,
  840,000 non-N bases; source calico/baskerville tests/data/hg38_1m.fa.gz), counted on both strands.
  Only these counts are shipped, never the sequence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysam

RELEASE = "JASPAR2024"
MOTIF_IDS = [
    "MA0139.2",  # CTCF
    "MA0080.7",  # Spi1
    "MA0466.4",  # CEBPB
    "MA0099.4",  # FOS::JUN (AP-1)
    "MA0509.3",  # RFX1
    "MA0035.4",  # GATA1
    "MA0091.2",  # TAL1::TCF3
    "MA0148.5",  # FOXA1
    "MA1494.2",  # HNF4A
    "MA1109.2",  # NEUROD1
]
ORDER = 5
HERE = Path(__file__).resolve().parent
REAL_FASTA = (
    HERE.parents[1] / ".." / "shared" / "data" / "real" / "hg38_chr1_1mb" / "hg38_1m.plain.fa"
)


def build_motifs() -> None:
    from pyjaspar import jaspardb  # type: ignore[import-untyped]

    db = jaspardb(release=RELEASE)
    motifs = []
    for matrix_id in MOTIF_IDS:
        m = db.fetch_motif_by_id(matrix_id)
        counts = [[float(m.counts[b][i]) for b in "ACGT"] for i in range(m.length)]
        motifs.append({"id": m.matrix_id, "name": m.name, "pfm": counts})
    doc = {
        "source": f"{RELEASE} CORE via pyjaspar (bundled JASPAR SQLite database)",
        "columns": "ACGT",
        "motifs": motifs,
    }
    (HERE / "jaspar_motifs.json").write_text(json.dumps(doc, indent=1) + "\n")


def build_markov() -> None:
    seq = pysam.FastaFile(str(REAL_FASTA)).fetch("chr1").upper().encode()
    lut = np.full(256, 4, dtype=np.int64)
    for i, b in enumerate(b"ACGT"):
        lut[b] = i
    tok = lut[np.frombuffer(seq, dtype=np.uint8)]
    counts = np.zeros((4**ORDER, 4), dtype=np.int64)
    for strand_tok in (tok, np.where(tok < 4, 3 - tok, 4)[::-1]):
        win = np.lib.stride_tricks.sliding_window_view(strand_tok, ORDER + 1)
        ok = (win < 4).all(axis=1)
        win = win[ok]
        ctx = np.zeros(len(win), dtype=np.int64)
        for j in range(ORDER):
            ctx = ctx * 4 + win[:, j]
        np.add.at(counts, (ctx, win[:, ORDER]), 1)
    doc = {
        "source": "GRCh38 chr1:1-1,000,000 (calico/baskerville tests/data/hg38_1m.fa.gz), both strands",
        "order": ORDER,
        "alphabet": "ACGT",
        "context_index": "base-4 number of the previous ORDER bases, oldest most significant",
        "counts": counts.tolist(),
    }
    (HERE / "background_markov5.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    build_motifs()
    build_markov()
