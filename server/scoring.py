"""The scoring verb: variants in, per-feature score arrays out, with no gRPC in sight.

``score(model, genome, variants, options)`` is what a notebook, an evaluation script or a
benchmark calls; the gRPC servicer runs the same three steps with the model's dynamic batcher in
the middle:

1. ``plan_variants`` (or ``plan_sequences``) builds the windows and the token rows to run:
   the ref window of each distinct site once (a multi-allelic site shares it), every alt window,
   and their reverse complements when asked;
2. the rows go through the model (``predict(tokens) -> probabilities``);
3. ``ScoringPlan.finish(probs)`` averages strands, picks features and computes the scores.

Scores (per variant and feature f, p = the model's probability): ``ref = p(ref window)``,
``alt = p(alt window)``, ``diff = alt - ref``, ``log2fc = log2 odds(alt) - log2 odds(ref)``
(p clipped to [1e-6, 1 - 1e-6]), and ``max_abs_diff`` / ``max_index`` over features.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from varfx.core.tokens import reverse_complement
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.calibration import Calibration, variant_classes
from varfx.server.device_windows import DeviceWindows, WindowRows
from varfx.server.errors import CalibrationUnavailableError, InvalidRequestError
from varfx.server.genome import Genome
from varfx.server.local_compute import changed_span
from varfx.server.refcache import RefCache
from varfx.server.scores import compute_scores
from varfx.server.windows import (
    SITE_SHIFT,
    VariantWindows,
    build_windows,
    described_rows,
    sequence_windows,
)

__all__ = [
    "ALL_KINDS",
    "CALIBRATED_KINDS",
    "KIND_FIELDS",
    "ScoreResult",
    "ScoringOptions",
    "ScoringPlan",
    "plan_sequences",
    "plan_variants",
    "score",
    "windows_per_input",
]

#: Every score kind, in API order.
ALL_KINDS: tuple[int, ...] = (
    pb.SCORE_KIND_REF,
    pb.SCORE_KIND_ALT,
    pb.SCORE_KIND_DIFF,
    pb.SCORE_KIND_LOG2FC,
)
#: The kinds ranked against the model's calibration background (server/calibration.py).
CALIBRATED_KINDS: tuple[int, ...] = (
    pb.SCORE_KIND_QUANTILE,
    pb.SCORE_KIND_SIGNED_QUANTILE,
    pb.SCORE_KIND_PVALUE,
)


#: Each ScoreKind's field: the ScoreResult attribute and the response field of the same name.
KIND_FIELDS: dict[int, str] = {
    pb.SCORE_KIND_REF: "ref",
    pb.SCORE_KIND_ALT: "alt",
    pb.SCORE_KIND_DIFF: "diff",
    pb.SCORE_KIND_LOG2FC: "log2fc",
    pb.SCORE_KIND_QUANTILE: "quantile",
    pb.SCORE_KIND_SIGNED_QUANTILE: "signed_quantile",
    pb.SCORE_KIND_PVALUE: "pvalue",
}


@dataclass(frozen=True)
class ScoringOptions:
    """How to score (the typed form of ``varfx.v1.ScoreOptions``).

    Attributes:
        kinds: score kinds wanted (``varfx_pb2.ScoreKind``; all four by default).
        reverse_complement: average each window's prediction with its reverse complement's.
        ref_policy: ``varfx_pb2.RefPolicy`` for a REF that does not match the genome.
        features: return only these features, in this order (empty: all).
        indels_as_written: build indel windows without normalising them first.
    """

    kinds: tuple[int, ...] = ALL_KINDS
    reverse_complement: bool = False
    ref_policy: int = pb.REF_POLICY_STRICT
    features: tuple[str, ...] = ()
    indels_as_written: bool = False

    @classmethod
    def from_proto(cls, options: pb.ScoreOptions) -> ScoringOptions:
        asked = set(options.scores)
        kinds = tuple(k for k in ALL_KINDS + CALIBRATED_KINDS if k in asked) or ALL_KINDS
        return cls(
            kinds=kinds,
            reverse_complement=bool(options.reverse_complement),
            ref_policy=int(options.ref_policy) or pb.REF_POLICY_STRICT,
            features=tuple(options.features),
            indels_as_written=bool(options.indels_as_written),
        )

    @property
    def calibrated(self) -> bool:
        """Whether any calibrated kind (QUANTILE, SIGNED_QUANTILE, PVALUE) is asked for."""
        return any(k in CALIBRATED_KINDS for k in self.kinds)


@dataclass(frozen=True)
class ScoreResult:
    """Scores of n inputs over F features, in input order.

    Attributes:
        features: the F feature names the columns refer to.
        status: int32 [n] ``varfx_pb2.StatusCode`` (0 = OK).
        messages: n strings ('' or why not scored / a warning); ``noted``: indices with one.
        ref, alt, diff, log2fc: float32 [k, F] for the k OK inputs (``ok_index``), in order;
            a kind the options did not ask for is [k, 0] (diff is always there).
        max_abs_diff: float32 [k]; max_index: int64 [k] feature index of it.
        ok_index: int64 [k]: which inputs the score rows belong to.
        quantile, signed_quantile, pvalue: float32 [k, F] calibrated kinds, or None when not
            computed (``with_calibration``); max_quantile: float32 [k], max_quantile_index:
            int64 [k] the max over features of the quantile and its feature index.
        variant_class: int8 [k] each OK input's class (``calibration.variant_classes``:
            substitution, insertion, deletion, from the alleles as scored), whose null the
            calibrated kinds rank it against; None: all substitutions (sequence pairs).
    """

    features: tuple[str, ...]
    status: np.ndarray
    messages: list[str]
    noted: list[int]
    ref: np.ndarray
    alt: np.ndarray
    diff: np.ndarray
    log2fc: np.ndarray
    max_abs_diff: np.ndarray
    max_index: np.ndarray
    ok_index: np.ndarray
    quantile: np.ndarray | None = None
    signed_quantile: np.ndarray | None = None
    pvalue: np.ndarray | None = None
    max_quantile: np.ndarray | None = None
    max_quantile_index: np.ndarray | None = None
    variant_class: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.status)

    def array(self, kind: int) -> np.ndarray:
        """The float32 [k, F] array of a ``varfx_pb2.ScoreKind`` (a calibrated kind only after
        ``with_calibration``)."""
        value = getattr(self, KIND_FIELDS[kind])
        if value is None:
            raise ValueError(f"score kind {kind} was not computed (no calibration applied)")
        return value

    def with_calibration(self, calibration: Calibration) -> ScoreResult:
        """These scores with the calibrated kinds added, each row ranked against the null of
        its ``variant_class`` in ``calibration``; a row whose class has no null of its own is
        ranked against the calibration's primary one and its message says so."""
        columns = calibration.columns(self.features)
        classes = self.variant_class
        quantile = calibration.quantile(self.diff, columns, classes)
        messages, noted = self.messages, self.noted
        fallbacks = calibration.fallbacks(classes) if classes is not None else []
        if fallbacks:
            messages, marked = list(messages), set(noted)
            for rows, note in fallbacks:
                for i in self.ok_index[rows].tolist():
                    messages[i] = f"{messages[i]}; {note}" if messages[i] else note
                    marked.add(i)
            noted = sorted(marked)
        if quantile.shape[1]:
            max_index = quantile.argmax(axis=1).astype(np.int64)
            max_quantile = quantile[np.arange(len(quantile)), max_index]
        else:
            max_index = np.zeros(len(quantile), dtype=np.int64)
            max_quantile = np.zeros(len(quantile), dtype=np.float32)
        return replace(
            self,
            messages=messages,
            noted=noted,
            quantile=quantile,
            signed_quantile=calibration.signed_quantile(self.diff, columns, classes),
            pvalue=calibration.pvalue(self.diff, columns, classes),
            max_quantile=max_quantile.astype(np.float32),
            max_quantile_index=max_index,
        )

    @classmethod
    def concat(cls, parts: Sequence[ScoreResult]) -> ScoreResult:
        """The results of consecutive parts of one request, as one (inputs in order)."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts])

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(
            features=parts[0].features,
            status=np.concatenate([p.status for p in parts]),
            messages=[m for p in parts for m in p.messages],
            noted=[int(i) + int(o) for p, o in zip(parts, offsets, strict=False) for i in p.noted],
            ref=np.concatenate([p.ref for p in parts]),
            alt=np.concatenate([p.alt for p in parts]),
            diff=np.concatenate([p.diff for p in parts]),
            log2fc=np.concatenate([p.log2fc for p in parts]),
            max_abs_diff=np.concatenate([p.max_abs_diff for p in parts]),
            max_index=np.concatenate([p.max_index for p in parts]),
            ok_index=np.concatenate([p.ok_index + o for p, o in zip(parts, offsets, strict=False)]),
            quantile=cat("quantile"),
            signed_quantile=cat("signed_quantile"),
            pvalue=cat("pvalue"),
            max_quantile=cat("max_quantile"),
            max_quantile_index=cat("max_quantile_index"),
            variant_class=None
            if all(p.variant_class is None for p in parts)
            else np.concatenate(
                [
                    np.zeros(len(p.ok_index), np.int8)
                    if p.variant_class is None
                    else p.variant_class
                    for p in parts
                ]
            ),
        )

    def full(self, kind: int) -> np.ndarray:
        """float32 [n, F]: the kind's scores over all inputs, NaN rows where not OK."""
        rows = self.array(kind)
        out = np.full((len(self), rows.shape[1]), np.nan, dtype=np.float32)
        out[self.ok_index] = rows
        return out


