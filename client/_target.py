"""Where ``varfx score`` writes: a regular file through ``OUT.partial``, or a stream.

A regular file (or a path that does not exist yet) is written as ``OUT.partial`` and moved into
place at the end (bgzip + tabix index when the name ends in ``.gz``, ``os.replace`` otherwise),
so an interrupted run leaves complete records that ``--resume`` continues. Anything else, ``-``
(standard output), a pipe, a device or a symlink (``/dev/stdout``), is written directly and never
replaced; such output cannot be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

from varfx.client._output import OutputSpec
from varfx.client._score_errors import PartialMismatchError, ScoreUsageError

__all__ = ["Target", "open_target", "prepare_partial"]

log = logging.getLogger(__name__)
_STEP = 1 << 20


def _regular_or_new(path: str) -> bool:
    if os.path.islink(path):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


def open_target(path: str, fmt: str, spec: OutputSpec, *, resume: bool) -> Target | None:
    """The target for ``path``; None when ``resume`` finds the output finished already."""
    if path == "-" or not _regular_or_new(path):
        if fmt == "parquet":
            raise ScoreUsageError(f"Parquet output needs a regular file, not {path!r}")
        if resume:
            raise ScoreUsageError(f"--resume needs a regular output file, not {path!r}")
        return Target(path, fmt, spec, stream=True)
    partial = path + ".partial"
    if resume and not os.path.exists(partial) and os.path.exists(path):
        log.info("%s is complete already; nothing to resume", path)
        return None
    return Target(path, fmt, spec, stream=False, resume=resume and os.path.exists(partial))


class Target:
    """One output: ``begin(header_lines)`` -> records already done, ``out`` (bytes), then
    ``finish()`` (True when a tabix index was written) or ``abort()``."""

    def __init__(
        self, path: str, fmt: str, spec: OutputSpec, *, stream: bool, resume: bool = False
    ) -> None:
        self.path, self.fmt, self.spec = path, fmt, spec
        self.stream, self.resume = stream, resume
        self.partial = path + ".partial"
        self.out: IO[bytes] = None  # type: ignore[assignment]
        self._table_writer: Any = None
        self._bgzf: Any = None

    @property
    def _gz(self) -> bool:
        return self.path.lower().endswith((".gz", ".bgz"))

    @property
    def sidecar(self) -> str:
        """TSV without comment lines and Parquet keep the manifest here (JSON)."""
        return self.path + ".manifest.json"

    def table_writer(self) -> Any:
        from varfx.client._parquet import ParquetWriter

        self._table_writer = ParquetWriter(self.spec, self)
        return self._table_writer

    def begin(self, header_lines: list[str]) -> int:
        header = ("\n".join(header_lines) + "\n").encode("utf-8")
        if self.fmt == "parquet":
            self.out = self._table_writer.open(self.path if self.stream else self.partial)
            return 0
        if self.stream:
            if self.path == "-":
                self.out = sys.stdout.buffer
            elif self._gz:
                import pysam

                self.out = pysam.BGZFile(self.path, "wb")  # type: ignore[call-arg,assignment]
            else:
                self.out = open(self.path, "wb")  # noqa: SIM115 - closed by finish/abort
            self.out.write(header)
            return 0
        manifest = self._sidecar_text()
        done = None
        if self.resume:
            if manifest is not None:
                _check_sidecar(self.partial + ".manifest.json", manifest)
            done = prepare_partial(self.partial, header, self.fmt)
        if done is None:
            self.out = self._open_plain("wb", 0)
            self.out.write(header)
            self.out.flush()
            if manifest is not None:
                Path(self.partial + ".manifest.json").write_text(manifest)
            return 0
        log.info("resuming after %d complete records in %s", done, self.partial)
        self.out = self._open_plain("ab", os.path.getsize(self.partial))
        return done

    def _open_plain(self, mode: str, resumed: int) -> IO[bytes]:
        """The partial file; for a .gz output also compressed as it is written (BGZF in a
        worker thread, starting with the ``resumed`` bytes already in the partial file)."""
        plain: IO[bytes] = open(self.partial, mode)  # noqa: SIM115 - closed by finish/abort
        if not self._gz:
            return plain
        from varfx.client._bgzf import BgzfWriter, Tee

        self._bgzf = BgzfWriter(
            self.partial + ".bgz",
            prefix_from=self.partial if resumed else None,
            prefix_size=resumed,
        )
        return Tee(plain, self._bgzf)  # type: ignore[return-value]

    def _sidecar_text(self) -> str | None:
        if self.fmt != "tsv" or self.spec.tsv_comments:
            return None
        from varfx.client._output import _manifest

        return json.dumps(dict(_manifest(self.spec)), indent=1, sort_keys=True) + "\n"

    def abort(self) -> None:
        """Close what is open; the partial file stays for ``--resume``."""
        if self._bgzf is not None:
            self._bgzf.abort()
        if self.out is not None and self.out is not sys.stdout.buffer:
            try:
                self.out.close()
            except Exception:
                log.debug("closing %s failed", self.path, exc_info=True)
        elif self.out is not None:
            self.out.flush()

    def finish(self) -> bool:
        """Move the finished output into place. The partial file goes last, so an
        interruption here is finished by ``--resume``."""
        if self.fmt == "parquet":
            self._table_writer.close()
            if not self.stream:
                os.replace(self.partial, self.path)
            return False
        if self.stream:
            if self.out is sys.stdout.buffer:
                self.out.flush()
            else:
                self.out.close()
            return False
        self.out.close()
        sidecar = self.partial + ".manifest.json"
        if os.path.exists(sidecar):
            os.replace(sidecar, self.sidecar)
        if not self._gz:
            os.replace(self.partial, self.path)
            return False
        import pysam

        indexed = False
        self._bgzf.close()
        os.replace(self.partial + ".bgz", self.path)
        if self.fmt == "vcf":
            try:
                pysam.tabix_index(self.path, preset="vcf", force=True)
                indexed = True
            except Exception as exc:
                log.warning("%s not indexed (%s); sort it to index it", self.path, exc)
        os.unlink(self.partial)
        return indexed


def _check_sidecar(path: str, manifest: str) -> None:
    try:
        old = Path(path).read_text()
    except FileNotFoundError:
        return
    if old != manifest:
        raise PartialMismatchError(
            f"{path} records another manifest than this run's; remove the partial output or "
            "run without --resume"
        )


def prepare_partial(partial: str, header: bytes, fmt: str) -> int | None:
    """Check ``partial``'s header against ``header`` and cut it back to its last complete
    record; returns the number of input records it holds, or None when it holds less than the
    header (killed while starting: begin again). Reads the file in 1 MiB steps (bounded memory).

    A TSV's last record may have only some of its ALT rows: its rows are dropped and it is
    scored again (the same bytes), so the count is the last record number minus one."""
    size = os.path.getsize(partial)
    with open(partial, "rb") as fh:
        head = fh.read(len(header))
    if len(head) < len(header) and header.startswith(head):
        return None
    if head != header:
        _mismatch(partial, head, header)
    cut = _last_newline(partial, size, len(header)) + 1
    if fmt == "tsv" and cut > len(header):
        cut, done = _tsv_cut(partial, len(header), cut)
    else:
        done = _count_newlines(partial, len(header), cut)
    if cut < size:
        with open(partial, "r+b") as fh:
            fh.truncate(cut)
    return done


def _mismatch(partial: str, head: bytes, header: bytes) -> None:
    have = head.decode("utf-8", "replace").split("\n")
    want = header.decode("utf-8", "replace").split("\n")
    for i, (a, b) in enumerate(zip(have + [""] * len(want), want, strict=False)):
        if a != b:
            raise PartialMismatchError(
                f"{partial} was written with other settings or another manifest (header line {i + 1} "
                f"is {a[:100]!r}, this run writes {b[:100]!r}); remove it or run without --resume"
            )
    raise PartialMismatchError(f"{partial} has another header; remove it or run without --resume")


def _last_newline(path: str, size: int, floor: int) -> int:
    """Offset of the last ``\\n`` at or after ``floor - 1`` (the header's own last one)."""
    with open(path, "rb") as fh:
        end = size
        while end > floor:
            lo = max(floor, end - _STEP)
            fh.seek(lo)
            chunk = fh.read(end - lo)
            i = chunk.rfind(b"\n")
            if i >= 0:
                return lo + i
            end = lo
    return floor - 1


def _count_newlines(path: str, lo: int, hi: int) -> int:
    n = 0
    with open(path, "rb") as fh:
        fh.seek(lo)
        left = hi - lo
        while left > 0:
            chunk = fh.read(min(_STEP * 8, left))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _tsv_cut(path: str, floor: int, cut: int) -> tuple[int, int]:
    """(offset where the last record's rows start, records before it), reading back from
    ``cut`` in 1 MiB steps until a row of another record shows up."""
    with open(path, "rb") as fh:
        lo, buf = cut, b""
        last: bytes | None = None
        while True:
            new_lo = max(floor, lo - _STEP)
            fh.seek(new_lo)
            buf = fh.read(lo - new_lo) + buf
            lo = new_lo
            lines = buf[:-1].split(b"\n")  # buf spans [lo, cut) and ends in a newline
            complete = lines if lo == floor else lines[1:]  # the first may be cut short
            if last is None and complete:
                last = complete[-1].split(b"\t", 1)[0]
            offset = cut
            for line in reversed(complete):
                if line.split(b"\t", 1)[0] != last:
                    return offset, int(last or b"1") - 1
                offset -= len(line) + 1
            if lo == floor:
                return floor, int(last or b"1") - 1
