"""Human-like background sequence for the simulated genome.

A 5th-order Markov chain whose transition counts were estimated once from GRCh38
chr1:1-1,000,000 (``data/background_markov5.json``, see ``data/build_data.py``). That fragment is
GC-rich (45.7% GC) compared with the genome (41%), so the sampler tilts the transition
probabilities towards A/T by ``at_weight`` (1.15 gives ~41-42% GC); CpG stays depleted
(observed/expected ~0.3) because the chain keeps the fragment's context dependence.

Sampling is vectorized across many independent chains (one numpy step per base of a chain, each
step advancing every chain at once); the chains are concatenated. On top of the chain the
generator lays low-complexity repeats (micro-satellites and poly-A runs) and N gaps.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import numpy as np

__all__ = ["add_gaps", "add_repeats", "markov_sequence"]

_CHAIN_LENGTH = 2_000
_REPEAT_UNITS = ("A", "T", "CA", "TG", "AT", "GGAA", "TTTC", "AAAT", "CAG", "GT", "AAAG")


@cache
def _transition_cdf(at_weight: float) -> tuple[int, np.ndarray, np.ndarray]:
    text = resources.files("varfx.training").joinpath("data/background_markov5.json").read_text()
    data = json.loads(text)
    order = int(data["order"])
    counts = np.asarray(data["counts"], dtype=np.float64) + 1.0  # [4**order, 4]
    counts *= np.array([at_weight, 1.0, 1.0, at_weight])
    probs = counts / counts.sum(axis=1, keepdims=True)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    # start contexts drawn from the k-mer frequencies of the fragment
    ctx_freq = counts.sum(axis=1)
    return order, cdf, ctx_freq / ctx_freq.sum()


def markov_sequence(rng: np.random.Generator, length: int, at_weight: float = 1.15) -> np.ndarray:
    """uint8 [length] tokens (0-3) from the shipped 5th-order Markov chain.

    Args:
        rng: random generator (the only source of randomness).
        length: number of bases.
        at_weight: multiplier on A and T transition counts before normalizing (1.0 = as estimated).
    """
    order, cdf, start_p = _transition_cdf(float(at_weight))
    n_chains = max(1, -(-length // _CHAIN_LENGTH))
    steps = -(-length // n_chains)
    n_ctx = 4**order
    ctx = rng.choice(n_ctx, size=n_chains, p=start_p)
    out = np.empty((n_chains, steps), dtype=np.uint8)
    u = rng.random((steps, n_chains))
    for s in range(steps):  # one vectorized step advances all chains
        nxt = (u[s][:, None] > cdf[ctx]).sum(axis=1)
        out[:, s] = nxt
        ctx = (ctx * 4 + nxt) % n_ctx
    return out.reshape(-1)[:length].copy()


def add_repeats(
    rng: np.random.Generator, tokens: np.ndarray, per_mb: float
) -> list[tuple[int, int, str]]:
    """Overwrite random stretches with low-complexity repeats, in place.

    Returns the list of (start, end, unit) 0-based half-open intervals written, sorted by start.
    Repeats are 20-60 bp micro-satellites (``(CA)n``, ``(GGAA)n``, poly-A ...) with ~5% of
    their bases mutated, as in real genomes.
    """
    n = max(0, round(len(tokens) * per_mb / 1e6))
    out: list[tuple[int, int, str]] = []
    if n == 0 or len(tokens) < 200:
        return out
    starts = np.sort(rng.integers(0, len(tokens) - 100, size=n))
    lengths = rng.integers(20, 61, size=n)
    units = rng.integers(0, len(_REPEAT_UNITS), size=n)
    for start, ln, ui in zip(starts.tolist(), lengths.tolist(), units.tolist(), strict=True):
        unit = _REPEAT_UNITS[ui]
        seq = np.frombuffer((unit * (ln // len(unit) + 1))[:ln].encode(), dtype=np.uint8)
        tok = np.searchsorted(np.frombuffer(b"ACGT", dtype=np.uint8), seq).astype(np.uint8)
        mut = rng.random(ln) < 0.05
        tok[mut] = rng.integers(0, 4, size=int(mut.sum()))
        tokens[start : start + ln] = tok
        out.append((start, start + ln, unit))
    return out


def add_gaps(tokens: np.ndarray, end_gap: int, internal_gap: int) -> list[tuple[int, int]]:
    """Write N (token 4) at both contig ends and one internal gap at ~60% of the length, in place.

    Returns the (start, end) 0-based half-open gap intervals.
    """
    n = len(tokens)
    gaps: list[tuple[int, int]] = []
    if end_gap > 0:
        gaps.append((0, min(end_gap, n)))
    if internal_gap > 0 and n > 2 * end_gap + 4 * internal_gap:
        s = int(n * 0.6)
        gaps.append((s, s + internal_gap))
    if end_gap > 0:
        gaps.append((max(0, n - end_gap), n))
    for s, e in gaps:
        tokens[s:e] = 4
    return gaps
