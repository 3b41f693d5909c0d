"""FASTA + peaks -> a small window index (contig, start, labels, split) and a streaming dataset.

DeepSEA-style examples: a bin of ``bin_size`` bp (default 200) every ``stride`` bp; a feature's
label is 1 when at least ``min_overlap`` (default half) of the bin is covered by that feature's
peaks; the example is the window of ``length`` bp centred on the bin. Positives are bins with any
label; negatives are sampled from the other bins (``negative_ratio`` per positive, per split).
Windows with more than ``max_n_fraction`` N (including beyond the contig ends) and bins touching
the blacklist are dropped. Only the index is held in memory; sequences are read from the FASTA
per example by :class:`WindowDataset` (one pysam handle per worker process).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from varfx.core.contigs import contig_aliases
from varfx.core.tokens import reverse_complement
from varfx.training._fasta import FastaTokens
from varfx.training.errors import DataError
from varfx.training.negatives import NEGATIVE_POLICIES, sample_negatives, window_gc
from varfx.training.peaks import (
    Intervals,
    PeakSet,
    bin_coverage,
    read_bed,
    resolve_contig,
)

__all__ = [
    "SPLITS",
    "IndexConfig",
    "Region",
    "SplitSpec",
    "WindowDataset",
    "WindowIndex",
    "build_index",
    "parse_region",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_REGION_RE = re.compile(r"^(?P<contig>[^:\s]+)(?::(?P<start>[\d,]+)-(?P<end>[\d,]*))?$")


@dataclass(frozen=True)
class Region:
    """A held-out region: 0-based half-open [start, end) on ``contig`` (end None = to the end)."""

    contig: str
    start: int = 0
    end: int | None = None


def parse_region(text: str) -> Region:
    """Parse ``chr20``, ``20:1-30000000``, ``20:1,000-2,000`` (1-based inclusive, like samtools)
    or ``chr20:29500001-`` (to the contig end).

    Raises:
        DataError: malformed text or start > end.
    """
    m = _REGION_RE.match(text.strip())
    if m is None:
        raise DataError(f"region {text!r} is not CONTIG or CONTIG:START-END")
    if m.group("start") is None:
        return Region(m.group("contig"))
    start = int(m.group("start").replace(",", ""))
    if start < 1:
        raise DataError(f"region {text!r}: need 1 <= START")
    if not m.group("end").replace(",", ""):
        return Region(m.group("contig"), start - 1, None)
    end = int(m.group("end").replace(",", ""))
    if end < start:
        raise DataError(f"region {text!r}: need 1 <= START <= END")
    return Region(m.group("contig"), start - 1, end)


def _region_text(r: Region) -> str:
    if r.start == 0 and r.end is None:
        return r.contig
    return f"{r.contig}:{r.start + 1}-{'' if r.end is None else r.end}"


@dataclass(frozen=True)
class SplitSpec:
    """Held-out chromosomes/regions; everything else is training data."""

    valid: tuple[Region, ...] = ()
    test: tuple[Region, ...] = ()

    @classmethod
    def from_args(
        cls,
        valid_chroms: Sequence[str] = (),
        test_chroms: Sequence[str] = (),
        valid_regions: Sequence[str] = (),
        test_regions: Sequence[str] = (),
    ) -> SplitSpec:
        """Build from command-line lists of chromosome names and region strings."""
        return cls(
            tuple(Region(c) for c in valid_chroms) + tuple(parse_region(r) for r in valid_regions),
            tuple(Region(c) for c in test_chroms) + tuple(parse_region(r) for r in test_regions),
        )

    def check_disjoint(self) -> None:
        """Refuse held-out regions that share a base (valid with test, or within one split).

        Contig names are compared through their aliases (``chr2`` = ``2``).

        Raises:
            DataError: naming both regions.
        """
        seen: list[tuple[set[str], int, float, str]] = []
        for split, regs in (("valid", self.valid), ("test", self.test)):
            for r in regs:
                names = set(contig_aliases(r.contig))
                hi = math.inf if r.end is None else r.end
                for other_names, lo2, hi2, label in seen:
                    if names & other_names and r.start < hi2 and lo2 < hi:
                        raise DataError(
                            f"held-out regions overlap: {split} {_region_text(r)} and {label}"
                        )
                seen.append((names, r.start, hi, f"{split} {_region_text(r)}"))

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        return {"valid": [asdict(r) for r in self.valid], "test": [asdict(r) for r in self.test]}

    @classmethod
    def from_json(cls, data: dict[str, list[dict[str, Any]]]) -> SplitSpec:
        return cls(
            tuple(Region(**r) for r in data.get("valid", [])),
            tuple(Region(**r) for r in data.get("test", [])),
        )


@dataclass(frozen=True)
class IndexConfig:
    """Window settings (bp unless said otherwise).

    Attributes:
        length: window length L (even).
        bin_size: labelled bin at the window centre.
        stride: distance between consecutive bins (bin_size = non-overlapping, as DeepSEA).
        min_overlap: fraction of the bin a peak must cover for label 1.
        negative_ratio: negatives sampled per positive, per split (inf = every negative).
        max_n_fraction: drop windows with a larger fraction of N.
        blacklist: optional BED of regions to exclude (windows overlapping it are dropped).
        seed: negative sampling seed.
        negatives: sampling policy, one of ``random``, ``gc-matched``, ``all``
            (varfx.training.negatives).
    """

    length: int = 1000
    bin_size: int = 200
    stride: int = 200
    min_overlap: float = 0.5
    negative_ratio: float = 1.0
    max_n_fraction: float = 0.1
    blacklist: str | None = None
    seed: int = 0
    negatives: str = "random"

    def validate(self) -> None:
        if self.length < 2 or self.length % 2:
            raise DataError(f"window length must be an even int >= 2, got {self.length}")
        if not 0 < self.bin_size <= self.length:
            raise DataError(f"bin_size must be in (0, length={self.length}], got {self.bin_size}")
        if self.stride < 1:
            raise DataError(f"stride must be >= 1, got {self.stride}")
        if not 0.0 < self.min_overlap <= 1.0:
            raise DataError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        if not self.negative_ratio >= 0:
            raise DataError(f"negative_ratio must be >= 0 (inf = all), got {self.negative_ratio}")
        if not 0.0 <= self.max_n_fraction <= 1.0:
            raise DataError(f"max_n_fraction must be in [0, 1], got {self.max_n_fraction}")
        if self.negatives not in NEGATIVE_POLICIES:
            raise DataError(f"negatives must be one of {NEGATIVE_POLICIES}, got {self.negatives!r}")


@dataclass
class WindowIndex:
    """The examples of one genome: small arrays only, no sequence.

    Attributes:
        contigs: contig names; ``contig_ids`` index into it.
        contig_ids: int32 [N].
        starts: int64 [N] window start (0-based, bp; may be < 0 at a contig start: N padding).
        labels: uint8 [N, F] (0/1).
        split: int8 [N] index into SPLITS (0 train, 1 valid, 2 test).
        features: F names; length: window length L.
    """

    contigs: tuple[str, ...]
    contig_ids: np.ndarray
    starts: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    features: tuple[str, ...]
    length: int
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.starts)

    def rows(self, split: str) -> np.ndarray:
        """Row numbers (int64) of one split."""
        return np.flatnonzero(self.split == SPLITS.index(split))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            contigs=np.array(self.contigs),
            contig_ids=self.contig_ids,
            starts=self.starts,
            labels=self.labels,
            split=self.split,
            features=np.array(self.features),
            length=np.array(self.length),
            stats=np.array(json.dumps(self.stats)),
        )

    @classmethod
    def load(cls, path: str | Path) -> WindowIndex:
        with np.load(path) as z:
            return cls(
                tuple(str(c) for c in z["contigs"]),
                z["contig_ids"],
                z["starts"],
                z["labels"],
                z["split"],
                tuple(str(f) for f in z["features"]),
                int(z["length"]),
                json.loads(str(z["stats"])) if "stats" in z else {},
            )


def _candidate_bins(iv: Intervals, cfg: IndexConfig, n_bins: int) -> np.ndarray:
    """Bin numbers whose bin [k*stride, k*stride+bin_size) overlaps any interval (vectorized)."""
    if len(iv) == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.maximum(-((cfg.bin_size - 1 - iv.starts) // cfg.stride), 0)  # ceil((s-bs+1)/stride)
    last = np.minimum((iv.ends - 1) // cfg.stride, n_bins - 1)
    counts = np.maximum(last - first + 1, 0)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(np.repeat(first, counts) + offsets)


def _region_mask(bins_lo: np.ndarray, bins_hi: np.ndarray, regions: list[Region]) -> np.ndarray:
    """True where [lo, hi) overlaps any region (all on one contig)."""
    hit = np.zeros(len(bins_lo), dtype=bool)
    for r in regions:
        end = np.iinfo(np.int64).max if r.end is None else r.end
        hit |= (bins_lo < end) & (bins_hi > r.start)
    return hit


def _inside_mask(win_lo: np.ndarray, length: int, regions: list[Region]) -> np.ndarray:
    """True where the window [lo, lo + length) lies wholly inside one region (all on one contig).

    A region starting at 0 / ending at None is open on that side (N padding past a contig end).
    """
    inside = np.zeros(len(win_lo), dtype=bool)
    for r in regions:
        ok = np.ones(len(win_lo), dtype=bool) if r.start == 0 else win_lo >= r.start
        if r.end is not None:
            ok &= win_lo + length <= r.end
        inside |= ok
    return inside


def _resolve_regions(genome: FastaTokens, split: SplitSpec) -> list[list[Region]]:
    """Held-out regions per split index (0 train: none), renamed to the FASTA's contig names."""
    names = list(genome.lengths)
    regions: list[list[Region]] = [[], [], []]
    for s, regs in ((1, split.valid), (2, split.test)):
        for r in regs:
            target = resolve_contig(r.contig, names)
            if target is None:
                raise DataError(f"held-out contig {r.contig!r} is not in the FASTA {genome.path}")
            if r.start >= genome.lengths[target]:
                raise DataError(
                    f"held-out region {_region_text(r)} starts past the end of {target} "
                    f"({genome.lengths[target]} bp)"
                )
            regions[s].append(Region(target, r.start, r.end))
    return regions


