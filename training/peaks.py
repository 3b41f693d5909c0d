"""Peak files (BED / narrowPeak) -> merged intervals per contig, and bin coverage by interval maths.

Peak files may be plain or gzipped, unsorted, with CRLF line endings, ``track``/``browser``/``#``
header lines, and contig names with or without ``chr`` (``chrM`` <-> ``MT``): :func:`contig_aliases`
maps a peak file's names onto the FASTA's. Coordinates are BED: 0-based, half-open, in bp.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varfx.core.contigs import contig_aliases
from varfx.training.errors import DataError

__all__ = [
    "Intervals",
    "PeakSet",
    "bin_coverage",
    "feature_name",
    "find_peak_files",
    "merge_intervals",
    "read_bed",
    "resolve_contig",
]

log = logging.getLogger(__name__)

_PEAK_SUFFIXES = (".narrowpeak", ".broadpeak", ".bed")


@dataclass(frozen=True)
class Intervals:
    """Sorted, non-overlapping half-open intervals on one contig (int64 arrays, bp)."""

    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> Intervals:
    """Sort and merge overlapping or touching intervals (vectorized).

    Args:
        starts, ends: int arrays [n] of 0-based half-open coordinates; empty intervals are dropped.
    """
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    keep = e > s
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return Intervals(np.zeros(0, np.int64), np.zeros(0, np.int64))
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    run_end = np.maximum.accumulate(e)
    # a new merged interval starts where the start lies beyond every earlier end
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > run_end[:-1]
    group = np.cumsum(new) - 1
    m_starts = s[new]
    m_ends = np.zeros(len(m_starts), dtype=np.int64)
    np.maximum.at(m_ends, group, e)
    return Intervals(m_starts, m_ends)


def _covered_before(iv: Intervals, x: np.ndarray) -> np.ndarray:
    """Covered bp in [0, x) for each x (int64 array), by cumulative interval lengths."""
    lengths = iv.ends - iv.starts
    cum = np.concatenate([[0], np.cumsum(lengths)])
    k = np.searchsorted(iv.starts, x, side="right") - 1
    kc = np.clip(k, 0, max(len(iv) - 1, 0))
    inside = np.minimum(x - iv.starts[kc], lengths[kc]) if len(iv) else np.zeros_like(x)
    return np.where(k >= 0, cum[kc] + inside, 0)


def bin_coverage(iv: Intervals, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Covered bp of each query interval [starts, ends) by the merged intervals ``iv`` (int64)."""
    if len(iv) == 0:
        return np.zeros(len(starts), dtype=np.int64)
    x0 = np.asarray(starts, dtype=np.int64)
    x1 = np.asarray(ends, dtype=np.int64)
    return _covered_before(iv, x1) - _covered_before(iv, x0)


def resolve_contig(name: str, known: Iterable[str]) -> str | None:
    """The name in ``known`` that ``name`` refers to (exact match first), or None."""
    known_set = set(known)
    return next((alias for alias in contig_aliases(name) if alias in known_set), None)


def _open_text(path: Path) -> list[str]:
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            raw = gz.read()
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not an ASCII BED/narrowPeak file ({exc})") from exc
    return text.splitlines()  # handles \n, \r\n and \r


def read_bed(path: str | Path) -> dict[str, Intervals]:
    """Read a BED / narrowPeak file into merged intervals per contig (names as in the file).

    Raises:
        DataError: a line with fewer than 3 columns, non-integer or negative coordinates, or
            end < start; the message names the file, line number and value.
    """
    return {
        c: merge_intervals(np.array(s), np.array(e)) for c, (s, e, _) in _parse_bed(path).items()
    }


def _parse_bed(path: str | Path) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Per contig (as named in the file): starts, ends and line numbers of its intervals."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"peak file not found: {p}")
    by_contig: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for lineno, line in enumerate(_open_text(p), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) < 3:
            raise DataError(f"{p}:{lineno}: expected >= 3 columns (chrom start end), got {line!r}")
        try:
            start, end = int(cols[1]), int(cols[2])
        except ValueError as exc:
            raise DataError(f"{p}:{lineno}: start/end must be integers, got {line!r}") from exc
        if start < 0 or end < start:
            raise DataError(f"{p}:{lineno}: invalid interval {cols[0]}:{start}-{end}")
        s_list, e_list, n_list = by_contig.setdefault(cols[0].strip(), ([], [], []))
        s_list.append(start)
        e_list.append(end)
        n_list.append(lineno)
    return by_contig