def windows_per_input(options: ScoringOptions) -> int:
    """Most model rows one input can need: ref + alt, twice with reverse complements."""
    return 4 if options.reverse_complement else 2


def _feature_index(features: Sequence[str], wanted: Sequence[str], model: str) -> np.ndarray | None:
    if not wanted:
        return None
    lookup = {f: i for i, f in enumerate(features)}
    missing = [f for f in wanted if f not in lookup]
    if missing:
        raise InvalidRequestError(
            f"unknown feature(s) {missing[:5]} for model {model!r} "
            f"({len(features)} features; see ListModels)"
        )
    return np.array([lookup[f] for f in wanted], dtype=np.intp)


@dataclass(frozen=True)
class ScoringPlan:
    """The model rows one request needs, and how to turn their predictions into scores.

    Attributes:
        windows: the inputs' windows and statuses.
        tokens: uint8 [m, L], the rows to predict: u distinct ref windows, then k alt windows
            (then, with reverse complements, the same u + k reverse-complemented).
        ref_rows: int64 [k]: the ref row (0..u-1) of each OK input; u = ``n_refs``.
        rows, described: with device windows (``plan_variants(device=...)``), the plan's rows
            that the device builds (``WindowRows`` [d]) and bool [m]: which rows those are;
            ``tokens`` then holds only the other m - d rows, in order (``assemble`` puts
            their predictions back together). None: every row is in ``tokens``.
    """

    windows: VariantWindows
    tokens: np.ndarray
    ok_index: np.ndarray
    ref_rows: np.ndarray
    n_refs: int
    features: tuple[str, ...]
    select: np.ndarray | None
    reverse_complement: bool
    kinds: tuple[int, ...] = ALL_KINDS
    # reference cache: the predictions found [U, F_model] (rows of found sites set), which
    # sites were found, the cache and the keys of the sites run here
    cached: np.ndarray | None = None
    found: np.ndarray | None = None
    cache: RefCache | None = None
    miss_keys: list[Hashable] = field(default_factory=list)
    rows: WindowRows | None = None
    described: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """m: the rows to predict (host tokens and described rows)."""
        return len(self.tokens) if self.described is None else len(self.described)

    def assemble(self, host: np.ndarray, described: np.ndarray) -> np.ndarray:
        """float32 [m, F]: the predictions of ``tokens`` (host) and of ``rows`` (described)
        in plan order."""
        mask = self.described
        if mask is None:
            return host
        out = np.empty((len(mask), described.shape[1]), dtype=np.float32)
        out[mask] = described
        if len(host):
            out[~mask] = host
        return out

    @property
    def pairs(self) -> np.ndarray:
        """int64 [m]: the row of ``tokens`` each row is the alternate of, -1 for reference rows
        and for alts whose reference came from the cache (local recomputation,
        ``server/local_compute.py``)."""
        k, u = len(self.ok_index), self.n_refs
        out = np.full(self.n_rows, -1, dtype=np.int64)
        ref = self.ref_rows
        if self.found is not None:  # cached sites have no row
            row = np.cumsum(~self.found) - 1
            ref = np.where(self.found[ref], -1, row[ref])
        out[u : u + k] = ref
        if self.reverse_complement:
            out[2 * u + k :] = np.where(ref >= 0, ref + u + k, -1)
        return out

    @property
    def cache_hits(self) -> int:
        return int(self.found.sum()) if self.found is not None else 0

    def finish(self, probs: np.ndarray) -> ScoreResult:
        """Scores from the predictions float32 [m, F_model] of ``tokens`` (same order)."""
        k, u = len(self.ok_index), self.n_refs
        w = self.windows
        if len(probs) != self.n_rows:
            raise ValueError(f"{len(probs)} predictions for {self.n_rows} rows")
        width = len(self.features)
        if not k:
            empty = np.zeros((0, width), dtype=np.float32)
            return ScoreResult(
                self.features, w.status, w.messages, w.noted, empty, empty, empty, empty,
                np.zeros(0, np.float32), np.zeros(0, np.int64), self.ok_index,
            )  # fmt: skip
        ref_p, alt_p = probs[:u], probs[u : u + k]
        if self.reverse_complement:
            ref_p = (ref_p + probs[u + k : 2 * u + k]) / 2
            alt_p = (alt_p + probs[2 * u + k :]) / 2
        if self.cache is not None and self.cached is not None and self.found is not None:
            self.cache.store(self.miss_keys, ref_p)
            full = self.cached
            full[~self.found] = ref_p
            ref_p = full
        ref_p = ref_p[self.ref_rows]
        if self.select is not None:
            ref_p, alt_p = ref_p[:, self.select], alt_p[:, self.select]
        kinds = set(self.kinds)
        s = compute_scores(ref_p, alt_p, log2fc=pb.SCORE_KIND_LOG2FC in kinds)
        # kinds not asked for are dropped here ([k, 0]): an in-flight request holds only
        # what its response needs (diff is always kept: max_abs_diff and the calibrated
        # kinds come from it)
        unused = np.zeros((k, 0), dtype=np.float32)
        return ScoreResult(
            self.features, w.status, w.messages, w.noted,
            s.ref if pb.SCORE_KIND_REF in kinds else unused,
            s.alt if pb.SCORE_KIND_ALT in kinds else unused,
            s.diff, s.log2fc if pb.SCORE_KIND_LOG2FC in kinds else unused,
            s.max_abs_diff, s.max_index, self.ok_index,
            variant_class=variant_classes(w.length_change[self.ok_index])
            if len(w.length_change) else None,
        )  # fmt: skip


