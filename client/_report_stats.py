"""The aggregates ``varfx report`` keeps while it streams a VCF: fixed-bin histograms with exact
threshold counts, and a max |diff| track per contig whose bin width doubles as it grows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "EXTENTS",
    "KINDS",
    "LOG_KINDS",
    "SIGNED",
    "STRONG",
    "STRONG_INDEX",
    "THRESHOLDS",
    "Histogram",
    "PositionTrack",
    "nice_extent",
]


#: Per-feature score kinds ``varfx score`` can write, and the value range of their histograms.
KINDS: dict[str, tuple[float, float, int]] = {
    "diff": (-1.0, 1.0, 2000),  # 0.001 wide: the page zooms in on small effects
    "log2fc": (-40.0, 40.0, 3200),
    "ref": (0.0, 1.0, 100),
    "alt": (0.0, 1.0, 100),
    "quantile": (0.0, 1.0, 1000),  # the |diff| rank among the model's background variants
    "signed_quantile": (-1.0, 1.0, 2000),  # the same with the sign of diff
    "pvalue": (0.0, 10.0, 200),  # held as -log10(p), p clipped to 1e-10
}
#: Kinds held transformed: pvalue as -log10(p).
LOG_KINDS = ("pvalue",)
#: Axis extents the page zooms to (the smallest that holds every value), for |value| scales.
EXTENTS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0)


def nice_extent(value: float, natural: float) -> float:
    """The smallest of EXTENTS >= ``value`` (a little headroom), at most ``natural``."""
    for e in EXTENTS:
        if e >= value * 1.02 and e <= natural:
            return e
    return natural


#: Kinds whose values have a sign (gains and losses are counted apart).
SIGNED = ("diff", "log2fc", "signed_quantile")
#: Thresholds counted exactly per histogram (values >= t and <= -t), by kind.
THRESHOLDS: dict[str, tuple[float, ...]] = {
    "diff": (0.05, 0.1, 0.2, 0.5),
    "log2fc": (1.0, 2.0, 4.0, 8.0),
    "ref": (0.1, 0.5, 0.9),
    "alt": (0.1, 0.5, 0.9),
    "max_abs_diff": (0.05, 0.1, 0.2, 0.5),
    "quantile": (0.9, 0.99, 0.999),
    "signed_quantile": (0.9, 0.99, 0.999),
    "pvalue": (1.30103, 2.0, 3.0),  # -log10 of 0.05, 0.01, 0.001
}
#: Which threshold of each kind the page calls a large effect (diff 0.1, log2fc 2, quantile 0.99).
STRONG_INDEX = {
    "diff": 1,
    "log2fc": 1,
    "ref": 0,
    "alt": 0,
    "quantile": 1,
    "signed_quantile": 1,
    "pvalue": 1,
}
#: |diff| from which a variant counts as a strong effect in the "top feature" counts.
STRONG = 0.1


@dataclass
class Histogram:
    """Counts of values in ``bins`` equal bins over [lo, hi] (values outside are clipped into
    the edge bins); ``n`` values, their ``total`` and extremes; ``gain[i]``/``loss[i]``: values
    >= ``thresholds[i]`` and <= ``-thresholds[i]``, counted exactly."""

    lo: float
    hi: float
    bins: int
    thresholds: tuple[float, ...] = ()
    counts: np.ndarray = field(init=False)
    gain: np.ndarray = field(init=False)
    loss: np.ndarray = field(init=False)
    n: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.gain = np.zeros(len(self.thresholds), dtype=np.int64)
        self.loss = np.zeros(len(self.thresholds), dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Add the finite values of a float64 array."""
        v = values[np.isfinite(values)]
        if not len(v):
            return
        idx = ((v - self.lo) * (self.bins / (self.hi - self.lo))).astype(np.int64)
        self.counts += np.bincount(np.clip(idx, 0, self.bins - 1), minlength=self.bins)
        self.n += len(v)
        self.total += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        if self.thresholds:
            t = np.asarray(self.thresholds)
            s = np.sort(v)
            self.gain += len(s) - np.searchsorted(s, t, side="left")
            self.loss += np.searchsorted(s, -t, side="right")

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")


class PositionTrack:
    """The max |diff| of one contig's scored variants per position bin: float64 ``maxima``
    [n_bins] (NaN = none) and int64 ``counts``, bins of ``width`` bp from position 1. The width
    starts at length / n_bins (1 kb when the length is unknown) and doubles when a position
    falls beyond the last bin."""

    def __init__(self, length: int | None, n_bins: int = 1024) -> None:
        self.length = length
        self.n_bins = n_bins
        self.width = max(1, -(-length // n_bins)) if length else 1024
        self.maxima = np.full(n_bins, np.nan)
        self.counts = np.zeros(n_bins, dtype=np.int64)
        self.last = 0

    def add(self, pos: np.ndarray, mad: np.ndarray) -> None:
        """Add int64 positions (1-based) with their max |diff| (finite values only)."""
        if not len(pos):
            return
        self.last = max(self.last, int(pos.max()))
        while self.last > self.width * self.n_bins:
            half = self.n_bins // 2
            pairs = self.maxima.reshape(half, 2)
            with np.errstate(invalid="ignore"):
                merged = np.fmax(pairs[:, 0], pairs[:, 1])
            self.maxima = np.concatenate([merged, np.full(half, np.nan)])
            self.counts = np.concatenate(
                [self.counts.reshape(half, 2).sum(1), np.zeros(half, np.int64)]
            )
            self.width *= 2
        idx = np.clip((pos - 1) // self.width, 0, self.n_bins - 1)
        np.fmax.at(self.maxima, idx, mad)
        np.add.at(self.counts, idx, 1)

    @property
    def span(self) -> int:
        """The positions the track covers: the contig length, or the last position seen."""
        return max(self.length or 0, self.last, 1)
