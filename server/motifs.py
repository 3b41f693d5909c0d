"""The motif database of ExplainVariant, and motif calls for one variant.

Database: JASPAR CORE vertebrates, the latest version of every matrix, read from the SQLite
file that the ``pyjaspar`` package bundles (the newest release it holds, e.g. JASPAR2026: about
a thousand matrices; ``pip install 'varfx[explain]'``); without pyjaspar, the ten JASPAR2024
matrices shipped in ``varfx.training/data`` (the motifs ``varfx simulate`` plants). Matrices are
scanned with ``varfx.training.motifs`` (log2-odds in bits against a uniform background,
JASPAR's 0.8 pseudocount; numpy only).

A motif call compares, for each motif and strand, the best match among the windows that overlap
the variant's bases, in the ref and in the alt sequence. Scores below the matrix's p = 1e-4
score t (uniform background) count as t, so a call is a match gained or lost above that line
(a weak match made weaker is no call). Each score is also read as a *relative score*, the
fraction of the matrix's range, (score - min) / (max - min) (JASPAR's and TFBSTools' relative
score), so that a long matrix does not win by having more bits to lose: ``relative_change`` =
|rel(max(alt, t)) - rel(max(ref, t))|, 0..1.

Calls are ranked by ``relative_change * model_importance`` when the caller gives the model's
per-base importance (ExplainVariant: the ISM of the explained feature; ``call_motifs``), else by
``relative_change`` alone. ``model_importance`` is the mean importance over the matched bases
that the importance covers, on the sequence holding the better of the two matches (a lost
match is read on the ref, a gained one on the alt), divided by the largest importance over both
sequences: 0..1, 1 when the model's most important bases are the match. A matrix whose match
changes but whose bases the model ignores ranks low (attribution-guided motif annotation). On a
simulated development genome this named the planted TF's family more often than ranking by the
change in bits, in relative score alone, or in log10 p-value (docs/models.md, "Validation on
ground truth").
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from varfx.training.motifs import Motif, MotifScanner, load_motifs

__all__ = ["MotifCallRow", "MotifDatabase", "call_motifs", "jaspar_sqlite", "motif_database"]

log = logging.getLogger(__name__)

#: Motif match p-value (uniform background) a call must reach in the ref or the alt.
CALL_PVALUE = 1e-4


@dataclass(frozen=True)
class MotifDatabase:
    """Matrices to scan, their p < CALL_PVALUE thresholds (bits) and where they came from."""

    name: str
    motifs: tuple[Motif, ...]
    thresholds: np.ndarray  # float32 [n_motifs]
    scanner: MotifScanner
    score_min: np.ndarray  # float64 [n_motifs]: each matrix's lowest and highest score (bits)
    score_max: np.ndarray


@dataclass(frozen=True)
class MotifCallRow:
    """One motif call: 0-based start of the best match in the sequence given to ``call_motifs``."""

    name: str
    jaspar_id: str
    strand: str
    start: int
    ref_score: float
    alt_score: float
    width: int  # motif length in bp: the match covers [start, start + width)
    relative_change: float = 0.0  # |change| in relative score (fraction of the matrix's range)
    model_importance: float = 1.0  # mean importance over the match / the largest (0..1)


def jaspar_sqlite() -> Path | None:
    """The newest JASPAR SQLite file bundled by pyjaspar, or None without pyjaspar."""
    try:
        data = resources.files("pyjaspar").joinpath("data")
    except ModuleNotFoundError:
        return None
    files = sorted(
        (Path(str(p)) for p in data.iterdir() if p.name.endswith(".sqlite")), key=lambda p: p.name
    )
    return files[-1] if files else None


def _read_jaspar(path: Path) -> tuple[Motif, ...]:
    """CORE vertebrate matrices, latest version of each, from a JASPAR SQLite file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT m.ID, m.BASE_ID, m.VERSION, m.NAME FROM MATRIX m JOIN MATRIX_ANNOTATION a "
            "ON a.ID = m.ID WHERE m.COLLECTION = 'CORE' AND a.TAG = 'tax_group' "
            "AND a.VAL = 'vertebrates'"
        ).fetchall()
        latest: dict[str, tuple[int, int, str]] = {}
        for mid, base, version, name in rows:
            if base not in latest or version > latest[base][0]:
                latest[base] = (version, mid, name)
        ids = {mid: (f"{base}.{v}", name) for base, (v, mid, name) in latest.items()}
        counts: dict[int, dict[tuple[str, int], float]] = {}
        for mid, row, col, val in db.execute("SELECT ID, row, col, val FROM MATRIX_DATA"):
            if mid in ids:
                counts.setdefault(mid, {})[(row, col)] = val
    motifs = []
    for mid in sorted(ids, key=lambda m: ids[m][0]):
        cells = counts.get(mid, {})
        width = max((c for _, c in cells), default=0)
        pfm = np.array(
            [[cells.get((b, j), 0.0) for b in "ACGT"] for j in range(1, width + 1)], np.float64
        )
        if width:
            motifs.append(Motif(ids[mid][0], ids[mid][1], pfm))
    return tuple(motifs)


