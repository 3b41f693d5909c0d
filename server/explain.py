"""ExplainVariant: in-silico saturation mutagenesis (ISM) around a variant, on the ref and the alt
background, built as whole arrays and predicted through the same batcher as every score.

For a variant at 1-based ``pos`` and half-width W, the P = 2W + 1 genome positions
``pos - W .. pos + W`` are each set to every base on the ref window and on the alt window (the
variant's own windows: ``varfx.core.windows`` rule, alleles as written), and

    ism[b][p, base, f] = p_f(background b with position p set to base) - p_f(background b)

(probabilities; 0 where base is the background's own base, and on the alt background for genome
bases a deletion removed). Rows sent to the model: the variant's own ref/alt rows (its
``VariantScore``), then for each background the background itself and its 3 * P mutants (4 * P
where the background base is N); with reverse complements all of them again, averaged per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from varfx.core.tokens import reverse_complement
from varfx.core.windows import WindowRule
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.errors import InvalidRequestError
from varfx.server.genome import Genome
from varfx.server.motifs import MotifCallRow, MotifDatabase, call_motifs
from varfx.server.scoring import ScoreResult, ScoringOptions, ScoringPlan, plan_variants

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "ExplainPlan",
    "ExplainResult",
    "motif_feature",
    "plan_explain",
]

DEFAULT_WINDOW = 20
MAX_WINDOW = 500


@dataclass(frozen=True)
class ExplainResult:
    """ISM of one variant: ``ref_ism``/``alt_ism`` float32 [P, 4, F]; ``score`` its own scores;
    ``ref_bases``/``alt_bases`` the background base at each of the P positions ("ACGTN", "-"
    where that background has none; "" when the variant was not scored)."""

    positions: np.ndarray
    features: tuple[str, ...]
    ref_ism: np.ndarray
    alt_ism: np.ndarray
    score: ScoreResult
    ref_bases: str = ""
    alt_bases: str = ""


@dataclass(frozen=True)
class _Background:
    """One background window and its mutants: ``index`` int64 [P] window index of each
    position (-1: not in this window), ``mask`` bool [P, 4] which (position, base) are rows."""

    tokens: np.ndarray
    index: np.ndarray
    mask: np.ndarray

    @classmethod
    def of(cls, tokens: np.ndarray, index: np.ndarray) -> _Background:
        inside = (index >= 0) & (index < len(tokens))
        index = np.where(inside, index, -1)
        own = np.where(inside, tokens[np.clip(index, 0, len(tokens) - 1)], 255)
        mask = inside[:, None] & (np.arange(4)[None, :] != own[:, None])
        return cls(tokens, index, mask)

    def bases(self) -> str:
        """The background's own base at each of the P positions ("ACGTN"; "-": not in it)."""
        own = self.tokens[np.clip(self.index, 0, len(self.tokens) - 1)]
        chars = np.frombuffer(b"ACGTN", dtype=np.uint8)[np.minimum(own, 4)]
        return np.where(self.index >= 0, chars, ord("-")).astype(np.uint8).tobytes().decode()

    def rows(self) -> np.ndarray:
        """uint8 [1 + m, L]: the background, then its m mutants (``mask`` order)."""
        p, base = np.nonzero(self.mask)
        out = np.repeat(self.tokens[None, :], 1 + len(p), axis=0)
        out[1 + np.arange(len(p)), self.index[p]] = base.astype(np.uint8)
        return out

    def ism(self, probs: np.ndarray) -> np.ndarray:
        """float32 [P, 4, F] from the predictions float32 [1 + m, F] of ``rows()``."""
        out = np.zeros(self.mask.shape + (probs.shape[1],), dtype=np.float32)
        out[self.mask] = probs[1:] - probs[0]
        return out