def _plan(
    windows: VariantWindows,
    model_features: tuple[str, ...],
    model_name: str,
    options: ScoringOptions,
    cache: RefCache | None = None,
    scope: Hashable = None,
    fresh_span: int = 0,
) -> ScoringPlan:
    select = _feature_index(model_features, options.features, model_name)
    features = model_features if select is None else tuple(model_features[i] for i in select)
    ok = np.flatnonzero(windows.ok)
    n, k = len(windows.status), len(ok)
    site = windows.site[ok] if len(windows.site) else np.full(k, -1, dtype=np.int64)
    unique = None
    cached = found = None
    miss_keys: list[Hashable] = []
    if k and (site >= 0).all():
        sites, first, inverse = np.unique(site, return_index=True, return_inverse=True)
        # shared sites (multi-allelic records): each ref window once, where that saves rows
        # (a few coincident sites in a large batch are cheaper to run twice than to copy for)
        if len(first) < 0.9 * k or cache is not None:
            unique = first
        if cache is not None:
            names = windows.site_contigs
            starts = (sites & ((1 << SITE_SHIFT) - 1)) - (1 << (SITE_SHIFT - 1))
            keys = [
                (scope, names[s], st, options.reverse_complement)
                for s, st in zip((sites >> SITE_SHIFT).tolist(), starts.tolist(), strict=True)
            ]
            found, cached = cache.lookup(keys, len(model_features))
            if fresh_span and found.any():  # their alts need the ref's feature maps
                _, span = changed_span(windows.ref[ok], windows.alt[ok])
                fresh = np.zeros(len(found), dtype=bool)
                fresh[inverse[span <= fresh_span]] = True
                found &= ~fresh
            miss_keys = [key for key, hit in zip(keys, found.tolist(), strict=True) if not hit]
            unique = first[~found]
    rows = described = None
    if unique is not None:
        ref_src, ref_rows = ok[unique], inverse
    else:
        ref_src, ref_rows = ok, np.arange(k)
    n_refs = len(ref_src)
    if windows.described is not None and windows.described.mask[ok].any():
        tokens, rows, described = described_rows(windows, ref_src, ok, options.reverse_complement)
    elif unique is None and k == n and windows.both is not None and not options.reverse_complement:
        tokens = windows.both  # ref rows then alt rows, already in place: no copy
    else:
        refs = windows.ref if unique is None and k == n else windows.ref[ref_src]
        parts = [refs, windows.alt if k == n else windows.alt[ok]]
        if options.reverse_complement:
            parts += [reverse_complement(parts[0]), reverse_complement(parts[1])]
        tokens = np.concatenate(parts, axis=0)
    return ScoringPlan(
        windows=windows,
        tokens=tokens,
        ok_index=ok.astype(np.int64),
        ref_rows=np.asarray(ref_rows, dtype=np.int64).reshape(-1),
        n_refs=n_refs,
        features=features,
        select=select,
        reverse_complement=options.reverse_complement,
        kinds=options.kinds,
        cached=cached,
        found=found,
        cache=cache,
        miss_keys=miss_keys,
        rows=rows,
        described=described,
    )


