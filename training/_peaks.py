"""Peak calls from grammar sites: clustering, widths, signal, and seeded noise.

Sites of one feature closer than ``MERGE_GAP`` bp form one peak. Each peak spans 200-400 bp around
the cluster centre (and always covers every site of the cluster with 50 bp to spare). Noise, seeded:
a fraction of clusters gets no peak (*missed*, still listed in ``grammar_sites.tsv`` with
in_peak = 0) and a fraction of extra *noise* peaks sits at random places far from any site of the
feature; noise peaks are named ``<feature>.noise.<k>`` and have a low signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MERGE_GAP", "Peak", "call_peaks"]

MERGE_GAP = 150
_NOISE_MIN_DISTANCE = 1_000


@dataclass(frozen=True)
class Peak:
    """One narrowPeak row (0-based half-open, summit offset from start)."""

    start: int
    end: int
    signal: float
    summit: int
    noise: bool


def call_peaks(
    rng: np.random.Generator,
    sites: np.ndarray,
    valid: np.ndarray,
    missed_fraction: float,
    noise_fraction: float,
) -> tuple[list[Peak], np.ndarray]:
    """Peaks of one feature on one chromosome.

    Args:
        rng: random generator.
        sites: int64 [n] sorted site centres (0-based).
        valid: bool [chrom_length], True where the base is not N.
        missed_fraction: share of site clusters that get no peak.
        noise_fraction: expected number of noise peaks as a share of the peaks (Poisson).

    Returns:
        (peaks sorted by start, in_peak bool [n] per site).
    """
    length = len(valid)
    in_peak = np.zeros(len(sites), dtype=bool)
    peaks: list[Peak] = []
    if len(sites):
        breaks = np.nonzero(np.diff(sites) > MERGE_GAP)[0] + 1
        bounds = np.concatenate([[0], breaks, [len(sites)]])
        n_clusters = len(bounds) - 1
        missed = rng.random(n_clusters) < missed_fraction
        half = rng.integers(100, 201, size=n_clusters)
        jitter = rng.integers(-20, 21, size=n_clusters)
        strength = rng.lognormal(0.0, 0.3, size=n_clusters)
        for c in range(n_clusters):  # loop over peaks (not bases)
            lo, hi = int(bounds[c]), int(bounds[c + 1])
            if missed[c]:
                continue
            in_peak[lo:hi] = True
            first, last = int(sites[lo]), int(sites[hi - 1])
            centre = (first + last) // 2 + int(jitter[c])
            start = max(0, min(centre - int(half[c]), first - 50))
            end = min(length, max(centre + int(half[c]), last + 50))
            signal = round(float(8.0 * (hi - lo) ** 0.5 * strength[c]), 3)
            summit = min(max(centre, start), end - 1) - start
            peaks.append(Peak(start, end, signal, summit, False))
    n_noise = int(rng.poisson(noise_fraction * len(peaks)))
    tries = 0
    while n_noise > 0 and tries < 100 * (n_noise + 1):
        tries += 1
        centre = int(rng.integers(250, max(251, length - 250)))
        if len(sites) and np.abs(sites - centre).min() < _NOISE_MIN_DISTANCE:
            continue
        half_w = int(rng.integers(100, 201))
        start, end = centre - half_w, centre + half_w
        if start < 0 or end > length or not valid[start:end].all():
            continue
        signal = round(float(rng.uniform(2.0, 5.0)), 3)
        peaks.append(Peak(start, end, signal, half_w, True))
        n_noise -= 1
    peaks.sort(key=lambda p: (p.start, p.end))
    return peaks, in_peak
