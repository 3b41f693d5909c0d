"""``varfx report``: what a VCF annotated by ``varfx score`` holds, gathered in one streaming pass.

``collect(path)`` reads the VCF (plain, gzip/bgzip, or ``-`` for stdin) a chunk of data lines at
a time and keeps only aggregates: counts by status, fixed-bin histograms of every score
(``VARFX_MAX_ABS_DIFF`` and each ``VARFX_<KIND>_<feature>`` key), the top N variant-ALTs by
max |diff| (a heap), and a downsampled max |diff| track per contig. Multi-allelic records
contribute one row per ALT (the keys are ``Number=A``); records without ``VARFX_STATUS`` are
counted as ``NOT_ANNOTATED``. ``write_report`` renders the page (``_report_html``) and writes
it atomically. Bad input raises ReportError ``FILE:LINE: what``.
"""

from __future__ import annotations

import gzip
import heapq
import io
import math
import os
import re
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from varfx.client._output import info_key
from varfx.client._report_stats import (
    KINDS,
    LOG_KINDS,
    STRONG,
    THRESHOLDS,
    Histogram,
    PositionTrack,
)

__all__ = [
    "KINDS",
    "STRONG",
    "Histogram",
    "PositionTrack",
    "ReportData",
    "ReportError",
    "TopVariant",
    "collect",
    "write_report",
]

NOT_ANNOTATED = "NOT_ANNOTATED"
_QUANTILE_KEY = "VARFX_MAX_QUANTILE"
_SUMMARY_KEYS = ("VARFX_STATUS", "VARFX_MAX_ABS_DIFF", "VARFX_MAX_FEATURE")
_INFO_ID = re.compile(r"^##INFO=<ID=(VARFX_[A-Za-z0-9_.]+)")
_CONTIG = re.compile(r"^##contig=<ID=([^,>]+)(?:.*?[<,]length=(\d+))?")
_DETAIL = re.compile(r"^VARFX_(DIFF|LOG2FC|REF|ALT|QUANTILE|SIGNED_QUANTILE|PVALUE)_(.+)$")
_CHUNK_LINES = 20_000


class ReportError(ValueError):
    """Input ``varfx report`` cannot read; the message is ``FILE:LINE: what`` where it can be."""


@dataclass(frozen=True)
class TopVariant:
    """One variant-ALT of the top table: ``values`` maps each per-feature INFO key to its
    number (NaN where missing; p-values as -log10 p); ``extras`` holds other VARFX_* keys as
    text."""

    max_abs_diff: float
    line: int
    chrom: str
    pos: int
    vid: str
    ref: str
    alt: str
    feature: str
    quantile: float | None
    values: dict[str, float]
    extras: dict[str, str]


@dataclass
class ReportData:
    """Everything the page shows. ``details`` lists (kind, feature, INFO key) per-feature keys in
    header order; ``hists`` maps those keys (and VARFX_MAX_ABS_DIFF, VARFX_MAX_QUANTILE when
    present) to Histograms; ``top`` is sorted by max |diff|, largest first."""

    source: str
    manifest: dict[str, str]
    contig_lengths: dict[str, int]
    details: list[tuple[str, str, str]]
    extra_keys: list[str]
    records: int = 0
    alts: int = 0
    multiallelic: int = 0
    status: Counter[str] = field(default_factory=Counter)
    max_feature: Counter[str] = field(default_factory=Counter)
    strong_feature: Counter[str] = field(default_factory=Counter)
    hists: dict[str, Histogram] = field(default_factory=dict)
    top: list[TopVariant] = field(default_factory=list)
    tracks: dict[str, PositionTrack] = field(default_factory=dict)
    top_n: int = 50

    @property
    def scored(self) -> int:
        return self.status.get("OK", 0)