def plan_variants(
    genome: Genome,
    variants: VariantBatch | Sequence[object],
    *,
    length: int,
    features: tuple[str, ...],
    model: str,
    options: ScoringOptions,
    cache: RefCache | None = None,
    scope: Hashable = None,
    fresh_span: int = 0,
    device: DeviceWindows | None = None,
) -> ScoringPlan:
    """The plan for scoring variants against ``genome`` with a model of window ``length``;
    with ``cache``, ref windows predicted before (same ``scope``: model and genome) are taken
    from it and the new ones stored, except (``fresh_span`` > 0, local recomputation) at sites
    with an alt that differs from its ref within ``fresh_span`` bases: that alt is recomputed
    on the ref's feature maps, which the cache does not hold, so the ref runs again and the
    alt's numbers never depend on what was cached. With ``device`` (the model's
    ``DeviceWindows``), plain SNVs become ``rows`` the device builds (``ScoringPlan``)."""
    windows = build_windows(
        genome,
        variants,
        length,
        ref_policy=options.ref_policy,
        indels_as_written=options.indels_as_written,
        device=device,
    )
    return _plan(windows, features, model, options, cache, scope, fresh_span)


def plan_sequences(
    pairs: Sequence[tuple[str, str]],
    *,
    length: int,
    features: tuple[str, ...],
    model: str,
    options: ScoringOptions,
) -> ScoringPlan:
    """The plan for caller-supplied (ref, alt) sequence pairs."""
    return _plan(sequence_windows(pairs, length), features, model, options)


