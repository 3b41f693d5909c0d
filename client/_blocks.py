"""Columnar VCF reading: the body in blocks of bytes, parsed into arrays with numpy.

``VcfBlocks(path)`` reads the header, then ``blocks()`` yields ``VcfBlock``s of whole records
(about ``block_bytes`` each). A block holds the records' lines as one ``bytes`` (CR and blank
lines dropped, every line tab-separated and ending in ``\\n``) with per-record column offsets,
and a ``VariantBatch`` of its variants (multi-allelic records split into one variant per ALT,
``record_of`` pointing back to the record). Newlines, tabs, commas and POS digits are found
with numpy over the block's bytes; per-record Python runs only for odd lines (whitespace instead
of tabs, an invalid POS) and to name the line of an error.

Rules (the forgiving reader's): no ``#CHROM`` line, rows with fewer columns than the header,
CRLF, no final newline, a UTF-8 BOM and blank lines are accepted; a row with fewer than 5 columns,
a POS that is not a decimal integer below 2^63, an empty CHROM/REF/ALT, a header line after the
first record, bytes that are not UTF-8 and a truncated gzip stream raise ``VcfFormatError``
naming ``FILE:LINE``.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from varfx.client.errors import VcfFormatError
from varfx.core.variants import VariantBatch

__all__ = ["BLOCK_BYTES", "VcfBlock", "VcfBlocks", "VcfHeader", "open_binary"]

#: Default uncompressed bytes per block.
BLOCK_BYTES = 1 << 20
_READ = 64 << 10  # a damaged stream loses at most this much before the error is raised
_BOM = b"\xef\xbb\xbf"
_POS_DIGITS = 18  # up to 18 digits fit int64 in the vectorised parse; longer ones go to Python
_MAX_POS = 2**63 - 1


@dataclass(frozen=True)
class VcfHeader:
    """``meta``: the ``##`` lines (without line ends); ``columns``: the ``#CHROM`` line split
    into names (None when the file has none)."""

    meta: tuple[str, ...]
    columns: tuple[str, ...] | None

    @property
    def fileformat(self) -> str | None:
        for line in self.meta:
            if line.startswith("##fileformat="):
                return line.split("=", 1)[1]
        return None


def open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    """A VCF's bytes, gunzipped when it starts with the gzip magic (gzip or bgzip). ``-`` is
    standard input; pipes, ``/dev/fd/N`` and process substitution are opened once and peeked."""
    if str(path) == "-":
        raw: IO[bytes] = sys.stdin.buffer
    else:
        raw = open(Path(path), "rb", buffering=0)  # noqa: SIM115 - returned to the caller
    buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw, buffer_size=_READ)  # type: ignore[arg-type]
    magic = buffered.peek(2)[:2]  # type: ignore[attr-defined]
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


@dataclass(frozen=True, eq=False)
class VcfBlock:
    """r consecutive records and their v variants (one per ALT).

    ``data``: the records' lines, each ending in ``\\n``; ``start``/``end`` int64 [r]: each
    line's first byte and its ``\\n``; ``tabs`` int64 [r, 8]: the byte after column c (a tab, or
    ``end`` where the line has fewer than c + 2 columns); ``n_columns`` int64 [r];
    ``line_number`` int64 [r] (1-based in the file); ``first_index``: 0-based number of the
    first record in the file. ``batch``: the variants; ``record_of`` int64 [v]: their record
    (0-based in the block); ``alt_start``/``alt_end`` int64 [v]: each ALT's bytes in ``data``.
    """

    data: bytes
    start: np.ndarray
    end: np.ndarray
    tabs: np.ndarray
    n_columns: np.ndarray
    line_number: np.ndarray
    first_index: int
    batch: VariantBatch
    record_of: np.ndarray
    alt_start: np.ndarray
    alt_end: np.ndarray

    @property
    def n_records(self) -> int:
        return len(self.start)

    @property
    def n_alts(self) -> np.ndarray:
        """int64 [r]: ALT alleles of each record."""
        return np.bincount(self.record_of, minlength=self.n_records).astype(np.int64)

    def column(self, i: int, c: int) -> bytes:
        """Column c of record i (b"" where the line has no such column)."""
        lo = self.start[i] if c == 0 else self.tabs[i, c - 1] + 1
        hi = self.tabs[i, c]
        return self.data[int(lo) : int(hi)] if lo <= hi else b""

    def line(self, i: int) -> bytes:
        return self.data[int(self.start[i]) : int(self.end[i])]

    def slice(self, lo: int, hi: int) -> VcfBlock:
        """Records [lo, hi) (the same ``data``; offsets stay absolute)."""
        v_lo = int(np.searchsorted(self.record_of, lo))
        v_hi = int(np.searchsorted(self.record_of, hi))
        return VcfBlock(
            data=self.data,
            start=self.start[lo:hi],
            end=self.end[lo:hi],
            tabs=self.tabs[lo:hi],
            n_columns=self.n_columns[lo:hi],
            line_number=self.line_number[lo:hi],
            first_index=self.first_index + lo,
            batch=self.batch.take(v_lo, v_hi),
            record_of=self.record_of[v_lo:v_hi] - lo,
            alt_start=self.alt_start[v_lo:v_hi],
            alt_end=self.alt_end[v_lo:v_hi],
        )


class VcfBlocks:
    """A VCF read in blocks: ``header`` on construction, then ``blocks()`` once."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        block_bytes: int = BLOCK_BYTES,
        stream: IO[bytes] | None = None,
    ) -> None:
        """``stream``: read these bytes instead of opening ``path`` (which names them in errors)."""
        self.path = "<stdin>" if str(path) == "-" else str(path)
        self.block_bytes = max(int(block_bytes), 1024)
        self._fh = stream if stream is not None else open_binary(path)
        self._eof = False
        self._line = 0  # lines consumed so far
        self._first_read = True
        self._rest = b""
        meta: list[str] = []
        columns: tuple[str, ...] | None = None
        while True:
            line = self._next_line()
            if line is None:
                break
            text = self._decode(line, self._line)
            stripped = text.rstrip("\r\n")
            if stripped.startswith("##"):
                meta.append(stripped)
            elif stripped.startswith("#"):
                columns = tuple(stripped.split())
            elif stripped.strip():
                self._rest = line + self._rest  # the first record: back into the buffer
                self._line -= 1
                break
        self.header = VcfHeader(tuple(meta), columns)
        self.empty = not self._rest and self._at_eof()

    def peek_columns(self) -> int:
        """Columns of the first record (0 when there is none)."""
        line = self._rest.split(b"\n", 1)[0].rstrip(b"\r")
        if not line:
            return 0
        n = line.count(b"\t") + 1
        return n if n >= 5 else len(line.split())

    # -- raw reading ------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        try:
            data = self._fh.read(n)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            lines = self._line + self._rest.count(b"\n")
            raise VcfFormatError(
                self.path,
                lines + 1,
                f"the compressed stream is damaged or ends early (truncated gzip/bgzip?): {exc}",
            ) from None
        if self._first_read:
            self._first_read = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if not data:
            self._eof = True
        return data

    def _at_eof(self) -> bool:
        if self._rest:
            return False
        if not self._eof:
            self._rest = self._read(_READ)
        return not self._rest

    def _next_line(self) -> bytes | None:
        """One line with its ``\\n`` (header reading only)."""
        while b"\n" not in self._rest and not self._eof:
            self._rest += self._read(_READ)
        if not self._rest:
            return None
        cut = self._rest.find(b"\n") + 1 or len(self._rest)
        line, self._rest = self._rest[:cut], self._rest[cut:]
        self._line += 1
        return line

    def _decode(self, raw: bytes, line_number: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VcfFormatError(
                self.path, line_number, f"byte {raw[exc.start : exc.start + 1]!r} is not UTF-8"
            ) from None

    def _raw_blocks(self) -> Iterator[tuple[bytes, int]]:
        """(bytes of whole lines, lines before them) of about block_bytes each."""
        parts = [self._rest]
        size = len(self._rest)
        self._rest = b""
        error: VcfFormatError | None = None
        while True:
            while size < self.block_bytes and not self._eof:
                try:
                    piece = self._read(_READ)
                except VcfFormatError as exc:  # the complete lines read so far go out first
                    error = exc
                    self._eof = True
                    break
                parts.append(piece)
                size += len(piece)
            data = b"".join(parts)
            if error is not None:
                data = data[: data.rfind(b"\n") + 1]
                if data:
                    self._line += data.count(b"\n")
                    yield data, self._line - data.count(b"\n")
                raise VcfFormatError(error.path, self._line + 1, error.reason)
            if not data:
                return
            cut = data.rfind(b"\n") + 1
            if self._eof:
                cut = len(data)
            elif cut == 0:  # one line longer than a block: read on
                parts, size = [data], len(data)
                continue
            block, rest = data[:cut], data[cut:]
            first = self._line
            self._line += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            yield block, first
            if self._eof and not rest:
                return
            parts, size = [rest], len(rest)

    # -- parsing --------------------------------------------------------------------------

    def blocks(self, skip: int = 0) -> Iterator[VcfBlock]:
        """Every record in blocks, in file order; the first ``skip`` records are left out."""
        index = 0
        for raw, lines_before in self._raw_blocks():
            block = self._parse(raw, lines_before, index)
            if block is None:
                continue
            index += block.n_records
            if skip:
                taken = min(skip, block.n_records)
                skip -= taken
                if taken == block.n_records:
                    continue
                block = block.slice(taken, block.n_records)
            yield block

    def _parse(self, raw: bytes, lines_before: int, first_index: int) -> VcfBlock | None:
        if not raw.endswith(b"\n"):
            raw += b"\n"
        arr = np.frombuffer(raw, dtype=np.uint8)
        if arr.size and arr.max() >= 0x80:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = lines_before + raw.count(b"\n", 0, exc.start) + 1
                raise VcfFormatError(
                    self.path, line, f"byte {raw[exc.start : exc.start + 1]!r} is not UTF-8"
                ) from None
        nl = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], nl[:-1] + 1))
        ends = nl.copy()
        cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
        ends[cr] -= 1
        line_no = lines_before + 1 + np.arange(len(nl), dtype=np.int64)
        keep = ends > starts
        starts, ends, line_no = starts[keep], ends[keep], line_no[keep]
        if not len(starts):
            return None
        hash_lines = np.flatnonzero(arr[starts] == 35)
        if len(hash_lines):
            raise VcfFormatError(
                self.path, int(line_no[hash_lines[0]]), "header line after the first data line"
            )
        tab_pos = np.flatnonzero(arr == 9)
        line_of_tab = np.searchsorted(starts, tab_pos, side="right") - 1
        in_line = (line_of_tab >= 0) & (tab_pos < ends[np.maximum(line_of_tab, 0)])
        tab_pos, line_of_tab = tab_pos[in_line], line_of_tab[in_line]
        n_tabs = np.bincount(line_of_tab, minlength=len(starts))
        odd = n_tabs < 4
        if odd.any():
            return self._parse(self._normalise(raw, lines_before), lines_before, first_index)
        first_tab = np.concatenate(([0], np.cumsum(n_tabs)[:-1]))
        rank = np.arange(len(tab_pos)) - first_tab[line_of_tab]
        tabs = np.repeat(ends[:, None], 8, axis=1).astype(np.int64)
        sel = rank < 8
        tabs[line_of_tab[sel], rank[sel]] = tab_pos[sel]
        n_columns = n_tabs + 1
        col_lo = np.concatenate((starts[:, None], tabs[:, :7] + 1), axis=1)
        width = tabs - col_lo  # [r, 8]: bytes of each column
        empty = (width[:, 0] == 0) | (width[:, 3] == 0) | (width[:, 4] == 0)
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            text = raw[int(starts[i]) : int(ends[i])][:80].decode("utf-8", "replace")
            raise VcfFormatError(self.path, int(line_no[i]), f"empty CHROM, REF or ALT in {text!r}")
        pos = self._positions(raw, arr, col_lo[:, 1], width[:, 1], line_no)
        contigs, contig_of_record = _contigs(arr, starts, width[:, 0])
        # ALTs: split column 4 at its commas
        commas = np.flatnonzero(arr == 44)
        line_of_comma = np.searchsorted(starts, commas, side="right") - 1
        lc = np.maximum(line_of_comma, 0)
        in_alt = (line_of_comma >= 0) & (commas > tabs[lc, 3]) & (commas < tabs[lc, 4])
        commas, line_of_comma = commas[in_alt], line_of_comma[in_alt]
        n_alts = 1 + np.bincount(line_of_comma, minlength=len(starts))
        record_of = np.repeat(np.arange(len(starts), dtype=np.int64), n_alts)
        # segments do not overlap and rise through the block: both ends sort into pairs
        alt_lo = np.sort(np.concatenate((tabs[:, 3] + 1, commas + 1)))
        alt_hi = np.sort(np.concatenate((commas, tabs[:, 4])))
        ref_lo = tabs[record_of, 2] + 1
        ref_hi = tabs[record_of, 3]
        lo = np.empty(2 * len(record_of), dtype=np.int64)
        hi = np.empty_like(lo)
        lo[0::2], lo[1::2] = ref_lo, alt_lo
        hi[0::2], hi[1::2] = ref_hi, alt_hi
        alleles, offsets = gather(arr, lo, hi)
        batch = VariantBatch(
            contigs=contigs,
            contig_index=contig_of_record[record_of],
            pos=pos[record_of],
            alleles=alleles,
            allele_offsets=offsets,
        )
        return VcfBlock(
            data=raw,
            start=starts,
            end=ends,
            tabs=tabs,
            n_columns=n_columns,
            line_number=line_no,
            first_index=first_index,
            batch=batch,
            record_of=record_of,
            alt_start=alt_lo,
            alt_end=alt_hi,
        )

    def _normalise(self, raw: bytes, lines_before: int) -> bytes:
        """The block again with its odd lines (fewer than 5 tab-separated columns) split at
        whitespace and joined with tabs (Python, per line; rare). Every line keeps its place."""
        out = []
        for n, line in enumerate(raw.split(b"\n")[:-1], start=lines_before + 1):
            body = line[:-1] if line.endswith(b"\r") else line
            if body.count(b"\t") < 4:
                fields = body.split()
                if fields and len(fields) < 5:
                    text = body[:80].decode("utf-8", "replace")
                    raise VcfFormatError(
                        self.path,
                        n,
                        f"a data line needs at least 5 tab-separated columns: {text!r}",
                    )
                line = b"\t".join(fields)
            out.append(line)
        out.append(b"")
        return b"\n".join(out)

    def _positions(
        self, raw: bytes, arr: np.ndarray, lo: np.ndarray, width: np.ndarray, line_no: np.ndarray
    ) -> np.ndarray:
        """int64 [r]: the POS column as integers (vectorised for up to 18 ASCII digits)."""
        w = int(min(width.max(initial=1), _POS_DIGITS))
        k = np.arange(w)
        idx = np.minimum(lo[:, None] + k, len(arr) - 1)
        digits = arr[idx].astype(np.int64) - 48
        valid = k < width[:, None]
        bad = ((digits < 0) | (digits > 9)) & valid
        odd = bad.any(axis=1) | (width > _POS_DIGITS) | (width == 0)
        exps = np.where(valid, width[:, None] - 1 - k, 0)
        pos = (np.where(valid, digits, 0) * np.power(10, exps, dtype=np.int64)).sum(axis=1)
        for i in np.flatnonzero(odd).tolist():
            text = raw[int(lo[i]) : int(lo[i] + width[i])].decode("utf-8", "replace")
            digits_only = text[1:] if text.startswith("-") else text
            if not digits_only or not (digits_only.isascii() and digits_only.isdigit()):
                raise VcfFormatError(self.path, int(line_no[i]), f"POS {text!r} is not an integer")
            value = int(text)
            if value > _MAX_POS or value < -_MAX_POS:
                raise VcfFormatError(
                    self.path, int(line_no[i]), f"POS {text} is out of range (at most 2^63-1)"
                )
            pos[i] = value
        return pos

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> VcfBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gather(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The byte ranges [lo, hi) of ``arr`` one after the other, and int64 offsets [n + 1]."""
    lengths = np.maximum(hi - lo, 0)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if not total:
        return b"", offsets
    idx = np.repeat(lo - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return arr[idx].tobytes(), offsets


def _contigs(
    arr: np.ndarray, starts: np.ndarray, width: np.ndarray
) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, int32 [r] index into them) of the CHROM column, found per run of equal names
    (sorted files have few runs) or with np.unique."""
    w = int(width.max(initial=1))
    k = np.arange(w)
    idx = np.minimum(starts[:, None] + k, len(arr) - 1)
    mat = np.where(k < width[:, None], arr[idx], 0).astype(np.uint8)
    keys = np.ascontiguousarray(mat).view(f"S{w}").reshape(-1)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    if len(change) < 256:
        run_starts = np.concatenate(([0], change))
        names: dict[bytes, int] = {}
        run_index = np.array(
            [names.setdefault(bytes(keys[s]), len(names)) for s in run_starts.tolist()],
            dtype=np.int32,
        )
        lengths = np.diff(np.concatenate((run_starts, [len(keys)])))
        index = np.repeat(run_index, lengths)
        table = tuple(n.decode("utf-8") for n in names)
    else:
        uniq, inverse = np.unique(keys, return_inverse=True)
        index = inverse.astype(np.int32).reshape(-1)
        table = tuple(bytes(u).decode("utf-8") for u in uniq)
    return table, index