class _Prefixed(io.RawIOBase):
    """The bytes ``head`` already read from ``rest``, then the rest of it (a pipe cannot seek)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(buf)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self._rest.close()
        super().close()


def _open(path: str) -> IO[str]:
    """Text of a file or of stdin (``-``, left open), gunzipped when it starts with gzip's magic."""
    raw = open(sys.stdin.fileno() if path == "-" else path, "rb", closefd=path != "-")  # noqa: SIM115
    head = raw.read(2)  # a buffered read: two bytes unless the input is shorter
    stream = io.BufferedReader(_Prefixed(head, raw))
    if head == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=stream), encoding="utf-8", newline="")
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def _lines(fh: IO[str], name: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end), gzip and UTF-8 errors as ReportError."""
    number = 0
    try:
        for raw in fh:
            number += 1
            yield number, raw.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise ReportError(f"{name}:{number + 1}: unreadable compressed data ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ReportError(f"{name}:{number + 1}: not UTF-8 text ({exc.reason})") from None


class _Collector:
    def __init__(self, name: str, top: int) -> None:
        self.name = name
        self.top = top
        self.meta: list[str] = []
        self._heap: list[tuple[float, int, TopVariant]] = []
        self._log_keys: list[str] = []
        self._row = 0

    def header(self, line_number: int) -> ReportData:
        manifest: dict[str, str] = {}
        lengths: dict[str, int] = {}
        declared: list[str] = []
        for line in self.meta:
            if line.startswith("##varfx_"):
                key, _, value = line[len("##varfx_") :].partition("=")
                manifest[key] = value
            elif (m := _CONTIG.match(line)) is not None:
                lengths[m.group(1)] = int(m.group(2)) if m.group(2) else 0
            elif (m := _INFO_ID.match(line)) is not None:
                declared.append(m.group(1))
        if "model" not in manifest and "VARFX_STATUS" not in declared:
            raise ReportError(
                f"{self.name}:{line_number}: no ##varfx_model header line and no VARFX_STATUS "
                "INFO key: not a VCF annotated by varfx score"
            )
        features = [f for f in manifest.get("features", "").split(",") if f]
        details: list[tuple[str, str, str]] = []
        for kind in KINDS:
            for f in features:
                if info_key(kind, f) in declared:
                    details.append((kind, f, info_key(kind, f)))
        known = {key for _, _, key in details}
        for key in declared:  # per-feature keys of a header without ##varfx_features
            m = _DETAIL.match(key)
            if m is not None and key not in known:
                details.append((m.group(1).lower(), m.group(2), key))
                known.add(key)
        extras = [
            k for k in declared if k not in known and k not in _SUMMARY_KEYS and k != _QUANTILE_KEY
        ]
        data = ReportData(
            self.name, manifest, {k: v for k, v in lengths.items() if v}, details, extras
        )
        data.top_n = self.top
        self._log_keys = [key for kind, _, key in details if kind in LOG_KINDS]
        data.hists["VARFX_MAX_ABS_DIFF"] = Histogram(0.0, 1.0, 1000, THRESHOLDS["max_abs_diff"])
        if _QUANTILE_KEY in declared:
            data.hists[_QUANTILE_KEY] = Histogram(0.0, 1.0, 100, THRESHOLDS["quantile"])
        for kind, _, key in details:
            data.hists[key] = Histogram(*KINDS[kind], THRESHOLDS[kind])
        return data

    def chunk(self, data: ReportData, rows: list[tuple[int, list[str]]]) -> None:
        """Add a chunk of data lines: (line number, the first 8 columns)."""
        keys = [key for _, _, key in data.details]
        has_q = _QUANTILE_KEY in data.hists
        status: list[str] = []
        text: dict[str, list[str]] = {k: [] for k in ["VARFX_MAX_ABS_DIFF", *keys]}
        if has_q:
            text[_QUANTILE_KEY] = []
        feature: list[str] = []
        row_of: list[int] = []  # chunk row -> index into rows
        alt_of: list[int] = []
        positions: list[int] = []
        chroms: list[str] = []
        for r, (number, cols) in enumerate(rows):
            n_alt = cols[4].count(",") + 1
            info = {}
            for kv in cols[7].split(";"):
                if kv.startswith("VARFX_"):
                    k, _, v = kv.partition("=")
                    info[k] = v
            st = info.get("VARFX_STATUS")
            if st is None:
                status += [NOT_ANNOTATED] * n_alt
                feature += ["."] * n_alt
                for lst in text.values():
                    lst += ["."] * n_alt
            elif n_alt == 1 and "," not in cols[7]:  # the common case: one value per key
                status.append(st)
                feature.append(info.get("VARFX_MAX_FEATURE", "."))
                for k, lst in text.items():
                    lst.append(info.get(k, "."))
            else:
                for k, lst in (("VARFX_STATUS", status), ("VARFX_MAX_FEATURE", feature)):
                    lst += self._split(info, k, n_alt, number)
                for k, lst in text.items():
                    lst += self._split(info, k, n_alt, number)
            row_of += [r] * n_alt
            alt_of += range(n_alt)
            positions += [int(cols[1])] * n_alt
            chroms += [cols[0]] * n_alt
            if n_alt > 1:
                data.multiallelic += 1
        data.records += len(rows)
        data.alts += len(status)
        data.status.update(status)
        values = {k: self._floats(v, rows, row_of, k) for k, v in text.items()}
        for key in self._log_keys:  # p-values are held as -log10(p)
            values[key] = -np.log10(np.clip(values[key], 1e-10, 1.0))
        mad = values["VARFX_MAX_ABS_DIFF"]
        ok = np.array(status, dtype=object) == "OK"
        mad = np.where(ok, mad, np.nan)
        feats = np.array(feature, dtype=object)
        data.max_feature.update(feats[ok].tolist())
        data.strong_feature.update(feats[ok & (mad >= STRONG)].tolist())
        for k, arr in values.items():
            data.hists[k].add(np.where(ok, arr, np.nan) if k != "VARFX_MAX_ABS_DIFF" else mad)
        pos = np.array(positions, dtype=np.int64)
        contig = np.array(chroms, dtype=object)
        scored = np.flatnonzero(np.isfinite(mad))
        names, first, inverse = np.unique(contig[scored], return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # scored rows grouped by contig
        bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
        for k in np.argsort(first).tolist():  # contigs in order of appearance
            name = str(names[k])
            sel = scored[order[bounds[k] : bounds[k + 1]]]
            if name not in data.tracks:
                length = data.contig_lengths.get(name)
                data.tracks[name] = PositionTrack(length, _track_bins(data, length))
            data.tracks[name].add(pos[sel], mad[sel])
        self._top(data, rows, values, mad, feats, row_of, alt_of)

    def _top(
        self,
        data: ReportData,
        rows: list[tuple[int, list[str]]],
        values: dict[str, np.ndarray],
        mad: np.ndarray,
        feats: np.ndarray,
        row_of: list[int],
        alt_of: list[int],
    ) -> None:
        floor = self._heap[0][0] if len(self._heap) >= self.top else -1.0
        cand = np.flatnonzero(np.nan_to_num(mad, nan=-1.0) > floor)
        if len(cand) > self.top:
            cand = cand[np.argsort(-mad[cand], kind="stable")[: self.top]]
        for i in sorted(cand.tolist()):
            number, cols = rows[row_of[i]]
            j = alt_of[i]
            extras = {}
            for kv in cols[7].split(";"):
                k, _, v = kv.partition("=")
                if k in data.extra_keys:
                    parts = v.split(",")
                    extras[k] = parts[j] if len(parts) > j else v
            q = values.get(_QUANTILE_KEY)
            variant = TopVariant(
                float(mad[i]),
                number,
                cols[0],
                int(cols[1]),
                cols[2],
                cols[3],
                cols[4].split(",")[j],
                str(feats[i]),
                float(q[i]) if q is not None and np.isfinite(q[i]) else None,
                {key: float(values[key][i]) for _, _, key in data.details},
                extras,
            )
            item = (variant.max_abs_diff, -(self._row + i), variant)
            if len(self._heap) < self.top:
                heapq.heappush(self._heap, item)
            elif item[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, item)
        self._row += len(mad)

    def _split(self, info: dict[str, str], key: str, n_alt: int, number: int) -> list[str]:
        value = info.get(key)
        if value is None:
            return ["."] * n_alt
        parts = value.split(",")
        if len(parts) != n_alt:
            raise ReportError(
                f"{self.name}:{number}: {key} has {len(parts)} value(s) for {n_alt} ALT "
                f"allele(s): {value[:60]!r}"
            )
        return parts

    def _floats(
        self, text: list[str], rows: list[tuple[int, list[str]]], row_of: list[int], key: str
    ) -> np.ndarray:
        arr = np.array(text, dtype=object)
        arr[arr == "."] = "nan"
        try:
            return arr.astype(np.float64)
        except ValueError:
            for i, t in enumerate(arr.tolist()):
                try:
                    float(t)
                except ValueError:
                    number = rows[row_of[i]][0]
                    raise ReportError(
                        f"{self.name}:{number}: {key} value {t[:40]!r} is not a number"
                    ) from None
            raise

    def finish(self, data: ReportData) -> ReportData:
        data.top = [v for _, _, v in sorted(self._heap, key=lambda t: (-t[0], -t[1]))]
        return data


def _track_bins(data: ReportData, length: int | None) -> int:
    """Bins for a new contig's track: 1,024 for the first 64 contigs with scored variants; after
    that (a VCF over thousands of scaffolds) about two per pixel of the contig's share of the
    header's genome length, 8 to 256 (a power of two), 16 where the length is unknown."""
    if len(data.tracks) < 64:
        return 1024
    genome = sum(data.contig_lengths.values())
    if length and genome:
        want = max(8, min(256, math.ceil(2400 * length / genome)))
        return 1 << (want - 1).bit_length()
    return 16