def _past_end(
    path: Path, contig: str, rows: tuple[list[int], list[int], list[int]], size: int, allow: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """Starts/ends of one contig's peaks checked against its length (bp).

    Returns (starts, ends, dropped): with ``allow`` peaks starting at or past the end are dropped
    and peaks crossing it are clipped; without it the first such peak is an error.
    """
    s, e = np.array(rows[0], np.int64), np.array(rows[1], np.int64)
    over = e > size
    if not over.any():
        return s, e, 0
    if not allow:
        k = int(np.flatnonzero(over)[0])
        raise DataError(
            f"{path}:{rows[2][k]}: peak {contig}:{s[k]}-{e[k]} ends past the end of the FASTA's "
            f"contig ({size} bp); a truncated FASTA needs --allow-peaks-past-end"
        )
    keep = s < size
    return s[keep], np.minimum(e[keep], size), int(over.sum())


def feature_name(path: str | Path) -> str:
    """Feature name of a peak file: its file name without .gz and the BED/narrowPeak suffix."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in _PEAK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_peak_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand directories into their peak files (*.bed, *.narrowPeak, *.broadPeak, optionally .gz),
    sorted by name; plain files are kept in the order given.

    Raises:
        DataError: a path that does not exist, or no peak files at all.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file() and f.name.lower().removesuffix(".gz").endswith(_PEAK_SUFFIXES)
            )
            if not found:
                raise DataError(f"no peak files (*.bed, *.narrowPeak[.gz]) in directory {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"peak path not found: {p}")
    if not out:
        raise DataError("no peak files given")
    return out


@dataclass(frozen=True)
class PeakSet:
    """Peaks of F features, as merged intervals per feature per FASTA contig name.

    Attributes:
        features: F feature names (file names without suffix), in column order.
        intervals: per feature, contig (FASTA name) -> Intervals.
        unmatched: per feature, peak-file contig names with no FASTA contig (skipped).
        past_end: per feature, peaks past their contig's end dropped or clipped (allowed).
    """

    features: tuple[str, ...]
    intervals: tuple[dict[str, Intervals], ...]
    unmatched: tuple[tuple[str, ...], ...]
    past_end: tuple[int, ...] = ()

    @classmethod
    def load(
        cls,
        paths: Sequence[str | Path],
        contigs: Iterable[str] | Mapping[str, int],
        names: Sequence[str] | None = None,
        *,
        allow_past_end: bool = False,
    ) -> PeakSet:
        """Read peak files (or directories of them) and map their contigs to ``contigs``.

        Args:
            paths: files and/or directories.
            contigs: the FASTA's contig names, or its contig lengths (bp): then a peak ending
                past its contig is refused naming FILE:LINE, or with ``allow_past_end`` dropped
                (clipped when it crosses the end) and counted in ``past_end``.
            names: feature names (default: from the file names).

        Raises:
            DataError: unreadable file, duplicate feature names, names of the wrong length, or
                a peak past its contig's end.
        """
        files = find_peak_files(paths)
        feats = list(names) if names is not None else [feature_name(f) for f in files]
        if len(feats) != len(files):
            raise DataError(f"{len(feats)} feature names given for {len(files)} peak files")
        dupes = sorted({f for f in feats if feats.count(f) > 1})
        if dupes:
            raise DataError(f"duplicate feature names from peak files: {dupes}")
        known = list(contigs)
        sizes = contigs if isinstance(contigs, Mapping) else None
        per_feature: list[dict[str, Intervals]] = []
        unmatched: list[tuple[str, ...]] = []
        past_end: list[int] = []
        for f in files:
            mapped: dict[str, Intervals] = {}
            missing: list[str] = []
            dropped = 0
            for contig, rows in _parse_bed(f).items():
                target = resolve_contig(contig, known)
                if target is None:
                    missing.append(contig)
                    continue
                if sizes is not None:
                    st, en, n = _past_end(f, contig, rows, int(sizes[target]), allow_past_end)
                    dropped += n
                else:
                    st, en = np.array(rows[0], np.int64), np.array(rows[1], np.int64)
                iv = merge_intervals(st, en)
                if target in mapped:  # e.g. "chr1" and "1" in one file
                    old = mapped[target]
                    iv = merge_intervals(
                        np.concatenate([old.starts, iv.starts]),
                        np.concatenate([old.ends, iv.ends]),
                    )
                mapped[target] = iv
            if missing:
                log.warning(
                    "%s: %d contigs not in the FASTA, skipped: %s", f, len(missing), missing[:5]
                )
            if dropped:
                log.warning("%s: %d peaks past their contig's end dropped or clipped", f, dropped)
            per_feature.append(mapped)
            unmatched.append(tuple(sorted(missing)))
            past_end.append(dropped)
        return cls(tuple(feats), tuple(per_feature), tuple(unmatched), tuple(past_end))

    def contig_intervals(self, contig: str) -> list[Intervals]:
        """Per feature, the merged intervals on one FASTA contig (empty where none)."""
        empty = Intervals(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return [m.get(contig, empty) for m in self.intervals]


def contig_map(names: Iterable[str], known: Iterable[str]) -> Mapping[str, str | None]:
    """For each name, the FASTA contig it refers to (or None)."""
    k = list(known)
    return {n: resolve_contig(n, k) for n in names}