@dataclass(frozen=True)
class ExplainPlan:
    """The model rows of one explanation and how to turn their predictions into the result.

    Attributes:
        variant: the variant's own ScoringPlan (its ref/alt rows come first in ``tokens``).
        tokens: uint8 [m, L], every row to predict.
        positions: int64 [P] 1-based genome positions mutated.
    """

    variant: ScoringPlan
    tokens: np.ndarray
    positions: np.ndarray
    ref: _Background | None
    alt: _Background | None
    reverse_complement: bool
    center: int
    ref_len: int
    alt_len: int

    @property
    def ok(self) -> bool:
        return self.ref is not None

    @property
    def pairs(self) -> np.ndarray:
        """int64 [m]: the row of ``tokens`` each row is a mutant (or the variant's alt) of; -1
        for backgrounds and reference rows (local recomputation, ``server/local_compute.py``)."""
        own = self.variant.pairs
        if self.ref is None or self.alt is None:
            return own
        parts, at = [own], len(own)
        for _ in range(2 if self.reverse_complement else 1):
            for bg in (self.ref, self.alt):
                n = int(bg.mask.sum())
                parts += [np.array([-1], dtype=np.int64), np.full(n, at, dtype=np.int64)]
                at += 1 + n
        return np.concatenate(parts)

    def finish(self, probs: np.ndarray) -> ExplainResult:
        """The ISM and the variant's scores from the predictions float32 [m, F_model]."""
        if len(probs) != len(self.tokens):
            raise ValueError(f"{len(probs)} predictions for {len(self.tokens)} rows")
        own = len(self.variant.tokens)
        score = self.variant.finish(probs[:own])
        features = self.variant.features
        if self.ref is None or self.alt is None:
            empty = np.zeros((len(self.positions), 4, len(features)), dtype=np.float32)
            return ExplainResult(self.positions, features, empty, empty.copy(), score)
        rest = probs[own:]
        if self.reverse_complement:
            half = len(rest) // 2
            rest = (rest[:half] + rest[half:]) / 2
        if self.variant.select is not None:
            rest = rest[:, self.variant.select]
        n_ref = 1 + int(self.ref.mask.sum())
        return ExplainResult(
            self.positions,
            features,
            self.ref.ism(rest[:n_ref]),
            self.alt.ism(rest[n_ref:]),
            score,
            self.ref.bases(),
            self.alt.bases(),
        )

    def motif_calls(
        self,
        db: MotifDatabase,
        top: int,
        result: ExplainResult | None = None,
        feature: int = -1,
    ) -> list[tuple[MotifCallRow, int]]:
        """Motif calls around the variant and the 1-based genome position of each match.

        With ``result`` (``finish``'s) and a ``feature`` index into its features, calls are
        weighted by that feature's ISM importance (max over bases of |ISM| at each position, on
        the ref and on the alt background; ``server/motifs.py``); else by sequence alone."""
        if self.ref is None or self.alt is None:
            return []
        c, width = self.center, int(max(m.width for m in db.motifs))
        lo = max(0, c - width)
        ref = self.ref.tokens[lo : c + self.ref_len + width]
        alt = self.alt.tokens[lo : c + self.alt_len + width]
        importance = None
        if result is not None and 0 <= feature < len(result.features):
            importance = (
                _importance(result.ref_ism[:, :, feature], self.ref.index - lo, len(ref)),
                _importance(result.alt_ism[:, :, feature], self.alt.index - lo, len(alt)),
            )
        calls = call_motifs(
            db,
            ref,
            alt,
            (c - lo, c - lo + self.ref_len),
            (c - lo, c - lo + self.alt_len),
            top,
            importance,
        )
        first = int(self.positions[len(self.positions) // 2])  # the variant's POS
        return [(call, first - c + lo + call.start) for call in calls]


def _importance(ism: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """float64 [n]: max over bases of |ism| (float [P, 4]) at each sequence index that a
    position maps to (``index`` int [P], -1 or out of range: none); NaN elsewhere."""
    out = np.full(n, np.nan)
    keep = (index >= 0) & (index < n)
    out[index[keep]] = np.abs(ism[keep]).max(axis=1)
    return out


def motif_feature(score: ScoreResult) -> int:
    """The feature index whose ISM weights the motif calls: the variant's most unusual feature
    (max quantile) when calibrated, else its largest |diff|; -1 when it was not scored."""
    if not len(score.ok_index):
        return -1
    if score.max_quantile_index is not None and len(score.max_quantile_index):
        return int(score.max_quantile_index[0])
    return int(score.max_index[0])


def plan_explain(
    genome: Genome,
    variant: pb.Variant,
    *,
    length: int,
    features: tuple[str, ...],
    model: str,
    window: int,
    options: ScoringOptions,
) -> ExplainPlan:
    """The rows of an explanation: the variant's own, then ISM of the ref and alt backgrounds."""
    if not 0 < window <= MAX_WINDOW or 2 * window + 1 > length:
        raise InvalidRequestError(
            f"window {window} is outside 1..{min(MAX_WINDOW, (length - 1) // 2)} (the model "
            f"window is {length} bases; ISM covers pos - window .. pos + window)"
        )
    plan = plan_variants(
        genome, [variant], length=length, features=features, model=model, options=options
    )
    positions = np.arange(variant.pos - window, variant.pos + window + 1, dtype=np.int64)
    c = WindowRule(length).center
    r, a = len(variant.ref), len(variant.alt)
    if plan.windows.status[0] != pb.OK:
        return ExplainPlan(
            plan, plan.tokens, positions, None, None, options.reverse_complement, c, r, a
        )
    offset = positions - variant.pos
    ref_index = c + offset
    keep = min(r, a)
    alt_index = np.where(offset < keep, c + offset, c + offset + (a - r))
    alt_index[(offset >= keep) & (offset < r)] = -1  # bases the deletion removed
    ref_bg = _Background.of(plan.windows.ref[0], ref_index)
    alt_bg = _Background.of(plan.windows.alt[0], alt_index)
    mutants = np.concatenate([ref_bg.rows(), alt_bg.rows()])
    parts = [plan.tokens, mutants]
    if options.reverse_complement:
        parts.append(reverse_complement(mutants))
    return ExplainPlan(
        plan,
        np.concatenate(parts),
        positions,
        ref_bg,
        alt_bg,
        options.reverse_complement,
        c,
        r,
        a,
    )
