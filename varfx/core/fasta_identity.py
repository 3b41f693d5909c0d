"""The genome identity of a FASTA file: per contig its name, length and MD5, computed once.

``fasta_identity(path)`` streams the file (plain, gzip or bgzip) in 4 MiB blocks through
``hashlib.md5`` of the upper-cased bases, line ends dropped (the VCF ``##contig`` ``md5`` and
SAM ``M5`` convention); no contig is held in memory as one string. The result is cached as JSON
beside the FASTA (``<fasta>.varfx-md5.json``), keyed by the FASTA's size and mtime, so a changed
file is hashed again. Where that directory cannot be written the cache goes to
``$XDG_CACHE_HOME/varfx/genome-md5/`` (default ``~/.cache/varfx/genome-md5/``); a cache that
cannot be written anywhere costs a recomputation next time, never an error.

A FASTA may declare what it is in ``<fasta>.varfx-genome.json``: ``{"assembly": "GRCh37"}``, and
for simulated genomes ``{"assembly": "varfx-sim-seed0", "family": "varfx-sim"}``
(``varfx simulate`` writes one). ``fasta_identity`` reads it.

Standard library only (no pysam), so training, the server and the client can all use it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from varfx.core.genomes import ContigIdentity, GenomeIdentity, canonical_assembly, same_assembly

__all__ = [
    "CACHE_SUFFIX",
    "DECLARATION_SUFFIX",
    "FastaIdentityError",
    "cache_paths",
    "compute_contigs",
    "declared",
    "fasta_identity",
    "fastas_identity",
    "write_declaration",
]

log = logging.getLogger(__name__)

CACHE_SUFFIX = ".varfx-md5.json"
DECLARATION_SUFFIX = ".varfx-genome.json"
_CACHE_FORMAT = 1
_BLOCK = 1 << 22  # 4 MiB of file per read
# bytes.translate table: ASCII upper case; with delete=b"\r\n\t " it also drops line ends
_UPPER = bytes(b - 32 if ord("a") <= b <= ord("z") else b for b in range(256))
_DROP = b"\r\n\t "


class FastaIdentityError(ValueError):
    """The file is not a readable FASTA; the message names the file (and line where known)."""


def _open(path: Path) -> IO[bytes]:
    fh = open(path, "rb")  # noqa: SIM115  # returned open
    head = fh.read(2)
    fh.seek(0)
    if head == b"\x1f\x8b":  # gzip, bgzip included (a series of gzip members)
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def compute_contigs(path: str | os.PathLike[str]) -> tuple[ContigIdentity, ...]:
    """Every contig of a FASTA: (name, length, MD5 hex of the upper-cased bases), in file order.

    The name is the header's first word (as samtools faidx and pysam name it). Reads the file
    once in 4 MiB blocks. Raises FastaIdentityError for a file that is not FASTA (sequence
    before the first header, a duplicate name, a truncated gzip stream) and OSError when it
    cannot be read.
    """
    p = Path(path)
    contigs: list[ContigIdentity] = []
    seen: set[str] = set()
    name: str | None = None
    md5 = hashlib.md5(usedforsecurity=False)
    length = 0
    header: bytearray | None = None  # a header line being read (it may span blocks)
    at_line_start = True
    line = 1  # current line number, for messages

    def finish() -> None:
        if name is not None:
            contigs.append(ContigIdentity(name, length, md5.hexdigest()))

    try:
        with _open(p) as fh:
            while True:
                buf = fh.read(_BLOCK)
                if not buf:
                    break
                pos, end = 0, len(buf)
                while pos < end:
                    if header is not None:
                        nl = buf.find(b"\n", pos)
                        stop = end if nl < 0 else nl
                        header += buf[pos:stop]
                        if nl < 0:
                            pos = end
                            continue
                        words = header.decode("utf-8", "replace").split()
                        if not words:
                            raise FastaIdentityError(f"{p}:{line}: FASTA header without a name")
                        finish()
                        name = words[0]
                        if name in seen:
                            raise FastaIdentityError(f"{p}:{line}: contig {name!r} appears twice")
                        seen.add(name)
                        md5 = hashlib.md5(usedforsecurity=False)
                        length = 0
                        header = None
                        line += 1
                        pos, at_line_start = nl + 1, True
                        continue
                    if at_line_start and buf[pos] == 0x3E:  # ">"
                        header = bytearray()
                        pos += 1
                        continue
                    nxt = buf.find(b"\n>", pos)
                    stop = end if nxt < 0 else nxt + 1
                    seq = buf[pos:stop].translate(_UPPER, _DROP)
                    if seq:
                        if name is None:
                            raise FastaIdentityError(
                                f"{p}:{line}: sequence before the first '>' header (not a FASTA file?)"
                            )
                        md5.update(seq)
                        length += len(seq)
                    line += buf.count(b"\n", pos, stop)
                    at_line_start = buf[stop - 1] == 0x0A
                    pos = stop
    except (EOFError, gzip.BadGzipFile) as exc:
        raise FastaIdentityError(f"{p}: truncated or corrupt gzip stream: {exc}") from None
    if header is not None:  # a last header line without a newline
        words = header.decode("utf-8", "replace").split()
        if words:
            finish()
            name, md5, length = words[0], hashlib.md5(usedforsecurity=False), 0
    finish()
    if not contigs:
        raise FastaIdentityError(f"{p}: no FASTA record (no line starting with '>')")
    return tuple(contigs)


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "varfx" / "genome-md5"


def cache_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where the MD5 cache of ``path`` goes: beside it, and the per-user fallback (named by the
    SHA-256 of the FASTA's absolute path)."""
    p = Path(os.path.abspath(path))
    key = hashlib.sha256(str(p).encode()).hexdigest()[:32]
    return p.with_name(p.name + CACHE_SUFFIX), _user_cache_dir() / f"{key}.json"


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_cache(
    cache: Path, stamp: dict[str, Any], fasta: Path
) -> tuple[ContigIdentity, ...] | None:
    try:
        if not cache.is_file():
            return None
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("format") != _CACHE_FORMAT:
            return None
        if data.get("size") != stamp["size"] or data.get("mtime_ns") != stamp["mtime_ns"]:
            return None
        if data.get("path") not in (None, str(fasta)):  # the per-user cache names its FASTA
            return None
        return tuple(ContigIdentity(str(n), int(ln), str(m)) for n, ln, m in data["contigs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _writable(directory: Path) -> bool:
    """Whether ``directory`` may be written: writable to us and not marked read-only (no write
    bit at all, as a read-only data share is; root would otherwise write through it)."""
    try:
        return os.access(directory, os.W_OK) and bool(directory.stat().st_mode & 0o222)
    except OSError:
        return False


def _write_cache(cache: Path, data: dict[str, Any]) -> bool:
    """Write ``data`` to ``cache`` atomically; False (nothing written) where it cannot be. Never
    writes through a path that exists as something other than a regular file (a link, a device)."""
    try:
        if cache.is_symlink() or (cache.exists() and not cache.is_file()):
            return False
        cache.parent.mkdir(parents=True, exist_ok=True)
        if not _writable(cache.parent):
            return False
        fd, tmp = tempfile.mkstemp(prefix=cache.name + ".", suffix=".tmp", dir=cache.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.chmod(tmp, 0o644)
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.debug("cannot write genome MD5 cache %s: %s", cache, exc)
        return False
    return True


def declared(path: str | os.PathLike[str]) -> dict[str, str]:
    """What ``<fasta>.varfx-genome.json`` declares: ``{"assembly": ..., "family": ...}`` (only
    the keys present; {} without the file). Raises FastaIdentityError for a broken file."""
    decl = Path(os.fspath(path) + DECLARATION_SUFFIX)
    if not decl.is_file():
        return {}
    try:
        data = json.loads(decl.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FastaIdentityError(f"{decl}: not a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise FastaIdentityError(f"{decl}: must be a JSON object, got {type(data).__name__}")
    out: dict[str, str] = {}
    for key in ("assembly", "family"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise FastaIdentityError(f"{decl}: {key!r} must be a string, got {value!r}")
            out[key] = value
    return out


def write_declaration(path: str | os.PathLike[str], *, assembly: str, family: str = "") -> Path:
    """Write ``<fasta>.varfx-genome.json`` declaring the FASTA's assembly (and family)."""
    decl = Path(os.fspath(path) + DECLARATION_SUFFIX)
    body: dict[str, str] = {"assembly": assembly}
    if family:
        body["family"] = family
    if decl.is_symlink() or (decl.exists() and not decl.is_file()):
        raise FastaIdentityError(f"{decl} exists and is not a regular file; not writing through it")
    decl.write_text(json.dumps(body, sort_keys=True) + "\n", encoding="utf-8")
    return decl


def fasta_identity(
    path: str | os.PathLike[str], *, assembly: str = "", family: str = ""
) -> GenomeIdentity:
    """The identity of the FASTA at ``path``: its contigs (cached, see the module docstring),
    ``assembly`` and ``family`` (arguments first, else what ``<fasta>.varfx-genome.json``
    declares, else "").

    Raises FastaIdentityError (not a FASTA, or a declaration that contradicts ``assembly``)
    and OSError (unreadable file).
    """
    p = Path(os.path.abspath(path))
    decl = declared(p)
    given = canonical_assembly(assembly)
    if given and decl.get("assembly") and not same_assembly(given, decl["assembly"]):
        raise FastaIdentityError(
            f"{p} is declared assembly {decl['assembly']!r} (in {p.name}{DECLARATION_SUFFIX}) "
            f"but was given as {assembly!r}"
        )
    stamp = _stamp(p)
    beside, per_user = cache_paths(p)
    contigs = _read_cache(beside, stamp, p) or _read_cache(per_user, stamp, p)
    if contigs is None:
        contigs = compute_contigs(p)
        data = {
            "format": _CACHE_FORMAT,
            **stamp,
            "contigs": [[c.name, c.length, c.md5] for c in contigs],
        }
        if stamp != _stamp(p):  # changed while read: hash what is there now, next time
            log.warning("%s changed while its MD5s were computed; not caching them", p)
        elif not _write_cache(beside, data):
            _write_cache(per_user, {**data, "path": str(p)})
    return GenomeIdentity(
        assembly=assembly if given else decl.get("assembly", ""),
        contigs=contigs,
        family=family or decl.get("family", ""),
    )


def fastas_identity(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, assembly: str = ""
) -> GenomeIdentity:
    """The identity of one genome held in one or more FASTAs (e.g. chr20 and chrX in two
    files, as training reads them): their contigs in order, ``assembly`` (else the one the
    files declare), and the family they declare. Raises FastaIdentityError when two files
    declare different assemblies or families, or share a contig name."""
    many = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    parts = [fasta_identity(p) for p in many]
    for what in ("assembly", "family"):
        values = {getattr(g, what) for g in parts if getattr(g, what)}
        if len(values) > 1:
            raise FastaIdentityError(
                f"the FASTAs {[str(p) for p in many]} declare different {what} names {sorted(values)}"
            )
    contigs = tuple(c for g in parts for c in g.contigs)
    names = [c.name for c in contigs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise FastaIdentityError(
            f"contigs {dup} appear in more than one of {[str(p) for p in many]}"
        )
    declared_asm = next((g.assembly for g in parts if g.assembly), "")
    return GenomeIdentity(
        assembly=assembly if canonical_assembly(assembly) else declared_asm,
        contigs=contigs,
        family=next((g.family for g in parts if g.family), ""),
    )