def collect(path: str | os.PathLike[str], *, top: int = 50) -> ReportData:
    """Read a VCF annotated by ``varfx score`` (``-`` = stdin) into a ReportData, keeping the
    ``top`` variant-ALTs with the largest max |diff|."""
    if top < 1:
        raise ReportError(f"--top must be at least 1, got {top}")
    name = str(path)
    col = _Collector(name, top)
    rows: list[tuple[int, list[str]]] = []
    data: ReportData | None = None
    with _open(name) as fh:
        for number, line in _lines(fh, name):
            if data is None:
                if line.startswith("##"):
                    col.meta.append(line)
                    continue
                data = col.header(number)
                if line.startswith("#"):
                    continue
            if not line.strip():
                continue
            if line.startswith("#"):
                raise ReportError(f"{name}:{number}: header line after the first data line")
            cols = line.split("\t", 8)
            if len(cols) < 8:
                raise ReportError(
                    f"{name}:{number}: a data line needs 8 tab-separated columns (varfx score "
                    f"writes them), got {len(cols)}: {line[:80]!r}"
                )
            if not cols[1].isdigit():
                raise ReportError(f"{name}:{number}: POS {cols[1][:40]!r} is not an integer")
            rows.append((number, cols))
            if len(rows) >= _CHUNK_LINES:
                col.chunk(data, rows)
                rows = []
        if data is None:
            raise ReportError(f"{name}: empty input (no VCF header)")
        if rows:
            col.chunk(data, rows)
    return col.finish(data)


def write_report(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    top: int = 50,
    title: str = "",
    explain: Sequence[str | os.PathLike[str]] = (),
) -> str:
    """Collect ``path`` and write the HTML page to ``output`` (``-`` = stdout) through a
    temporary file and a rename; an existing output must be a regular file. ``explain``:
    ``varfx explain`` JSON files drawn on the page. Returns a one-line summary."""
    from varfx.client._report_explain import load_explanation
    from varfx.client._report_html import render

    explanations = [load_explanation(p) for p in explain]  # bad files fail before the long pass
    data = collect(path, top=top)
    page = render(data, title=title, explanations=explanations)
    if str(output) == "-":
        sys.stdout.write(page)
        sys.stdout.flush()
    else:
        _write_atomic(Path(output), page.encode("utf-8"))
    return (
        f"wrote {output}: {data.records} records, {data.alts} variant-ALTs, "
        f"{data.scored} scored, top {len(data.top)} shown"
    )


def _write_atomic(target: Path, data: bytes) -> None:
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise ReportError(f"{target}: exists and is not a regular file; not writing through it")
    if not (target.parent if str(target.parent) else Path(".")).is_dir():
        raise ReportError(f"{target}: the folder {target.parent} does not exist")
    umask = os.umask(0)
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
