"""A forgiving VCF reader: plain or (b)gzipped text, record by record (for people and tests).

``VcfReader`` yields one ``VcfRecord`` per data line, built from the columnar blocks of
``varfx.client._blocks.VcfBlocks`` (one copy of the reading rules: what pysam/htslib refuse and
real files contain is read, e.g. no ``#CHROM`` line, data rows with fewer columns than the
header, a header with stray spaces, ``.`` alleles, REF == ALT, Windows line ends, a BOM, no final
newline; a row that cannot be read raises VcfFormatError naming ``FILE:LINE``). Each record keeps
its raw columns; ``variants()`` splits multi-allelic records into one Variant per ALT.
``varfx score`` works on the blocks themselves, not on records.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from varfx.client._blocks import VcfBlocks, VcfHeader, open_binary
from varfx.client._output import VCF_COLUMNS
from varfx.client.types import Variant

__all__ = ["VCF_COLUMNS", "VcfHeader", "VcfReader", "VcfRecord", "count_records", "open_text"]


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a VCF for reading as text (``-``: standard input); gzip/bgzip detected from the
    magic bytes; a pipe is opened once."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")


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


class VcfReader:
    """Iterate a VCF's records in file order: ``for rec in VcfReader(path): ...``.

    ``header`` is read on construction. Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._blocks = VcfBlocks(path)
        self.path = self._blocks.path
        self.header = self._blocks.header

    def __iter__(self) -> Iterator[VcfRecord]:
        for block in self._blocks.blocks():
            for i in range(block.n_records):
                fields = tuple(block.line(i).decode("utf-8").split("\t"))
                yield VcfRecord(block.first_index + i, int(block.line_number[i]), fields)

    def close(self) -> None:
        self._blocks.close()

    def __enter__(self) -> VcfReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_records(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(records, variants) in a VCF: data lines, and ALT alleles over them."""
    records = variants = 0
    with VcfBlocks(path) as reader:
        for block in reader.blocks():
            records += block.n_records
            variants += len(block.batch)
    return records, variants
