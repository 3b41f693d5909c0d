"""Calibration backgrounds and the calibration run (``varfx calibrate``, ``varfx export``).

Backgrounds:

- ``random_snvs``: random SNV sites drawn uniformly over the genome (contigs weighted by length)
  whose whole model window (length L, the variant at index L/2 - 1) lies inside the contig and
  holds only A/C/G/T; at each site all three alternative bases are taken (so a site's ref window
  is predicted once for three variants);
- ``random_indels``: one indel at each of ``n`` random sites drawn the same way (the window plus
  the longest deletion N-free), half insertions of random bases after the site's base, half
  deletions of the genome's bases after it; lengths 1..20 bp with P(k) proportional to k^-1.8
  (56% 1 bp, 16% 2 bp, 12% over 5 bp: the shape of population indel spectra). The scoring verb
  normalises them (trimmed, left-aligned) as it does any indel, and builds their windows by the
  same rule;
- ``vcf_variants``: every ALT of every record of a VCF (e.g. gnomAD common variants); records
  the scorer cannot score (status not OK: REF mismatch, unknown contig, ...) are left out and
  counted.

``calibrate`` scores backgrounds with the in-process scoring verb (``scoring.score``) in chunks,
splits the scored rows by the variant class the scorer saw (``ScoreResult.variant_class``) and
builds the ``Calibration`` (server/calibration.py): one null per class group. A VCF background's
class with fewer than ``min_class`` scored variants (default ``MIN_CLASS`` = 1000) gets no null
of its own: its variants are ranked against the substitution null, and the description and each
such variant's message say so (a random background's sizes are the caller's choice and kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varfx import __version__
from varfx.core.variants import VariantBatch
from varfx.core.windows import WindowRule
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.calibration import GROUPS, LABELS, Calibration, build_calibration
from varfx.server.genome import Genome
from varfx.server.scoring import ScoringOptions, score

__all__ = [
    "INDEL_LENGTH_EXPONENT",
    "MAX_INDEL_LENGTH",
    "MIN_CLASS",
    "Background",
    "BackgroundError",
    "calibrate",
    "calibrate_model",
    "indel_lengths",
    "random_indels",
    "random_snvs",
    "vcf_variants",
]

log = logging.getLogger(__name__)

_ACGT = np.zeros(256, dtype=bool)
_ACGT[list(b"ACGT")] = True
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
#: Random indel lengths: 1..MAX_INDEL_LENGTH bp, P(k) proportional to k ** -INDEL_LENGTH_EXPONENT.
MAX_INDEL_LENGTH = 20
INDEL_LENGTH_EXPONENT = 1.8
#: Fewest scored variants of a class a VCF background must hold for that class's own null.
MIN_CLASS = 1000


class BackgroundError(ValueError):
    """A background cannot be built; the message names the file or value."""


@dataclass(frozen=True)
class Background:
    """Variants to calibrate on and what they are.

    Attributes:
        variants: the background variants.
        description: one line, e.g. "99999 random N-free SNVs (3 alleles at 33333 sites) on
            GRCh37 (seed 0)".
        info: JSON-ready details (kind, seed, source file name and SHA-256, ...).
    """

    variants: VariantBatch
    description: str
    info: dict[str, Any]

    def describe(self, label: str, count: int, skipped: int) -> str:
        """The description of the ``count`` scored variants of one class (``label``, e.g.
        "indels") of this background, ``skipped`` of it not scorable."""
        if self.info.get("kind") == "vcf":
            text = (
                f"{count} {label} of {self.info['file']} (SHA-256 {self.info['file_sha256'][:12]})"
            )
        else:
            text = self.description
        return text + (f"; {skipped} not scorable left out" if skipped else "")


def random_snvs(
    genome: Genome, n: int, length: int, *, seed: int = 0, assembly: str = ""
) -> Background:
    """About ``n`` random SNVs (``ceil(n / 3)`` sites, all three ALTs each; see the module
    docstring) whose window of ``length`` bases is inside the contig and N-free; fewer on a
    genome with fewer such sites (every one of them is then used)."""
    if n < 1:
        raise BackgroundError(f"background size must be at least 1, got {n}")
    c = WindowRule(length).center
    names, picked, have = _sites(genome, length, -(-n // 3), np.random.default_rng(seed))
    chroms: list[str] = []
    pos: list[int] = []
    refs: list[bytes] = []
    alts: list[bytes] = []
    for k in sorted(picked):
        starts = np.array(sorted(picked[k]), dtype=np.int64)
        ref = genome.fetch_windows(names[k], starts + c, 1)[:, 0]  # the variant's base
        alt = np.stack([_BASES[(np.searchsorted(_BASES, ref) + j) % 4] for j in (1, 2, 3)], 1)
        p = (starts + c + 1).tolist()  # 1-based
        for i in range(len(starts)):
            for a in alt[i].tolist():
                chroms.append(names[k])
                pos.append(p[i])
                refs.append(bytes([ref[i]]))
                alts.append(bytes([a]))
    count = len(pos)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    label = f"{assembly or 'genome'} ({Path(genome.path).name}: {shown})"
    return Background(
        VariantBatch.from_columns(chroms, pos, refs, alts),
        f"{count} random N-free SNVs (3 alleles at {have} sites) on {label} (seed {seed})",
        {
            "kind": "random-snvs",
            "seed": seed,
            "sites": have,
            "genome": Path(genome.path).name,
            "assembly": assembly,
        },
    )


def indel_lengths(n: int, rng: np.random.Generator, longest: int = MAX_INDEL_LENGTH) -> np.ndarray:
    """int64 [n] random indel lengths 1..longest, P(k) ~ k ** -INDEL_LENGTH_EXPONENT."""
    k = np.arange(1, longest + 1)
    weight = k**-INDEL_LENGTH_EXPONENT
    return rng.choice(k, size=n, p=weight / weight.sum()).astype(np.int64)


def random_indels(
    genome: Genome, n: int, length: int, *, seed: int = 0, assembly: str = ""
) -> Background:
    """``n`` random indels, one per random site (see the module docstring), whose window of
    ``length`` bases plus the longest deletion is inside the contig and N-free; fewer on a genome
    with fewer such sites. Draws use ``numpy.random.default_rng([seed, 1])`` (independent of
    ``random_snvs(seed=seed)``'s sites)."""
    if n < 1:
        raise BackgroundError(f"background size must be at least 1, got {n}")
    rule = WindowRule(length)
    c, longest = rule.center, min(MAX_INDEL_LENGTH, rule.max_indel)  # what a window shows
    rng = np.random.default_rng([seed, 1])
    span = length + MAX_INDEL_LENGTH + 1
    names, picked, have = _sites(genome, span, n, rng)
    chroms: list[str] = []
    pos: list[int] = []
    segs: list[np.ndarray] = []
    for k in sorted(picked):
        starts = np.array(sorted(picked[k]), dtype=np.int64)
        # the site's base and the MAX_INDEL_LENGTH after it (ASCII), N-free by the draw
        segs.append(genome.fetch_windows(names[k], starts + c, MAX_INDEL_LENGTH + 1))
        chroms += [names[k]] * len(starts)
        pos += (starts + c + 1).tolist()  # 1-based: the anchor base
    seg = np.concatenate(segs)
    size = indel_lengths(have, rng, longest)
    insertion = rng.random(have) < 0.5
    inserted = _BASES[rng.integers(0, 4, size=int(size[insertion].sum()))].tobytes()
    refs: list[bytes] = []
    alts: list[bytes] = []
    at = 0
    for row, k, ins in zip(seg.tolist(), size.tolist(), insertion.tolist(), strict=True):
        anchor = bytes(row[:1])
        if ins:
            refs.append(anchor)
            alts.append(anchor + inserted[at : at + k])
            at += k
        else:
            refs.append(bytes(row[: k + 1]))
            alts.append(anchor)
    n_ins = int(insertion.sum())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    label = f"{assembly or 'genome'} ({Path(genome.path).name}: {shown})"
    return Background(
        VariantBatch.from_columns(chroms, pos, refs, alts),
        f"{have} random indels ({n_ins} insertions of random bases, {have - n_ins} deletions; "
        f"1-{longest} bp, P(k) ~ k^-{INDEL_LENGTH_EXPONENT}) on {label} (seed {seed})",
        {
            "kind": "random-indels",
            "seed": seed,
            "sites": have,
            "insertions": n_ins,
            "deletions": have - n_ins,
            "lengths": {"max": longest, "exponent": INDEL_LENGTH_EXPONENT},
            "genome": Path(genome.path).name,
            "assembly": assembly,
        },
    )


def _sites(
    genome: Genome, length: int, sites: int, rng: np.random.Generator
) -> tuple[list[str], dict[int, set[int]], int]:
    """``sites`` distinct random N-free window starts of ``length`` bases (fewer on a genome
    with fewer: all of them): (contig names, contig index -> starts, how many)."""
    names = [k for k, size in genome.contigs.items() if size >= length]
    if not names:
        raise BackgroundError(f"{genome.path}: no contig is as long as the model window ({length})")
    room = np.array([genome.contigs[k] - length + 1 for k in names], dtype=np.int64)
    if room.sum() > 4 * sites:
        picked, have = _draw_sites(genome, names, room, length, sites, rng)
        return names, picked, have
    # a small genome: every N-free window, then a random subset
    picked = _all_sites(genome, names, room, length)
    have = sum(len(v) for v in picked.values())
    if have > sites:
        flat = [(k, s) for k in sorted(picked) for s in sorted(picked[k])]
        keep = rng.choice(len(flat), size=sites, replace=False)
        picked = {}
        for i in keep.tolist():
            picked.setdefault(flat[i][0], set()).add(flat[i][1])
        have = sites
    if not have:
        raise BackgroundError(f"{genome.path}: no N-free window of {length} bases")
    return names, picked, have


def _all_sites(
    genome: Genome, names: list[str], room: np.ndarray, length: int
) -> dict[int, set[int]]:
    """Every N-free window start of every contig (contig index -> starts)."""
    picked: dict[int, set[int]] = {}
    for k, size in enumerate(room.tolist()):
        for lo in range(0, size, 65_536):
            starts = np.arange(lo, min(size, lo + 65_536), dtype=np.int64)
            windows = genome.fetch_windows(names[k], starts, length)
            picked.setdefault(k, set()).update(starts[_ACGT[windows].all(axis=1)].tolist())
    return picked


def _draw_sites(
    genome: Genome,
    names: list[str],
    room: np.ndarray,
    length: int,
    sites: int,
    rng: np.random.Generator,
) -> tuple[dict[int, set[int]], int]:
    """``sites`` distinct random N-free window starts (contig index -> starts), in blocks."""
    picked: dict[int, set[int]] = {}
    have = 0
    for _ in range(1000):
        want = max(1024, int((sites - have) * 1.5))
        contig = rng.choice(len(names), size=want, p=room / room.sum())
        offset = (rng.random(want) * room[contig]).astype(np.int64)  # window start, 0-based
        for k in np.unique(contig).tolist():
            starts = offset[contig == k]
            windows = genome.fetch_windows(names[k], starts, length)
            good = starts[_ACGT[windows].all(axis=1)]
            chosen = picked.setdefault(k, set())
            for s in good.tolist():
                if have >= sites:
                    break
                if s not in chosen:
                    chosen.add(s)
                    have += 1
        if have >= sites:
            return picked, have
    raise BackgroundError(f"{genome.path}: found only {have} N-free windows of {length} bases")


def vcf_variants(path: str | Path, *, limit: int = 0) -> Background:
    """Every ALT of every record of a VCF (plain, gzip or bgzip), up to ``limit`` (0: all).
    Symbolic and '*' ALTs are kept (the scorer counts them as not scored)."""
    import gzip

    from varfx.server.genome_identity import file_sha256

    path = Path(path)
    if not path.is_file():
        raise BackgroundError(f"{path}: no such VCF file")
    chroms: list[str] = []
    pos: list[int] = []
    refs: list[str] = []
    alts: list[str] = []
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rt") if gz else open(path) as fh:
            for n, line in enumerate(fh, start=1):
                if line.startswith("#") or not line.strip():
                    continue
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 5 or not cols[1].isdigit():
                    raise BackgroundError(f"{path}:{n}: not a VCF record (CHROM POS ID REF ALT)")
                for alt in cols[4].split(","):
                    chroms.append(cols[0])
                    pos.append(int(cols[1]))
                    refs.append(cols[3])
                    alts.append(alt)
                if limit and len(pos) >= limit:
                    break
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BackgroundError(f"{path}: cannot read as VCF ({exc})") from None
    if not pos:
        raise BackgroundError(f"{path}: no variants")
    sha = file_sha256(path)
    return Background(
        VariantBatch.from_columns(chroms, pos, refs, alts),
        f"{len(pos)} variants of {path.name} (SHA-256 {sha[:12]})",
        {"kind": "vcf", "file": path.name, "file_sha256": sha, "records_read": len(pos)},
    )


def calibrate(
    runner: Any,
    genome: Genome,
    background: Background | Sequence[Background],
    *,
    model_sha256: str,
    min_class: int = 0,
    chunk: int = 8192,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Score the background(s) with ``runner`` (a ``ModelRunner``) on ``genome`` and build the
    calibration, one null per class group of the scored rows (``min_class``: see
    ``build_calibration``); variants that do not score OK are left out (counted in ``info``)."""
    spec = runner.spec
    options = ScoringOptions(kinds=(pb.SCORE_KIND_DIFF, pb.SCORE_KIND_LOG2FC))
    backgrounds = [background] if isinstance(background, Background) else list(background)
    total = sum(len(b.variants) for b in backgrounds)
    diffs, log2fcs, classes, source = [], [], [], []
    skipped = [0] * len(backgrounds)
    done = 0
    start = time.monotonic()
    for j, bg in enumerate(backgrounds):
        batch = bg.variants
        for lo in range(0, len(batch), chunk):
            part = batch.take(lo, min(lo + chunk, len(batch)))
            result = score(runner, genome, part, options, batch_size=batch_size)
            diffs.append(result.diff)
            log2fcs.append(result.log2fc)
            classes.append(
                result.variant_class
                if result.variant_class is not None
                else np.zeros(len(result.ok_index), np.int8)
            )
            source.append(np.full(len(result.ok_index), j, dtype=np.int64))
            skipped[j] += len(part) - len(result.ok_index)
            done += len(part)
            if progress is not None:
                progress(done, total)
    diff = np.concatenate(diffs)
    if not len(diff):
        raise BackgroundError(f"none of the {total} background variants could be scored")
    row_class, row_source = np.concatenate(classes), np.concatenate(source)
    descriptions, told = {}, set()
    for group, members in GROUPS.items():
        rows = np.isin(row_class, members)
        parts = []
        for j in np.unique(row_source[rows]).tolist():  # the left-out count told once
            count = int((rows & (row_source == j)).sum())
            parts.append(
                backgrounds[j].describe(LABELS[group], count, 0 if j in told else skipped[j])
            )
            told.add(j)
        descriptions[group] = "; ".join(parts)
    info: dict[str, Any] = dict(backgrounds[0].info)
    if len(backgrounds) > 1:  # what they share
        info = {k: v for k, v in info.items() if k in ("seed", "genome", "assembly")}
        info["kind"] = "+".join(str(b.info.get("kind")) for b in backgrounds)
    info.update(
        backgrounds=[dict(b.info, description=b.description) for b in backgrounds],
        not_scored=sum(skipped),
        model=spec.name,
        model_version=spec.version,
        window_length=spec.sequence_length,
        reverse_complement=False,
        varfx_version=__version__,
        seconds=round(time.monotonic() - start, 1),
    )
    return build_calibration(
        spec.features,
        diff,
        np.concatenate(log2fcs),
        model_sha256=model_sha256,
        description="",
        descriptions=descriptions,
        classes=row_class,
        min_class=min_class,
        info=info,
    )


def calibrate_model(
    model_dir: str | Path,
    genome_path: str | Path,
    *,
    n: int = 100_000,
    indels: int | None = None,
    background_vcf: str | Path | None = None,
    min_class: int = MIN_CLASS,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Calibration, tuple[Path, Path]]:
    """Calibrate the model in ``model_dir`` (``<repo>/<name>/<version>``) and save the result
    beside it; returns the calibration and the two files written. The background: ``n`` random
    SNVs and ``indels`` random indels (None: as many as ``n``; 0: none, indels are then ranked
    against the SNVs, which the description says), or the variants of ``background_vcf`` (a class with fewer than
    ``min_class`` scored variants gets no null of its own)."""
    from varfx.server.calibration import save_calibration
    from varfx.server.genome_identity import file_sha256
    from varfx.server.repository import ModelEntry, ModelRepositoryError
    from varfx.server.runtime import ModelRunner

    model_dir = Path(model_dir)
    onnx = model_dir / "model.onnx"
    if not onnx.is_file() or not model_dir.name.isdigit():
        raise ModelRepositoryError(
            f"{model_dir}: expected a model version directory <repo>/<name>/<version> "
            "holding model.onnx"
        )
    indels = n if indels is None else indels
    if indels < 0:
        raise BackgroundError(f"the number of random indels must be >= 0, got {indels}")
    if min_class < 1:
        raise BackgroundError(f"the smallest class must be at least 1 variant, got {min_class}")
    version = int(model_dir.name)
    entry = ModelEntry(model_dir.parent.name, version, (version,), onnx)
    runner = ModelRunner(entry, "cpu", intra_op_threads=threads)
    spec = runner.spec
    with Genome(genome_path) as genome:
        if background_vcf is not None:
            backgrounds = [vcf_variants(background_vcf, limit=0)]
        else:
            length, assembly = spec.sequence_length, spec.assembly
            backgrounds = [random_snvs(genome, n, length, seed=seed, assembly=assembly)]
            if indels:
                backgrounds.append(
                    random_indels(genome, indels, length, seed=seed, assembly=assembly)
                )
        calibration = calibrate(
            runner,
            genome,
            backgrounds,
            model_sha256=file_sha256(onnx),
            min_class=min_class if background_vcf is not None else 1,
            progress=progress,
        )
    return calibration, save_calibration(calibration, model_dir)
