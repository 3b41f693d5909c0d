"""Typed values the client takes and returns: variants, statuses, per-variant scores, tables.

Units: ``ref``/``alt`` are model probabilities (0..1), ``diff = alt - ref`` is a probability
difference (-1..1), ``log2fc = log2(alt/(1-alt)) - log2(ref/(1-ref))`` is a log2 odds ratio
(probabilities clipped to [1e-6, 1-1e-6] by the server). The calibrated kinds rank ``diff``
against the model's calibration background (``ModelInfo.calibration``): ``quantile`` the fraction
of background |diff| at or below this |diff| (0..1), ``signed_quantile`` 2 F(diff) - 1 (-1..1),
``pvalue`` the empirical p-value of |diff| ((1 + #{|b| >= |d|}) / (1 + N)).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from varfx.core.genomes import GenomeIdentity
from varfx.core.variants import VariantBatch

__all__ = [
    "ALL_SCORE_KINDS",
    "CALIBRATED_KINDS",
    "SCORE_KINDS",
    "Manifest",
    "ModelInfo",
    "RefPolicy",
    "ScoreTable",
    "SequencePair",
    "Status",
    "Variant",
    "VariantLike",
    "VariantScore",
]

#: Score arrays the server can return, in the order the API lists them.
SCORE_KINDS: tuple[str, ...] = ("ref", "alt", "diff", "log2fc")
#: Kinds ranked against the model's calibration background (models with one), in API order.
CALIBRATED_KINDS: tuple[str, ...] = ("quantile", "signed_quantile", "pvalue")
#: Every kind a table can hold, in API order.
ALL_SCORE_KINDS: tuple[str, ...] = SCORE_KINDS + CALIBRATED_KINDS


class Status(enum.IntEnum):
    """Per-variant outcome; values equal ``varfx.v1.StatusCode``."""

    OK = 0
    REF_MISMATCH = 1
    UNKNOWN_CHROMOSOME = 2
    POSITION_OUT_OF_RANGE = 3
    SYMBOLIC_ALLELE = 4
    INDEL_TOO_LONG = 5
    INVALID_ALLELE = 6
    REF_EQUALS_ALT = 7
    REFERENCE_GAP = 8


class RefPolicy(enum.IntEnum):
    """What the server does when REF does not match the genome (``varfx.v1.RefPolicy``)."""

    STRICT = 1
    WARN = 2
    FLIP = 3

    @classmethod
    def parse(cls, value: RefPolicy | str | int) -> RefPolicy:
        """``"strict"|"warn"|"flip"`` (any case), an int, or a RefPolicy."""
        if isinstance(value, RefPolicy):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(
                    f"unknown ref_policy {value!r}; expected strict, warn or flip"
                ) from None
        try:
            return cls(int(value))
        except ValueError:
            raise ValueError(f"unknown ref_policy {value!r}; expected 1, 2 or 3") from None


@dataclass(frozen=True)
class Variant:
    """One variant with ONE alternate allele; ``pos`` is 1-based as in VCF."""

    chrom: str
    pos: int
    ref: str
    alt: str
    id: str = ""

    @staticmethod
    def coerce(value: VariantLike) -> Variant:
        """A Variant from a Variant, a tuple ``(chrom, pos, ref, alt[, id])`` or a dict with
        those keys; raises ValueError/TypeError naming the bad value."""
        if isinstance(value, Variant):
            return value
        if isinstance(value, Mapping):
            missing = [k for k in ("chrom", "pos", "ref", "alt") if k not in value]
            if missing:
                raise ValueError(f"variant {dict(value)!r} lacks keys {missing}")
            chrom, pos, ref, alt = value["chrom"], value["pos"], value["ref"], value["alt"]
            vid = value.get("id", "")
        elif isinstance(value, tuple | list):
            if len(value) not in (4, 5):
                raise ValueError(
                    f"variant {value!r} must be (chrom, pos, ref, alt) or (chrom, pos, ref, alt, id)"
                )
            chrom, pos, ref, alt = value[:4]
            vid = value[4] if len(value) == 5 else ""
        else:
            raise TypeError(
                f"cannot make a Variant from {type(value).__name__} {value!r}; "
                "pass a Variant, a (chrom, pos, ref, alt[, id]) tuple or a dict"
            )
        try:
            ipos = int(pos)
        except (TypeError, ValueError):
            raise ValueError(f"variant position {pos!r} is not an integer") from None
        return Variant(str(chrom), ipos, str(ref), str(alt), "" if vid is None else str(vid))


VariantLike = Variant | tuple[Any, ...] | Mapping[str, Any]


@dataclass(frozen=True)
class SequencePair:
    """A caller-supplied ref/alt sequence pair (ACGTN; padded/cut to the model's L by the server)."""

    ref: str
    alt: str
    id: str = ""

    @staticmethod
    def coerce(value: SequencePair | tuple[Any, ...] | Mapping[str, Any]) -> SequencePair:
        """From a SequencePair, a tuple ``(ref, alt[, id])`` or a dict with those keys."""
        if isinstance(value, SequencePair):
            return value
        if isinstance(value, Mapping):
            if "ref" not in value or "alt" not in value:
                raise ValueError(f"sequence pair {dict(value)!r} needs keys 'ref' and 'alt'")
            return SequencePair(str(value["ref"]), str(value["alt"]), str(value.get("id", "")))
        if isinstance(value, tuple | list) and len(value) in (2, 3):
            return SequencePair(
                str(value[0]), str(value[1]), str(value[2]) if len(value) == 3 else ""
            )
        raise TypeError(f"cannot make a SequencePair from {value!r}; pass (ref, alt[, id])")


@dataclass(frozen=True)
class ModelInfo:
    """A served model (``ListModels``).

    ``sha256``: SHA-256 (hex) of the served ONNX file; ``genome``: the genome the server scores
    this model's variants on (None when it has none); ``training_genome``: the genome the model
    was trained on as its metadata records it (None when it records none);
    ``genome_mismatch_allowed``: the server was told to pair the two although they contradict;
    ``calibration``: the calibration background's description ("" when the model has none: the
    calibrated kinds are refused), tied to ``sha256``.
    """

    name: str
    version: int
    versions: tuple[int, ...]
    features: tuple[str, ...]
    sequence_length: int
    assembly: str
    device: str
    input_kind: str
    output_kind: str
    alphabet: str
    is_default: bool
    max_batch: int
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    sha256: str = ""
    genome: GenomeIdentity | None = None
    training_genome: GenomeIdentity | None = None
    genome_mismatch_allowed: bool = False
    calibration: str = ""


@dataclass(frozen=True)
class Manifest:
    """What computed a response's scores (``varfx.v1.Manifest``); carries no host paths.

    ``model_sha256``: SHA-256 (hex) of the ONNX file; ``assembly``/``genome_digest``: the genome
    the windows came from (empty for sequence scores); ``window_length``: L in bases;
    ``indel_normalization``: "left-align" or "as-written"; ``server_version``: varfx version;
    ``calibration``: the background the calibrated kinds were ranked against ("" when none).
    """

    model: str = ""
    model_version: int = 0
    model_sha256: str = ""
    assembly: str = ""
    genome_digest: str = ""
    window_length: int = 0
    reverse_complement: bool = False
    ref_policy: RefPolicy = RefPolicy.STRICT
    server_version: str = ""
    genome_mismatch_allowed: bool = False
    indel_normalization: str = ""
    calibration: str = ""


@dataclass(frozen=True)
class VariantScore:
    """The scores of one variant (or sequence pair).

    ``ref``/``alt``/``diff``/``log2fc`` are float32 ``[F]`` rows labelled by ``features`` (None
    when not requested or the status is not OK). ``max_abs_diff`` is max_f |diff[f]| (probability),
    ``feature`` the feature where it occurs ("" unless OK). With the calibrated kinds:
    ``quantile``/``signed_quantile``/``pvalue`` float32 ``[F]`` rows, ``max_quantile`` (max_f
    quantile, NaN when not returned) and ``quantile_feature`` where it occurs.
    """

    variant: Variant | SequencePair
    status: Status
    message: str
    max_abs_diff: float
    feature: str
    feature_index: int
    features: tuple[str, ...]
    ref: np.ndarray | None = field(default=None, compare=False, repr=False)
    alt: np.ndarray | None = field(default=None, compare=False, repr=False)
    diff: np.ndarray | None = field(default=None, compare=False, repr=False)
    log2fc: np.ndarray | None = field(default=None, compare=False, repr=False)
    quantile: np.ndarray | None = field(default=None, compare=False, repr=False)
    signed_quantile: np.ndarray | None = field(default=None, compare=False, repr=False)
    pvalue: np.ndarray | None = field(default=None, compare=False, repr=False)
    max_quantile: float = float("nan")
    quantile_feature: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def status_name(self) -> str:
        return self.status.name


@dataclass(frozen=True)
class ScoreTable:
    """Scores of n variants (or sequence pairs) against F features, in input order.

    Inputs: ``batch`` holds the n variants as a VariantBatch (columnar; empty for a table of
    sequence pairs, whose inputs are in ``pairs``); ``items`` gives them as Variant /
    SequencePair objects, built on first use. ``manifest``: what computed the scores (None from
    a server that sends none). Arrays: ``status`` int8 [n] (Status values), ``max_abs_diff``
    float32 [n] (NaN unless OK), ``max_index`` int32 [n] (-1 unless OK), and per requested kind
    ``ref``/``alt``/``diff``/``log2fc`` float32 [n, F] (NaN rows where the status is not OK;
    None when not requested); the calibrated kinds ``quantile``/``signed_quantile``/``pvalue``
    the same way, and with ``quantile`` the summary ``max_quantile`` float32 [n] (max over
    features, NaN unless OK) and ``max_quantile_index`` int32 [n] (its feature, -1 unless OK).
    """

    model: str
    model_version: int
    features: tuple[str, ...]
    batch: VariantBatch
    status: np.ndarray
    messages: tuple[str, ...]
    max_abs_diff: np.ndarray
    max_index: np.ndarray
    ref: np.ndarray | None = None
    alt: np.ndarray | None = None
    diff: np.ndarray | None = None
    log2fc: np.ndarray | None = None
    manifest: Manifest | None = None
    pairs: tuple[SequencePair, ...] = ()
    quantile: np.ndarray | None = None
    signed_quantile: np.ndarray | None = None
    pvalue: np.ndarray | None = None
    max_quantile: np.ndarray | None = None
    max_quantile_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.status)
        if len(self.pairs) != n and len(self.batch) != n:
            raise ValueError(
                f"{n} statuses for {len(self.batch)} variants / {len(self.pairs)} sequence pairs"
            )

    @cached_property
    def items(self) -> tuple[Variant | SequencePair, ...]:
        """The inputs as Variant (or SequencePair) objects (built once, on first use)."""
        if self.pairs:
            return self.pairs
        return tuple(Variant(*row) for row in self.batch.rows())

    @property
    def variants(self) -> tuple[Variant | SequencePair, ...]:
        return self.items

    @property
    def kinds(self) -> tuple[str, ...]:
        """The score kinds this table holds, in API order."""
        return tuple(k for k in ALL_SCORE_KINDS if getattr(self, k) is not None)

    @property
    def ok(self) -> np.ndarray:
        """bool [n]: which rows were scored."""
        return np.asarray(self.status == Status.OK)

    def __len__(self) -> int:
        return len(self.status)

    def array(self, kind: str) -> np.ndarray:
        """The float32 [n, F] array of one score kind; KeyError if it was not requested."""
        if kind not in ALL_SCORE_KINDS:
            raise KeyError(f"unknown score kind {kind!r}; expected one of {ALL_SCORE_KINDS}")
        value = getattr(self, kind)
        if value is None:
            raise KeyError(f"score kind {kind!r} was not requested")
        return value  # type: ignore[no-any-return]

    def feature_name(self, i: int) -> str:
        j = int(self.max_index[i])
        return self.features[j] if j >= 0 else ""

    def quantile_feature_name(self, i: int) -> str:
        """The feature of row i's max quantile ("" unless OK and quantiles were returned)."""
        if self.max_quantile_index is None:
            return ""
        j = int(self.max_quantile_index[i])
        return self.features[j] if j >= 0 else ""

    def row(self, i: int) -> VariantScore:
        """Row i as a VariantScore (array rows are views)."""
        ok = int(self.status[i]) == Status.OK

        def get(a: np.ndarray | None) -> np.ndarray | None:
            return a[i] if (a is not None and ok) else None

        return VariantScore(
            variant=self.items[i],
            status=Status(int(self.status[i])),
            message=self.messages[i],
            max_abs_diff=float(self.max_abs_diff[i]),
            feature=self.feature_name(i),
            feature_index=int(self.max_index[i]),
            features=self.features,
            ref=get(self.ref),
            alt=get(self.alt),
            diff=get(self.diff),
            log2fc=get(self.log2fc),
            quantile=get(self.quantile),
            signed_quantile=get(self.signed_quantile),
            pvalue=get(self.pvalue),
            max_quantile=float(self.max_quantile[i])
            if self.max_quantile is not None
            else float("nan"),
            quantile_feature=self.quantile_feature_name(i),
        )

    def __iter__(self) -> Iterator[VariantScore]:
        for i in range(len(self)):
            yield self.row(i)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row: variant fields, status, message, max_abs_diff, feature, and
        ``<kind>_<feature>`` for every returned score (None where not scored); with quantiles
        also max_quantile and max_quantile_feature."""
        records = []
        kinds = [(k, self.array(k)) for k in self.kinds]
        for i, item in enumerate(self.items):
            rec: dict[str, Any] = dict(item.__dict__)
            ok = int(self.status[i]) == Status.OK
            rec.update(
                status=Status(int(self.status[i])).name,
                message=self.messages[i],
                max_abs_diff=float(self.max_abs_diff[i]) if ok else None,
                feature=self.feature_name(i),
            )
            if self.max_quantile is not None:
                rec.update(
                    max_quantile=float(self.max_quantile[i]) if ok else None,
                    max_quantile_feature=self.quantile_feature_name(i),
                )
            for kind, arr in kinds:
                values = arr[i].tolist()
                for name, v in zip(self.features, values, strict=True):
                    rec[f"{kind}_{name}"] = v if ok else None
            records.append(rec)
        return records

    def to_pandas(self, *, long: bool = False) -> Any:
        """A pandas DataFrame (needs ``pip install 'varfx[pandas]'``).

        Wide (default): one row per input, columns ``chrom, pos, ref, alt, id`` (sequence
        tables: ``id, ref, alt``), ``status`` (name), ``message``, ``max_abs_diff``,
        ``max_feature`` ("" unless OK), with quantiles ``max_quantile`` and
        ``max_quantile_feature``, then ``<kind>_<feature>`` float32 for every returned
        kind. ``long=True``: tidy, one row per (input, kind, feature) in that order, with the
        input columns, ``status``, ``feature``, ``kind``, ``value`` (NaN where not scored).
        """
        from varfx.client import _frames

        return _frames.long_frame(self) if long else _frames.wide_frame(self)

    def to_anndata(self) -> Any:
        """An AnnData (needs ``pip install 'varfx[anndata]'``): ``obs`` = the inputs (the wide
        frame's input and status columns), ``var`` = the F features, ``layers`` = one float32
        [n, F] array per returned kind, ``X`` = ``diff`` when returned (else None);
        ``uns["manifest"]`` = the manifest as a dict."""
        from varfx.client import _frames

        return _frames.anndata(self)

    def top(self, k: int = 10) -> list[VariantScore]:
        """The k scored rows with the largest max |diff|, largest first."""
        idx = np.flatnonzero(self.ok)
        order = idx[np.argsort(-self.max_abs_diff[idx], kind="stable")][:k]
        return [self.row(int(i)) for i in order]

    def status_counts(self) -> dict[str, int]:
        """Rows per status name (only statuses that occur)."""
        values, counts = np.unique(self.status, return_counts=True)
        return {Status(int(v)).name: int(c) for v, c in zip(values, counts, strict=True)}

    @staticmethod
    def concat(tables: Sequence[ScoreTable]) -> ScoreTable:
        """Tables of the same model and features, stacked in order (the first's manifest)."""
        if not tables:
            raise ValueError("concat needs at least one table")
        first = tables[0]
        if len(tables) == 1:
            return first
        for t in tables[1:]:
            if t.features != first.features:
                raise ValueError("cannot concat tables with different features")

        def cat(kind: str) -> np.ndarray | None:
            parts = [getattr(t, kind) for t in tables]
            if any(p is None for p in parts):
                return None
            return np.concatenate(parts, axis=0)

        return ScoreTable(
            model=first.model,
            model_version=first.model_version,
            features=first.features,
            batch=VariantBatch.concat([t.batch for t in tables]),
            status=np.concatenate([t.status for t in tables]),
            messages=tuple(m for t in tables for m in t.messages),
            max_abs_diff=np.concatenate([t.max_abs_diff for t in tables]),
            max_index=np.concatenate([t.max_index for t in tables]),
            ref=cat("ref"),
            alt=cat("alt"),
            diff=cat("diff"),
            log2fc=cat("log2fc"),
            manifest=first.manifest,
            pairs=tuple(p for t in tables for p in t.pairs),
            quantile=cat("quantile"),
            signed_quantile=cat("signed_quantile"),
            pvalue=cat("pvalue"),
            max_quantile=cat("max_quantile"),
            max_quantile_index=cat("max_quantile_index"),
        )
