"""Region shards of a tabix-indexed VCF for ``varfx score --regions / --regions-file``.

A region is ``CHROM``, ``CHROM:BEG`` (to the contig's end) or ``CHROM:BEG-END`` (1-based,
inclusive), as htslib writes them; a BED file gives 0-based half-open intervals. A record belongs
to a region when its POS lies inside it (not when a deletion merely overlaps it), so disjoint
shards hold every record exactly once and ``bcftools concat`` of the shards' outputs equals one
whole run. Regions on one contig must not overlap. ``region_stream`` gives the header and the
regions' records, in the order given, as one byte stream ``VcfBlocks`` reads like a file.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from varfx.client._score_errors import ScoreUsageError

__all__ = ["Region", "parse_regions", "read_bed", "region_stream"]

_REGION = re.compile(r"^(?P<chrom>[^:]+)(?::(?P<beg>\d+)(?:-(?P<end>\d+))?)?$")


@dataclass(frozen=True)
class Region:
    """``chrom`` and 1-based inclusive ``beg``..``end`` (``end`` None: to the contig's end)."""

    chrom: str
    beg: int = 1
    end: int | None = None

    def __str__(self) -> str:
        if self.beg == 1 and self.end is None:
            return self.chrom
        return f"{self.chrom}:{self.beg}" + (f"-{self.end}" if self.end is not None else "")


def parse_regions(text: str) -> list[Region]:
    """``chr1:1-5000000,chr2`` -> regions; ScoreUsageError naming a bad one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = _REGION.match(part)
        if m is None:
            raise ScoreUsageError(f"--regions: {part!r} is not CHROM, CHROM:BEG or CHROM:BEG-END")
        beg = int(m["beg"]) if m["beg"] else 1
        end = int(m["end"]) if m["end"] else None
        if beg < 1 or (end is not None and end < beg):
            raise ScoreUsageError(f"--regions: {part!r} is empty (1-based, BEG <= END)")
        out.append(Region(m["chrom"], beg, end))
    return _check(out)


def read_bed(path: str | os.PathLike[str]) -> list[Region]:
    """Regions of a BED file (0-based half-open; ``track``/``browser``/``#`` lines skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.split()
            if len(cols) < 3 or not cols[1].isdigit() or not cols[2].isdigit():
                raise ScoreUsageError(f"{path}:{n}: a BED line needs CHROM START END: {line!r}")
            start, end = int(cols[1]), int(cols[2])
            if end <= start:
                raise ScoreUsageError(f"{path}:{n}: empty interval {start}-{end}")
            out.append(Region(cols[0], start + 1, end))
    if not out:
        raise ScoreUsageError(f"{path}: no regions")
    return _check(out)


def _check(regions: list[Region]) -> list[Region]:
    by_chrom: dict[str, list[Region]] = {}
    for r in regions:
        by_chrom.setdefault(r.chrom, []).append(r)
    for chrom, rs in by_chrom.items():
        rs = sorted(rs, key=lambda r: r.beg)
        for a, b in itertools.pairwise(rs):
            if a.end is None or a.end >= b.beg:
                raise ScoreUsageError(f"regions {a} and {b} overlap on {chrom}")
    return regions


class _Chunks(io.RawIOBase):
    """A read-only stream over an iterator of byte strings."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._parts)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def region_stream(path: str, regions: Sequence[Region]) -> io.BufferedReader:
    """The VCF header and the records whose POS lies in ``regions`` (in that order), as bytes.
    Needs a bgzipped VCF with a ``.tbi``/``.csi`` index (ScoreUsageError otherwise)."""
    import pysam

    try:
        tbx = pysam.TabixFile(path)
    except (OSError, ValueError) as exc:
        raise ScoreUsageError(
            f"--regions needs a bgzipped VCF with a tabix index (.tbi/.csi): {path}: {exc}"
        ) from None
    contigs = set(tbx.contigs)

    def parts() -> Iterator[bytes]:
        try:
            yield ("\n".join(tbx.header) + "\n").encode("utf-8") if tbx.header else b""
            for r in regions:
                if r.chrom not in contigs:
                    continue  # a shard may name contigs the VCF has no records on
                lines = []
                for line in tbx.fetch(r.chrom, r.beg - 1, r.end):
                    pos = line.split("\t", 2)[1]
                    if int(pos) >= r.beg and (r.end is None or int(pos) <= r.end):
                        lines.append(line)
                    if len(lines) >= 4096:
                        yield ("\n".join(lines) + "\n").encode("utf-8")
                        lines = []
                if lines:
                    yield ("\n".join(lines) + "\n").encode("utf-8")
        finally:
            tbx.close()

    return io.BufferedReader(_Chunks(parts()), buffer_size=1 << 18)
