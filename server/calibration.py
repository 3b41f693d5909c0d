"""Calibration: a model's null distributions of variant effects, one per variant class, and the
calibrated score kinds.

A calibration holds, per variant class and feature, the distribution of ``diff`` (signed),
``|diff|`` and ``|log2fc|`` over a background of variants of that class (by default random
N-free SNVs and random indels on the model's own genome; or the variants of a VCF, split by
class), computed with the scoring verb itself (server/background.py). It lives beside the model,
``<repo>/<name>/<version>/calibration.npz`` with a JSON description (``calibration.json``), and
is tied to the SHA-256 of that version's ``model.onnx``.

Variant classes (``variant_classes``), from the alleles the window builder scored (after indel
normalisation and any REF-policy swap): SUBSTITUTION (REF and ALT of one length: SNVs and MNVs),
INSERTION, DELETION. The nulls (``GROUPS``): ``substitution`` ranks SNVs and MNVs (an MNV
changes bases in place like an SNV, shifting no flank; it is rarer than either other class, and
its effects sit between the SNV and the indel nulls, closer to the SNVs: docs/models.md), and
``indel`` ranks insertions and deletions together (an indel shifts every base on one side of it
in the window; on the simulated model the two directions' effect distributions differ far less
than either differs from SNVs: docs/models.md). A row whose class has no null of its own (a
``varfx-calibration-1`` file, which holds SNVs only, or a VCF background with too few of that
class) is ranked against the substitution null (or the one null there is), never silently: the
description names what each class is ranked against and the row's status message says so
(``Calibration.fallbacks``).

The calibrated kinds (see the proto's ScoreKind), for a variant's ``d = diff[f]`` against the N
background values ``b`` of feature f in its class's null:

- ``QUANTILE = #{|b| <= |d|} / N`` (0..1);
- ``SIGNED_QUANTILE = 2 * #{b <= d} / N - 1`` (-1..1);
- ``PVALUE = (1 + #{|b| >= |d|}) / (1 + N)``.

Storage (precision): each distribution is kept as K knots, order statistics of the sorted
background with the exact count of background values at or below each. The ``tail`` lowest and
highest order statistics are all kept, and ``middle`` evenly spaced ones in between. So the
counts above are exact in both tails (for N = 100,000 and tail = 1,000: every p-value below 0.01,
every quantile above 0.99), and in the middle a quantile is low by at most N / middle values
(1 / middle = 0.0005 with the default 2,000). When N <= 2 * tail + middle every value is kept and
every count is exact. Lookups are ``numpy.searchsorted`` over whole arrays, one call per feature
and null.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_FILE",
    "CLASS_NAMES",
    "DELETION",
    "DESCRIPTION_FILE",
    "GROUPS",
    "INSERTION",
    "SUBSTITUTION",
    "Calibration",
    "CalibrationFileError",
    "Distribution",
    "Null",
    "build_calibration",
    "calibration_paths",
    "load_calibration",
    "save_calibration",
    "variant_classes",
]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.npz"
DESCRIPTION_FILE = "calibration.json"
FORMAT = "varfx-calibration-2"
OLD_FORMAT = "varfx-calibration-1"  # one SNV null: loaded as the substitution null
DEFAULT_TAIL = 1000
DEFAULT_MIDDLE = 2000

#: Row classes (``variant_classes``).
SUBSTITUTION, INSERTION, DELETION = 0, 1, 2
CLASS_NAMES = ("substitution", "insertion", "deletion")
#: Each null and the row classes it ranks (module docstring), in description order.
GROUPS: dict[str, tuple[int, ...]] = {
    "substitution": (SUBSTITUTION,),
    "indel": (INSERTION, DELETION),
}
LABELS = {"substitution": "SNVs/MNVs", "indel": "indels"}
_GROUP_OF = {c: g for g, classes in GROUPS.items() for c in classes}
_DISTS = ("diff", "abs_diff", "abs_log2fc")


def variant_classes(length_change: np.ndarray) -> np.ndarray:
    """int8 [n] row classes (SUBSTITUTION, INSERTION, DELETION) of int [n]
    ``len(ALT) - len(REF)`` of the alleles as scored."""
    lc = np.asarray(length_change)
    out = np.zeros(lc.shape, dtype=np.int8)
    out[lc > 0] = INSERTION
    out[lc < 0] = DELETION
    return out


class CalibrationFileError(Exception):
    """A calibration file is missing, malformed, or belongs to another model file."""


@dataclass(frozen=True)
class Distribution:
    """The background distribution of one score over F features, as K knots each.

    Attributes:
        values: float32 [F, K] ascending order statistics per feature.
        counts: int64 [F, K] number of background values <= each knot's value.
        n: background size N.
    """

    values: np.ndarray
    counts: np.ndarray
    n: int

    @classmethod
    def from_samples(
        cls, samples: np.ndarray, tail: int = DEFAULT_TAIL, middle: int = DEFAULT_MIDDLE
    ) -> Distribution:
        """Knots of float [N, F] samples (see the module docstring for which are kept)."""
        n, f = samples.shape
        if n == 0:
            raise ValueError("an empty background has no distribution")
        ordered = np.sort(np.asarray(samples, dtype=np.float32), axis=0).T  # [F, N]
        if n <= 2 * tail + middle:
            keep = np.arange(n)
        else:
            keep = np.unique(
                np.concatenate(
                    [
                        np.arange(tail),
                        np.linspace(tail, n - tail - 1, middle).round().astype(np.int64),
                        np.arange(n - tail, n),
                    ]
                )
            )
        values = np.ascontiguousarray(ordered[:, keep])
        counts = np.empty(values.shape, dtype=np.int64)
        for j in range(f):  # one vectorised search per feature
            counts[j] = np.searchsorted(ordered[j], values[j], side="right")
        return cls(values, counts, n)

    def count_le(self, x: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """int64 [k, len(columns)]: background values <= x (x: float [k, len(columns)]),
        ``columns`` the feature index (into ``values``) of each column of x."""
        return self._count(x, columns, "right")

    def count_lt(self, x: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """int64 [k, len(columns)]: background values < x."""
        return self._count(x, columns, "left")

    def _count(self, x: np.ndarray, columns: np.ndarray, side: Any) -> np.ndarray:
        out = np.zeros(x.shape, dtype=np.int64)
        for c, f in enumerate(columns.tolist()):
            j = np.searchsorted(self.values[f], x[:, c], side=side) - 1
            row = self.counts[f]
            got = j >= 0
            # values <= the last knot at (side right) or below (left) x: exact where every
            # order statistic is kept (the tails), else low by less than one knot's gap
            out[got, c] = row[j[got]]
        return out


@dataclass(frozen=True)
class Null:
    """One variant class's background (a null of GROUPS), over F features.

    Attributes:
        diff, abs_diff, abs_log2fc: the distributions of diff, |diff| and |log2fc|.
        description: what the background is, e.g. "100002 random N-free SNVs ... (seed 0)".
    """

    diff: Distribution
    abs_diff: Distribution
    abs_log2fc: Distribution
    description: str

    @property
    def n(self) -> int:
        """Background size N."""
        return self.diff.n

    @classmethod
    def from_samples(
        cls, diff: np.ndarray, log2fc: np.ndarray, description: str, tail: int, middle: int
    ) -> Null:
        """The null of float32 [N, F] background diffs and log2fcs."""
        return cls(
            Distribution.from_samples(diff, tail, middle),
            Distribution.from_samples(np.abs(diff), tail, middle),
            Distribution.from_samples(np.abs(np.asarray(log2fc)), tail, middle),
            description,
        )

    def quantile(self, diff: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """float32 [k, C]: #{|b| <= |d|} / N for diff float [k, C]."""
        return (self.abs_diff.count_le(np.abs(diff), columns) / self.n).astype(np.float32)

    def signed_quantile(self, diff: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """float32 [k, C]: 2 * #{b <= d} / N - 1."""
        return (2.0 * self.diff.count_le(diff, columns) / self.n - 1.0).astype(np.float32)

    def pvalue(self, diff: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """float32 [k, C]: (1 + #{|b| >= |d|}) / (1 + N)."""
        at_least = self.n - self.abs_diff.count_lt(np.abs(diff), columns)
        return ((1.0 + at_least) / (1.0 + self.n)).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """A model's calibration (see the module docstring).

    Attributes:
        features: the model's F feature names, in its order.
        nulls: group name (of GROUPS) -> its Null; at least one.
        model_sha256: SHA-256 (hex) of the model.onnx it was computed with.
        description: every group's background and size, or what a group without one is ranked
            against, e.g. "100002 random N-free SNVs ... (seed 0); indels: 100000 random indels
            ... (seed 0)".
        info: the JSON description (format, per-group backgrounds, genome, seed, knots, ...).
        missing: group without a null -> why (e.g. "only 12 indels in common.vcf, fewer than
            1000"); its rows are ranked against ``primary``.
    """

    features: tuple[str, ...]
    nulls: dict[str, Null]
    model_sha256: str
    description: str
    info: dict[str, Any]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """The null that ranks classes without their own: substitution, else the largest."""
        if "substitution" in self.nulls:
            return "substitution"
        return max(self.nulls, key=lambda g: self.nulls[g].n)

    # the primary null's distributions (what a single-class calibration was)
    @property
    def diff(self) -> Distribution:
        return self.nulls[self.primary].diff

    @property
    def abs_diff(self) -> Distribution:
        return self.nulls[self.primary].abs_diff

    @property
    def abs_log2fc(self) -> Distribution:
        return self.nulls[self.primary].abs_log2fc

    @property
    def n(self) -> int:
        """Size of the primary null's background."""
        return self.nulls[self.primary].n

    def null_of(self, row_class: int) -> str:
        """The group whose null ranks rows of this class (its own, else ``primary``)."""
        group = _GROUP_OF[int(row_class)]
        return group if group in self.nulls else self.primary

    def fallback_note(self, row_class: int) -> str:
        """'' when the class has its own null, else the message its rows get."""
        group = _GROUP_OF[int(row_class)]
        if group in self.nulls:
            return ""
        other = self.primary
        return (
            f"calibrated scores rank this {CLASS_NAMES[row_class]} against the "
            f"{LABELS[other]} background ({self.nulls[other].n}): the calibration has no "
            f"{LABELS[group]} background ({self.missing.get(group, 'none computed')})"
        )

    def fallbacks(self, classes: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """(row indices, message) of the rows of int8 [k] ``classes`` ranked against another
        class's null."""
        out = []
        for c in np.unique(classes).tolist():
            note = self.fallback_note(c)
            if note:
                out.append((np.flatnonzero(classes == c), note))
        return out

    def columns(self, features: Sequence[str]) -> np.ndarray:
        """int64 [len(features)]: index of each named feature in the calibration."""
        lookup = {f: i for i, f in enumerate(self.features)}
        missing = [f for f in features if f not in lookup]
        if missing:
            raise CalibrationFileError(f"calibration has no feature(s) {missing[:5]}")
        return np.array([lookup[f] for f in features], dtype=np.int64)

    def _ranked(
        self, x: np.ndarray, columns: np.ndarray, classes: np.ndarray | None, kind: str
    ) -> np.ndarray:
        """The kind (a Null method) of each row of x [k, C] against its class's null: one
        whole-array lookup per null used."""
        names = [self.null_of(c) for c in range(len(CLASS_NAMES))]
        present = [0] if classes is None or not len(classes) else np.unique(classes).tolist()
        used = sorted({names[c] for c in present})
        if len(used) == 1:
            return getattr(self.nulls[used[0]], kind)(x, columns)  # type: ignore[no-any-return]
        assert classes is not None  # several nulls are used only with classes
        out = np.empty(x.shape, dtype=np.float32)
        for name in used:
            rows = np.isin(classes, [c for c, g in enumerate(names) if g == name])
            out[rows] = getattr(self.nulls[name], kind)(x[rows], columns)
        return out

    def quantile(
        self, diff: np.ndarray, columns: np.ndarray, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 [k, C]: #{|b| <= |d|} / N for diff float [k, C], each row against the null
        of its class (int8 [k] ``classes``; None: all substitutions)."""
        return self._ranked(diff, columns, classes, "quantile")

    def signed_quantile(
        self, diff: np.ndarray, columns: np.ndarray, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 [k, C]: 2 * #{b <= d} / N - 1 (classes as in ``quantile``)."""
        return self._ranked(diff, columns, classes, "signed_quantile")

    def pvalue(
        self, diff: np.ndarray, columns: np.ndarray, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 [k, C]: (1 + #{|b| >= |d|}) / (1 + N) (classes as in ``quantile``)."""
        return self._ranked(diff, columns, classes, "pvalue")


def describe(nulls: dict[str, Null], missing: dict[str, str]) -> str:
    """One line naming every group's background (and size), or what a group without one is
    ranked against; the substitution background first, unlabelled (as a single-class
    calibration's description was)."""
    primary = "substitution" if "substitution" in nulls else max(nulls, key=lambda g: nulls[g].n)
    parts = []
    for group in GROUPS:
        if group in nulls:
            text = nulls[group].description
            parts.append(text if group == "substitution" else f"{LABELS[group]}: {text}")
        else:
            why = missing.get(group, f"no {LABELS[group]} in the background")
            parts.append(f"{LABELS[group]}: none ({why}), ranked against the {LABELS[primary]}")
    return "; ".join(parts)


def build_calibration(
    features: Sequence[str],
    diff: np.ndarray,
    log2fc: np.ndarray,
    *,
    model_sha256: str,
    description: str,
    info: dict[str, Any] | None = None,
    classes: np.ndarray | None = None,
    descriptions: dict[str, str] | None = None,
    missing: dict[str, str] | None = None,
    min_class: int = 0,
    tail: int = DEFAULT_TAIL,
    middle: int = DEFAULT_MIDDLE,
) -> Calibration:
    """A calibration from the background's scores: diff and log2fc float32 [N, F].

    Args:
        classes: int8 [N] row classes (``variant_classes``); None: all substitutions.
        description: the background's description (of every group without one in
            ``descriptions``).
        descriptions: group -> the description of that group's background.
        missing: group -> why it has no background (groups absent from ``classes``).
        min_class: a group with fewer rows gets no null of its own (its rows will be ranked
            against ``primary``), unless no group has that many: then the largest is kept.
    """
    diff = np.asarray(diff, dtype=np.float32)
    if diff.ndim != 2 or diff.shape[1] != len(features) or diff.shape != np.shape(log2fc):
        raise ValueError(
            f"background scores of shape {diff.shape} / {np.shape(log2fc)} for "
            f"{len(features)} features"
        )
    log2fc = np.asarray(log2fc, dtype=np.float32)
    n = diff.shape[0]
    classes = np.zeros(n, np.int8) if classes is None else np.asarray(classes, dtype=np.int8)
    if classes.shape != (n,):
        raise ValueError(f"{classes.shape} row classes for {n} background rows")
    rows = {g: np.flatnonzero(np.isin(classes, c)) for g, c in GROUPS.items()}
    sizes = {g: len(r) for g, r in rows.items() if len(r)}
    if not sizes:
        raise ValueError("an empty background has no distribution")
    kept = [g for g, size in sizes.items() if size >= min_class] or [
        max(sizes, key=lambda g: sizes[g])
    ]
    missing = dict(missing or {})
    for group in GROUPS:
        if group in sizes and group not in kept:
            missing[group] = (
                f"only {sizes[group]} {LABELS[group]} in the background, fewer than {min_class}"
            )
        elif group not in sizes:
            missing.setdefault(group, f"no {LABELS[group]} in the background")
        else:
            missing.pop(group, None)
    texts = descriptions or {}
    nulls = {
        g: Null.from_samples(
            diff[rows[g]], log2fc[rows[g]], texts.get(g, description), tail, middle
        )
        for g in GROUPS
        if g in kept
    }
    text = describe(nulls, missing)
    meta = dict(info or {})
    meta.update(
        format=FORMAT,
        model_sha256=model_sha256,
        description=text,
        n=int(n),
        features=list(features),
        knots={"tail": tail, "middle": middle},
        groups={
            g: {
                "n": nulls[g].n,
                "description": nulls[g].description,
                "classes": [CLASS_NAMES[c] for c in GROUPS[g]],
            }
            for g in nulls
        },
        missing=missing,
        min_class=min_class,
    )
    return Calibration(
        features=tuple(features),
        nulls=nulls,
        model_sha256=model_sha256,
        description=text,
        info=meta,
        missing=missing,
    )


def calibration_paths(model_dir: Path) -> tuple[Path, Path]:
    """(calibration.npz, calibration.json) of a model version directory."""
    return model_dir / CALIBRATION_FILE, model_dir / DESCRIPTION_FILE


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, refusing to
    write through a link or anything that is not a regular file."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise CalibrationFileError(f"{path}: exists and is not a regular file; not overwritten")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_calibration(calibration: Calibration, model_dir: Path) -> tuple[Path, Path]:
    """Write calibration.npz (``<group>__<dist>_values`` / ``_counts`` for each null) and
    calibration.json into ``model_dir``; returns their paths."""
    import io

    npz, desc = calibration_paths(Path(model_dir))
    arrays: dict[str, np.ndarray] = {}
    for group, null in calibration.nulls.items():
        for name in _DISTS:
            dist: Distribution = getattr(null, name)
            arrays[f"{group}__{name}_values"] = dist.values
            arrays[f"{group}__{name}_counts"] = dist.counts.astype(np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    info = dict(calibration.info, npz_sha256=hashlib.sha256(data).hexdigest())
    _write_new(npz, data)
    _write_new(desc, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return npz, desc


def load_calibration(
    model_dir: Path, *, model_sha256: str, features: Sequence[str]
) -> Calibration | None:
    """The calibration beside a model, or None when it has none.

    A ``varfx-calibration-1`` file (one SNV null) loads as the substitution null; its
    description then says that indels are ranked against those SNVs. Raises
    CalibrationFileError (naming the file and what is wrong) when it is malformed, was computed
    for another model file (SHA-256 mismatch: stale) or for other features.
    """
    npz, desc = calibration_paths(Path(model_dir))
    if not desc.exists() and not npz.exists():
        return None
    for path in (npz, desc):
        if not path.is_file():
            raise CalibrationFileError(f"{path}: missing or not a regular file")
    try:
        info = json.loads(desc.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationFileError(f"{desc}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") not in (FORMAT, OLD_FORMAT):
        raise CalibrationFileError(f"{desc}: not a {FORMAT} (or {OLD_FORMAT}) description")
    if info.get("model_sha256") != model_sha256:
        raise CalibrationFileError(
            f"{desc}: stale calibration: computed for model SHA-256 "
            f"{str(info.get('model_sha256'))[:12]}..., the model file is {model_sha256[:12]}...; "
            "run `varfx calibrate` again"
        )
    if list(info.get("features", [])) != list(features):
        raise CalibrationFileError(f"{desc}: features differ from the model's")
    data = npz.read_bytes()
    if info.get("npz_sha256") not in (None, hashlib.sha256(data).hexdigest()):
        raise CalibrationFileError(f"{npz}: SHA-256 differs from the one {desc.name} records")
    old = info["format"] == OLD_FORMAT
    if old:  # one SNV null under the unprefixed names
        groups: dict[str, Any] = {
            "substitution": {"n": info.get("n", 0), "description": info.get("description", "")}
        }
        missing = {
            "indel": f"a {OLD_FORMAT} file holds SNVs only; `varfx calibrate` again adds indels"
        }
    else:
        groups, missing = info.get("groups") or {}, info.get("missing", {})
        if (
            not isinstance(groups, dict)
            or not groups
            or not set(groups) <= set(GROUPS)
            or not isinstance(missing, dict)
        ):
            raise CalibrationFileError(f"{desc}: 'groups' must name some of {list(GROUPS)}")
    nulls = {
        group: _load_null(npz, data, "" if old else f"{group}__", g, len(features))
        for group, g in groups.items()
    }
    return Calibration(
        features=tuple(features),
        nulls=nulls,
        model_sha256=model_sha256,
        description=describe(nulls, missing) if old else str(info.get("description", "")),
        info=info,
        missing={str(k): str(v) for k, v in missing.items()},
    )


def _load_null(npz: Path, data: bytes, prefix: str, group: Any, width: int) -> Null:
    """One null's three distributions from the archive bytes (keys ``prefix + name``)."""
    import io

    n = int(group.get("n", 0)) if isinstance(group, dict) else 0
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            dists = {
                name: Distribution(
                    np.asarray(z[f"{prefix}{name}_values"], dtype=np.float32),
                    np.asarray(z[f"{prefix}{name}_counts"], dtype=np.int64),
                    n,
                )
                for name in _DISTS
            }
    except (OSError, KeyError, ValueError) as exc:
        raise CalibrationFileError(f"{npz}: not a calibration archive ({exc})") from None
    for name, dist in dists.items():
        if dist.values.shape != dist.counts.shape or dist.values.shape[0] != width:
            raise CalibrationFileError(
                f"{npz}: {prefix}{name} arrays do not match {width} features"
            )
        if n <= 0 or (dist.counts.size and dist.counts.max() > n):
            raise CalibrationFileError(
                f"{npz}: {prefix}{name} counts exceed the background size {n}"
            )
    return Null(
        dists["diff"], dists["abs_diff"], dists["abs_log2fc"], str(group.get("description", ""))
    )