def build_index(
    genome: FastaTokens, peaks: PeakSet, split: SplitSpec, cfg: IndexConfig | None = None
) -> WindowIndex:
    """Label every bin of every contig and sample negatives; returns the window index.

    A bin's split follows its centre. A training window that reaches into a held-out region is
    dropped, and a held-out window must lie wholly inside its own split's regions, so no base is
    shared between the windows of two splits. Windows overlapping the blacklist are dropped.
    Negatives are sampled per split by ``cfg.negatives`` (varfx.training.negatives).

    Raises:
        DataError: invalid settings, overlapping held-out regions, a held-out contig the FASTA
            lacks, or no examples at all.
    """
    cfg = cfg or IndexConfig()
    cfg.validate()
    split.check_disjoint()
    names = list(genome.lengths)
    regions = _resolve_regions(genome, split)
    blacklist: dict[str, Intervals] = {}
    if cfg.blacklist:
        for c, iv in read_bed(cfg.blacklist).items():
            target = resolve_contig(c, names)
            if target is not None:
                blacklist[target] = iv
    n_feat = len(peaks.features)
    half = cfg.length // 2
    gc_needed = cfg.negatives == "gc-matched"
    pos_parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    neg_parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    stats: dict[str, Any] = {"dropped_n": 0, "dropped_blacklist": 0, "dropped_overlap": 0}
    for cid, contig in enumerate(names):
        size = genome.lengths[contig]
        if size < cfg.bin_size:
            continue
        n_bins = (size - cfg.bin_size) // cfg.stride + 1
        bin_lo = np.arange(n_bins, dtype=np.int64) * cfg.stride
        centre = bin_lo + cfg.bin_size // 2
        win_lo = centre - half
        # N fraction of every window (out-of-contig counts as N) from a cumulative sum
        tokens = genome.contig_tokens(contig)
        is_n = np.concatenate([[0], np.cumsum(tokens == 4, dtype=np.int32)])
        lo, hi = np.clip(win_lo, 0, size), np.clip(win_lo + cfg.length, 0, size)
        n_count = is_n[hi] - is_n[lo] + (cfg.length - (hi - lo))
        del is_n
        ok = n_count <= cfg.max_n_fraction * cfg.length
        stats["dropped_n"] += int((~ok).sum())
        if contig in blacklist:
            bl = bin_coverage(blacklist[contig], win_lo, win_lo + cfg.length) > 0
            stats["dropped_blacklist"] += int((bl & ok).sum())
            ok &= ~bl
        # split by bin centre; a training window must not reach into a held-out region and a
        # held-out window must lie inside its own split's regions
        which = np.zeros(n_bins, dtype=np.int8)
        for s in (1, 2):
            here = [r for r in regions[s] if r.contig == contig]
            which[_region_mask(centre, centre + 1, here)] = s
        held = [r for t in (1, 2) for r in regions[t] if r.contig == contig]
        if held:
            bad = (which == 0) & _region_mask(win_lo, win_lo + cfg.length, held) & ok
            for s in (1, 2):
                here = [r for r in regions[s] if r.contig == contig]
                if here:
                    bad |= (which == s) & ~_inside_mask(win_lo, cfg.length, here) & ok
            stats["dropped_overlap"] += int(bad.sum())
            ok &= ~bad
        gc = window_gc(tokens, win_lo, cfg.length) if gc_needed else np.zeros(n_bins, np.float32)
        del tokens
        # labels: only bins near peaks are looked at
        need = math.ceil(cfg.min_overlap * cfg.bin_size)
        per_feat = []
        for iv in peaks.contig_intervals(contig):
            cand = _candidate_bins(iv, cfg, n_bins)
            cov = bin_coverage(iv, bin_lo[cand], bin_lo[cand] + cfg.bin_size)
            per_feat.append(cand[cov >= need])
        pos = np.unique(np.concatenate([np.zeros(0, np.int64), *per_feat]))
        pos = pos[ok[pos]]
        labels = np.zeros((len(pos), n_feat), dtype=np.uint8)
        for f, b in enumerate(per_feat):
            at = np.searchsorted(pos, b)
            keep = (at < len(pos)) & (pos[np.minimum(at, len(pos) - 1)] == b)
            labels[at[keep], f] = 1
        pos_parts.append((cid, win_lo[pos], labels, which[pos], gc[pos]))
        neg_mask = ok.copy()
        neg_mask[pos] = False
        neg = np.flatnonzero(neg_mask)
        neg_parts.append((cid, win_lo[neg], which[neg], gc[neg]))

    rng = np.random.default_rng(cfg.seed)
    cids, starts, labs, splits = [], [], [], []
    for cid, st, lab, sp, _ in pos_parts:
        cids.append(np.full(len(st), cid, np.int32))
        starts.append(st)
        labs.append(lab)
        splits.append(sp)
    empty = np.zeros(0, np.int64)
    neg_c = np.concatenate([np.full(len(st), c, np.int32) for c, st, _, _ in neg_parts] + [empty])
    neg_s = np.concatenate([st for _, st, _, _ in neg_parts] + [empty]).astype(np.int64)
    neg_sp = np.concatenate([sp for _, _, sp, _ in neg_parts] + [empty]).astype(np.int8)
    neg_gc = np.concatenate([g for *_, g in neg_parts] + [empty]).astype(np.float32)
    pos_sp = np.concatenate(splits) if splits else np.zeros(0, np.int8)
    pos_gc = np.concatenate([g for *_, g in pos_parts] + [empty]).astype(np.float32)
    stats["negatives"] = cfg.negatives
    for s, name in enumerate(SPLITS):
        avail = np.flatnonzero(neg_sp == s)
        here = pos_sp == s
        pick, short = sample_negatives(
            cfg.negatives, cfg.negative_ratio, int(here.sum()), pos_gc[here], neg_gc[avail], rng
        )
        pick = avail[pick]
        if short:
            stats[f"{name}_negative_shortfall"] = short
        cids.append(neg_c[pick])
        starts.append(neg_s[pick])
        labs.append(np.zeros((len(pick), n_feat), np.uint8))
        splits.append(neg_sp[pick])
    index = WindowIndex(
        tuple(names),
        np.concatenate(cids).astype(np.int32),
        np.concatenate(starts).astype(np.int64),
        np.concatenate(labs) if labs else np.zeros((0, n_feat), np.uint8),
        np.concatenate(splits).astype(np.int8),
        peaks.features,
        cfg.length,
    )
    order = np.lexsort((index.starts, index.contig_ids))
    index.contig_ids, index.starts = index.contig_ids[order], index.starts[order]
    index.labels, index.split = index.labels[order], index.split[order]
    if len(index) == 0:
        raise DataError(f"no usable windows in {genome.path} (all dropped or no peaks)")
    for s, name in enumerate(SPLITS):
        rows = index.split == s
        stats[f"{name}_windows"] = int(rows.sum())
        stats[f"{name}_positives"] = index.labels[rows].sum(axis=0).astype(int).tolist()
    index.stats = stats
    log.info("window index: %s", stats)
    return index


class WindowDataset:
    """A torch-compatible map-style dataset over one split of a WindowIndex.

    Items are ``(tokens uint8 [L], labels float32 [F])`` as numpy arrays (the default collate
    turns them into tensors). With ``reverse_complement=True`` each item is reverse-complemented
    with probability 0.5 (augmentation; labels are strand-free).
    """

    def __init__(
        self,
        genome: FastaTokens,
        index: WindowIndex,
        split: str,
        *,
        reverse_complement: bool = False,
        seed: int = 0,
    ) -> None:
        self.genome = genome
        self.index = index
        self.rows = index.rows(split)
        self.augment = reverse_complement
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows[i]
        ix = self.index
        tokens = self.genome.window(ix.contigs[ix.contig_ids[r]], int(ix.starts[r]), ix.length)
        if self.augment and self._rng.random() < 0.5:
            tokens = reverse_complement(tokens)
        return np.ascontiguousarray(tokens), ix.labels[r].astype(np.float32)

    def labels(self) -> np.ndarray:
        """uint8 [N, F] labels of this split, in item order."""
        return self.index.labels[self.rows]
