"""A forgiving VCF reader: plain or (b)gzipped text, streamed line by line.

It reads what pysam/htslib refuse and real files contain: no ``#CHROM`` line, data rows with
fewer columns than the header, a header with stray spaces, ``.`` alleles, REF == ALT, Windows
line ends, no final newline. A row that cannot be read (fewer than 5 columns, POS not an
integer) raises VcfFormatError naming the file and line number. Each record keeps its raw
columns so that writers can copy it through unchanged; ``variants()`` splits multi-allelic
records into one Variant per ALT.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from varfx.client.errors import VcfFormatError
from varfx.client.types import Variant

__all__ = ["VCF_COLUMNS", "VcfHeader", "VcfReader", "VcfRecord", "count_records", "open_text"]

#: The eight fixed VCF columns.
VCF_COLUMNS: tuple[str, ...] = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a VCF for reading as text; gzip/bgzip detected from the magic bytes."""
    p = Path(path)
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


@dataclass(frozen=True)
class VcfRecord:
    """One data line: ``index`` (0-based record number), ``line_number`` (1-based in the file),
    ``fields`` (the raw columns, at least 5)."""

    index: int
    line_number: int
    fields: tuple[str, ...]

    @property
    def chrom(self) -> str:
        return self.fields[0]

    @property
    def pos(self) -> int:
        return int(self.fields[1])

    @property
    def alts(self) -> list[str]:
        """The ALT alleles (``["."]`` for a missing ALT)."""
        return self.fields[4].split(",")

    @property
    def n_alts(self) -> int:
        return self.fields[4].count(",") + 1

    def variants(self) -> list[Variant]:
        """One Variant per ALT allele (``.`` ID becomes "")."""
        vid = "" if self.fields[2] == "." else self.fields[2]
        chrom, pos, ref = self.fields[0], int(self.fields[1]), self.fields[3]
        return [Variant(chrom, pos, ref, alt, vid) for alt in self.alts]


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


def _split(line: str, path: str, line_number: int) -> tuple[str, ...]:
    fields = line.split("\t")
    if len(fields) < 5:
        fields = line.split()
    if len(fields) < 5:
        raise VcfFormatError(
            path, line_number, f"a data line needs at least 5 tab-separated columns: {line[:80]!r}"
        )
    if not fields[1].lstrip("-").isdigit():
        raise VcfFormatError(path, line_number, f"POS {fields[1]!r} is not an integer")
    if not fields[0] or not fields[3] or not fields[4]:
        raise VcfFormatError(path, line_number, f"empty CHROM, REF or ALT in {line[:80]!r}")
    return tuple(fields)


class VcfReader:
    """Iterate a VCF's records in file order: ``for rec in VcfReader(path): ...``.

    ``header`` is read on construction. Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._fh = open_text(path)
        self._line_number = 0
        meta: list[str] = []
        columns: tuple[str, ...] | None = None
        self._first: str | None = None
        for raw in self._fh:
            self._line_number += 1
            line = raw.rstrip("\r\n")
            if line.startswith("##"):
                meta.append(line)
            elif line.startswith("#"):
                columns = tuple(line.split())
            elif line.strip():
                self._first = line
                break
        self.header = VcfHeader(tuple(meta), columns)

    def __iter__(self) -> Iterator[VcfRecord]:
        index = 0
        if self._first is not None:
            yield VcfRecord(
                index, self._line_number, _split(self._first, self.path, self._line_number)
            )
            index += 1
            self._first = None
        for raw in self._fh:
            self._line_number += 1
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                raise VcfFormatError(
                    self.path, self._line_number, "header line after the first data line"
                )
            yield VcfRecord(index, self._line_number, _split(line, self.path, self._line_number))
            index += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> VcfReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_records(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(records, variants) in a VCF: data lines, and ALT alleles over them (for progress)."""
    records = variants = 0
    with open_text(path) as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            records += 1
            parts = line.split("\t", 5)
            variants += parts[4].count(",") + 1 if len(parts) > 4 else 1
    return records, variants
