"""Calibration: a model's null distribution of variant effects, and the calibrated score kinds.

A calibration holds, per feature, the distribution of ``diff`` (signed), ``|diff|`` and
``|log2fc|`` over a background of variants (by default random N-free SNVs on the model's own
genome; or a VCF of common variants), computed with the scoring verb itself. It lives beside the
model, ``<repo>/<name>/<version>/calibration.npz`` with a JSON description
(``calibration.json``), and is tied to the SHA-256 of that version's ``model.onnx``.

The calibrated kinds (see the proto's ScoreKind), for a variant's ``d = diff[f]`` against the N
background values ``b`` of feature f:

- ``QUANTILE = #{|b| <= |d|} / N`` (0..1);
- ``SIGNED_QUANTILE = 2 * #{b <= d} / N - 1`` (-1..1);
- ``PVALUE = (1 + #{|b| >= |d|}) / (1 + N)``.

Storage (precision): each distribution is kept as K knots, order statistics of the sorted
background with the exact count of background values at or below each. The ``tail`` lowest and
highest order statistics are all kept, and ``middle`` evenly spaced ones in between. So the
counts above are exact in both tails (for N = 100,000 and tail = 1,000: every p-value below 0.01,
every quantile above 0.99), and in the middle a quantile is low by at most N / middle values
(1 / middle = 0.0005 with the default 2,000). When N <= 2 * tail + middle every value is kept and
every count is exact. Lookups are ``numpy.searchsorted`` over whole arrays, one call per feature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_FILE",
    "DESCRIPTION_FILE",
    "Calibration",
    "CalibrationFileError",
    "Distribution",
    "build_calibration",
    "calibration_paths",
    "load_calibration",
    "save_calibration",
]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.npz"
DESCRIPTION_FILE = "calibration.json"
FORMAT = "varfx-calibration-1"
DEFAULT_TAIL = 1000
DEFAULT_MIDDLE = 2000


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
class Calibration:
    """A model's calibration (see the module docstring).

    Attributes:
        features: the model's F feature names, in its order.
        diff, abs_diff, abs_log2fc: the background distributions.
        model_sha256: SHA-256 (hex) of the model.onnx it was computed with.
        description: what the background is, e.g. "100000 random N-free SNVs on GRCh37 (seed 0)".
        info: the JSON description (background kind, genome, seed, knots, varfx version).
    """

    features: tuple[str, ...]
    diff: Distribution
    abs_diff: Distribution
    abs_log2fc: Distribution
    model_sha256: str
    description: str
    info: dict[str, Any]

    @property
    def n(self) -> int:
        return self.diff.n

    def columns(self, features: Sequence[str]) -> np.ndarray:
        """int64 [len(features)]: index of each named feature in the calibration."""
        lookup = {f: i for i, f in enumerate(self.features)}
        missing = [f for f in features if f not in lookup]
        if missing:
            raise CalibrationFileError(f"calibration has no feature(s) {missing[:5]}")
        return np.array([lookup[f] for f in features], dtype=np.int64)

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


def build_calibration(
    features: Sequence[str],
    diff: np.ndarray,
    log2fc: np.ndarray,
    *,
    model_sha256: str,
    description: str,
    info: dict[str, Any] | None = None,
    tail: int = DEFAULT_TAIL,
    middle: int = DEFAULT_MIDDLE,
) -> Calibration:
    """A calibration from the background's scores: diff and log2fc float32 [N, F]."""
    diff = np.asarray(diff, dtype=np.float32)
    if diff.ndim != 2 or diff.shape[1] != len(features) or diff.shape != np.shape(log2fc):
        raise ValueError(
            f"background scores of shape {diff.shape} / {np.shape(log2fc)} for "
            f"{len(features)} features"
        )
    meta = dict(info or {})
    meta.update(
        format=FORMAT,
        model_sha256=model_sha256,
        description=description,
        n=int(diff.shape[0]),
        features=list(features),
        knots={"tail": tail, "middle": middle},
    )
    return Calibration(
        features=tuple(features),
        diff=Distribution.from_samples(diff, tail, middle),
        abs_diff=Distribution.from_samples(np.abs(diff), tail, middle),
        abs_log2fc=Distribution.from_samples(np.abs(np.asarray(log2fc)), tail, middle),
        model_sha256=model_sha256,
        description=description,
        info=meta,
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
    """Write calibration.npz and calibration.json into ``model_dir``; returns their paths."""
    import io

    npz, desc = calibration_paths(Path(model_dir))
    arrays: dict[str, np.ndarray] = {}
    for name in ("diff", "abs_diff", "abs_log2fc"):
        dist: Distribution = getattr(calibration, name)
        arrays[f"{name}_values"] = dist.values
        arrays[f"{name}_counts"] = dist.counts.astype(np.int32)
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

    Raises CalibrationFileError (naming the file and what is wrong) when it is malformed, was
    computed for another model file (SHA-256 mismatch: stale) or for other features.
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
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CalibrationFileError(f"{desc}: not a {FORMAT} description")
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
    n = int(info.get("n", 0))
    try:
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            dists = {
                name: Distribution(
                    np.asarray(z[f"{name}_values"], dtype=np.float32),
                    np.asarray(z[f"{name}_counts"], dtype=np.int64),
                    n,
                )
                for name in ("diff", "abs_diff", "abs_log2fc")
            }
    except (OSError, KeyError, ValueError) as exc:
        raise CalibrationFileError(f"{npz}: not a calibration archive ({exc})") from None
    for name, dist in dists.items():
        if dist.values.shape != dist.counts.shape or dist.values.shape[0] != len(features):
            raise CalibrationFileError(
                f"{npz}: {name} arrays do not match {len(features)} features"
            )
        if n <= 0 or (dist.counts.size and dist.counts.max() > n):
            raise CalibrationFileError(f"{npz}: counts exceed the background size {n}")
    return Calibration(
        features=tuple(features),
        diff=dists["diff"],
        abs_diff=dists["abs_diff"],
        abs_log2fc=dists["abs_log2fc"],
        model_sha256=model_sha256,
        description=str(info.get("description", "")),
        info=info,
    )
