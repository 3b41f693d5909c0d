"""Shared helpers for the brain-hg19 scripts (issue 7): genome tokens, peak labels, region splits.

Everything here works on whole-chromosome numpy arrays: the genome is read once into one uint8
token array (A0 C1 G2 T3 N4) per contig, labels come from interval arithmetic on merged peaks,
and windows are gathered with one fancy-indexing call per batch. No per-base Python loops.

Imported by the sibling scripts (``prepare.py``, ``train.py``, ``baseline.py``, ``evaluate.py``,
``motifs.py``); Python puts a script's own folder on ``sys.path``, so no path tricks are needed.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varfx.core.tokens import encode, reverse_complement

__all__ = [
    "FEATURE_ORDER",
    "Index",
    "Region",
    "bin_coverage",
    "canonical_contig",
    "encode_tokens",
    "gather_windows",
    "load_genome",
    "load_index",
    "merge_intervals",
    "parse_region",
    "read_bed",
    "reverse_complement_tokens",
]

# Nott et al. 2019 peak files, in the fixed model output order: assay x cell type.
FEATURE_ORDER = [
    f"{assay}_{cell}"
    for assay in ("ATAC", "H3K27ac", "H3K4me3")
    for cell in ("NeuN", "Olig2", "PU1", "LHX2")
]

_REGION_RE = re.compile(r"^(?P<contig>[^:]+)(?::(?P<start>[\d,]+)-(?P<end>[\d,]+))?$")


@dataclass(frozen=True)
class Region:
    """A 1-based inclusive region as written on the command line (``20:1-29500000``)."""

    contig: str
    start: int  # 1-based, inclusive
    end: int | None  # 1-based, inclusive; None = to the contig end

    def half_open(self, contig_length: int) -> tuple[int, int]:
        """0-based half-open ``[start, end)`` clipped to the contig."""
        end = contig_length if self.end is None else min(self.end, contig_length)
        return self.start - 1, end

    def __str__(self) -> str:
        return self.contig if self.end is None else f"{self.contig}:{self.start}-{self.end}"


def parse_region(text: str) -> Region:
    """Parse ``X``, ``chr20:1-29,500,000`` (contig names keep what the user wrote)."""
    m = _REGION_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad region {text!r}: expected CONTIG or CONTIG:START-END")
    if m["start"] is None:
        return Region(m["contig"], 1, None)
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    if start < 1 or end < start:
        raise ValueError(f"bad region {text!r}: need 1 <= START <= END")
    return Region(m["contig"], start, end)


def canonical_contig(name: str) -> str:
    """``chr20`` -> ``20``, ``chrM`` -> ``MT``: the GRCh37 FASTA naming."""
    n = name[3:] if name.lower().startswith("chr") else name
    return "MT" if n in ("M", "m") else n


def encode_tokens(seq: bytes | str) -> np.ndarray:
    """DNA text -> uint8 tokens ``[len]`` (varfx.core's table: anything but ACGT is N=4)."""
    return encode(seq, strict=False)


reverse_complement_tokens = reverse_complement  # varfx.core's


def load_genome(fasta: str | Path, contigs: list[str]) -> dict[str, np.ndarray]:
    """Read whole contigs of an indexed FASTA into uint8 token arrays (one fetch per contig)."""
    import pysam

    out: dict[str, np.ndarray] = {}
    with pysam.FastaFile(str(fasta)) as fa:
        names = set(fa.references)
        for c in contigs:
            name = c if c in names else canonical_contig(c)
            if name not in names:
                raise ValueError(f"contig {c!r} is not in {fasta} (has {sorted(names)[:5]}...)")
            out[name] = encode_tokens(fa.fetch(name))
    return out


def read_bed(path: str | Path) -> dict[str, np.ndarray]:
    """Read a BED/narrowPeak file (plain or gzip, CRLF ok) -> {canonical contig: int64 [n, 2]}."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    per: dict[str, list[tuple[int, int]]] = {}
    with opener(p, "rt", newline=None) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line or line.startswith(("#", "track", "browser")):
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise ValueError(f"{p}:{lineno}: need >= 3 tab-separated columns, got {line!r}")
            try:
                s, e = int(cols[1]), int(cols[2])
            except ValueError as exc:
                raise ValueError(f"{p}:{lineno}: bad start/end in {line!r}") from exc
            per.setdefault(canonical_contig(cols[0]), []).append((s, e))
    return {c: np.asarray(v, dtype=np.int64).reshape(-1, 2) for c, v in per.items()}


def merge_intervals(iv: np.ndarray) -> np.ndarray:
    """Merge overlapping/adjacent half-open intervals ``[n, 2]`` (any order) -> sorted, disjoint."""
    if len(iv) == 0:
        return iv.reshape(0, 2)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    run_end = np.maximum.accumulate(iv[:, 1])
    new = np.ones(len(iv), dtype=bool)
    new[1:] = iv[1:, 0] > run_end[:-1]
    starts = iv[new, 0]
    group = np.cumsum(new) - 1
    ends = np.zeros(len(starts), dtype=np.int64)
    np.maximum.at(ends, group, iv[:, 1])
    return np.stack([starts, ends], axis=1)


def _covered_before(merged: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Number of bases in ``[0, x)`` covered by disjoint sorted intervals, for each x."""
    if len(merged) == 0:
        return np.zeros_like(x)
    s, e = merged[:, 0], merged[:, 1]
    cum = np.concatenate([[0], np.cumsum(e - s)])
    k = np.searchsorted(s, x, side="right") - 1  # last interval starting at or before x
    kk = np.clip(k, 0, None)
    inside = np.clip(x - s[kk], 0, (e - s)[kk])
    return np.where(k >= 0, cum[kk] + inside, 0)


def bin_coverage(intervals: np.ndarray, bin_starts: np.ndarray, bin_size: int) -> np.ndarray:
    """Bases of each bin ``[b, b+bin_size)`` covered by the intervals -> int64 [n_bins]."""
    merged = merge_intervals(intervals)
    return _covered_before(merged, bin_starts + bin_size) - _covered_before(merged, bin_starts)


@dataclass(frozen=True)
class Index:
    """The window index written by ``prepare.py`` (small: no sequence in it).

    contig: str [n]; start: int64 [n] 0-based window start; labels: uint8 [n, F];
    split: uint8 [n] (0 train, 1 valid, 2 test); features: F names; meta: the recorded split etc.
    """

    contig: np.ndarray
    start: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    features: list[str]
    meta: dict

    def subset(self, which: str) -> Index:
        code = {"train": 0, "valid": 1, "test": 2}[which]
        m = self.split == code
        return Index(
            self.contig[m], self.start[m], self.labels[m], self.split[m], self.features, self.meta
        )

    @property
    def length(self) -> int:
        return int(self.meta["length"])


def load_index(path: str | Path) -> Index:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return Index(
            z["contig"].astype(str),
            z["start"],
            z["labels"],
            z["split"],
            list(meta["features"]),
            meta,
        )


def gather_windows(
    genome: dict[str, np.ndarray], contig: np.ndarray, start: np.ndarray, length: int
) -> np.ndarray:
    """Windows ``[n, length]`` uint8 tokens; positions outside a contig read as N (4)."""
    out = np.full((len(start), length), 4, dtype=np.uint8)
    offs = np.arange(length, dtype=np.int64)
    for c in np.unique(contig):
        rows = np.flatnonzero(contig == c)
        seq = genome[str(c)]
        pos = start[rows, None] + offs
        ok = (pos >= 0) & (pos < len(seq))
        out[rows] = np.where(ok, seq[np.clip(pos, 0, len(seq) - 1)], 4)
    return out