@cache
def motif_database(source: str = "auto") -> MotifDatabase:
    """The database ("auto": JASPAR via pyjaspar when installed, else the shipped subset;
    "shipped": the shipped subset). Built once per process (about a second for JASPAR)."""
    path = jaspar_sqlite() if source == "auto" else None
    if path is not None:
        motifs = _read_jaspar(path)
        name = f"{path.stem} CORE vertebrates ({len(motifs)} matrices)"
    else:
        motifs = load_motifs()
        name = f"shipped JASPAR2024 subset ({len(motifs)} matrices)"
    thresholds = np.array([m.threshold(CALL_PVALUE) for m in motifs], dtype=np.float32)
    lows = np.array([m.log_odds.min(axis=1).sum() for m in motifs], dtype=np.float64)
    highs = np.array([m.log_odds.max(axis=1).sum() for m in motifs], dtype=np.float64)
    log.info("motif database: %s", name)
    return MotifDatabase(name, motifs, thresholds, MotifScanner(motifs), lows, highs)


def _best(
    scores: np.ndarray, widths: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best score [2M] and its start over windows overlapping [lo, hi) of scores [2M, n]."""
    n = scores.shape[1]
    starts = np.arange(n)
    w = np.repeat(widths, 2)[:, None]
    covers = (starts[None, :] < hi) & (starts[None, :] + w > lo) & (starts[None, :] + w <= n)
    masked = np.where(covers, scores, -np.inf)
    at = masked.argmax(axis=1)
    return masked[np.arange(len(at)), at], at


def _span_importance(importance: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Mean of ``importance`` (float [n], NaN where not measured) over [start, start + width)
    for each row, counting only measured bases (0 where none is)."""
    measured = np.isfinite(importance)
    sums = np.concatenate([[0.0], np.cumsum(np.where(measured, importance, 0.0))])
    counts = np.concatenate([[0], np.cumsum(measured)])
    hi = np.minimum(starts + widths, len(importance))
    n = counts[hi] - counts[starts]
    return np.where(n > 0, (sums[hi] - sums[starts]) / np.maximum(n, 1), 0.0)


def call_motifs(
    db: MotifDatabase,
    ref: np.ndarray,
    alt: np.ndarray,
    ref_span: tuple[int, int],
    alt_span: tuple[int, int],
    top: int,
    importance: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[MotifCallRow]:
    """The ``top`` motifs whose best match overlapping the variant changes most.

    Args:
        ref, alt: uint8 tokens of the ref and alt sequences around the variant.
        ref_span, alt_span: [lo, hi) of the variant's bases in each (an insertion's or a
            deletion's span may be empty on one side: the base before it is used).
        importance: optional float [len(ref)] and [len(alt)], the model's importance of each
            base (>= 0, NaN where not measured), e.g. max over bases of |ISM|.

    Returns:
        Calls ranked by relative_change * model_importance (relative_change alone without
        ``importance``, or when it is 0 everywhere); ``start`` is in ref coordinates when the
        ref match is the better one, else in alt coordinates.
    """
    widths = np.array([m.width for m in db.motifs], dtype=np.int64)
    spans = [(lo, max(hi, lo + 1)) for lo, hi in (ref_span, alt_span)]
    best_r, at_r = _best(db.scanner.scan(ref), widths, *spans[0])
    best_a, at_a = _best(db.scanner.scan(alt), widths, *spans[1])
    t = np.repeat(db.thresholds.astype(np.float64), 2)
    low, high = np.repeat(db.score_min, 2), np.repeat(db.score_max, 2)
    bits = np.abs(np.maximum(best_a, t) - np.maximum(best_r, t))
    change = bits / np.maximum(high - low, 1e-9)  # relative score change, 0..1
    change[~np.isfinite(change)] = 0.0
    ref_better = best_r >= best_a
    weight = np.ones_like(change)
    if importance is not None:
        imp_r, imp_a = (np.asarray(x, dtype=np.float64) for x in importance)
        if len(imp_r) != len(ref) or len(imp_a) != len(alt):
            raise ValueError(
                f"importance of {len(imp_r)} and {len(imp_a)} bases for sequences of "
                f"{len(ref)} and {len(alt)}"
            )
        top_imp = max(np.nanmax(imp_r, initial=0.0), np.nanmax(imp_a, initial=0.0))
        if top_imp > 0:
            w2 = np.repeat(widths, 2)
            on_ref = _span_importance(imp_r, at_r, w2)
            on_alt = _span_importance(imp_a, at_a, w2)
            weight = np.where(ref_better, on_ref, on_alt) / top_imp
    key = (change * weight).reshape(-1, 2)
    size = change.reshape(-1, 2)
    # per motif: the strand whose weighted change is largest (ties: the larger change)
    strand = np.lexsort((-size, -key), axis=1)[:, 0] if len(widths) else np.zeros(0, np.int64)
    rows = np.arange(len(widths)) * 2 + strand
    ranked = key[np.arange(len(widths)), strand]
    passing = np.flatnonzero(size[np.arange(len(widths)), strand] > 0)
    order = passing[np.lexsort((-size[passing, strand[passing]], -ranked[passing]))][:top]
    calls = []
    for k in order.tolist():
        r = rows[k]
        better = bool(ref_better[r])
        calls.append(
            MotifCallRow(
                name=db.motifs[k].name,
                jaspar_id=db.motifs[k].id,
                strand="+-"[int(strand[k])],
                start=int(at_r[r] if better else at_a[r]),
                ref_score=float(best_r[r]),
                alt_score=float(best_a[r]),
                width=int(widths[k]),
                relative_change=float(change[r]),
                model_importance=float(weight[r]),
            )
        )
    return calls