def score(
    model: object,
    genome: Genome,
    variants: VariantBatch | Sequence[object],
    options: ScoringOptions | None = None,
    *,
    batch_size: int = 256,
    calibration: Calibration | None = None,
) -> ScoreResult:
    """Score variants in this process (no server): windows, model runs of ``batch_size`` rows,
    scores. ``model`` is a ``ModelRunner`` (or anything with ``spec`` and ``predict``); the
    calibrated kinds need the model's ``calibration`` (``calibration.load_calibration``)."""
    spec = model.spec  # type: ignore[attr-defined]
    options = options or ScoringOptions()
    if options.calibrated and calibration is None:
        raise CalibrationUnavailableError(
            f"model {spec.name!r} has no calibration: calibrated score kinds need one "
            "(run `varfx calibrate`)"
        )
    plan = plan_variants(
        genome,
        variants,
        length=spec.sequence_length,
        features=spec.features,
        model=spec.name,
        options=options,
    )
    predict = model.predict  # type: ignore[attr-defined]
    rows = plan.tokens
    parts = [predict(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    probs = (
        np.concatenate(parts).astype(np.float32, copy=False)
        if parts
        else np.zeros((0, len(spec.features)), dtype=np.float32)
    )
    result = plan.finish(probs)
    return result.with_calibration(calibration) if options.calibrated and calibration else result
