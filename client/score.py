"""``varfx score``: annotate a VCF with variant-effect scores from a varfx server.

The input is read in blocks of records (``VcfBlocks``: arrays over the block's bytes), each
block cut on record boundaries into batches bounded in variants and in allele bytes, scored
through ``Client.stream_batches`` (bounded in flight, retried, resumed after a server restart,
``parallel`` streams merged back in order) and written back a whole block at a time, in input
order. A regular output file is written as ``OUT.partial`` (plain text, complete records only)
and moved into place at the end: bgzipped + tabix-indexed when the name ends in ``.gz``. A pipe,
device, symlink or ``-`` (standard output) is written directly, never replaced.
``resume=True`` checks ``OUT.partial``'s header (the manifest, the input's content identity),
skips the records it holds and goes on, so the final file equals an uninterrupted run's byte
for byte.

A model with a calibration (``ModelInfo.calibration``) is also asked for its QUANTILE, and the
output carries the summary max quantile and its feature (``VARFX_MAX_QUANTILE``,
``VARFX_MAX_QUANTILE_FEATURE``; TSV/Parquet ``max_quantile``, ``max_quantile_feature``) and a
``calibration`` manifest entry naming the background (``none: ...`` for a model without one,
whose calibrated kinds are refused up front).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import stat
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from varfx.client._blocks import VcfBlock, VcfBlocks
from varfx.client._output import FORMATS, BlockScores, OutputSpec, make_writer
from varfx.client._score_errors import ScoreError, ScoreUsageError
from varfx.client._target import open_target
from varfx.client.genome_check import check_genome
from varfx.client.progress import Progress
from varfx.client.types import (
    CALIBRATED_KINDS,
    SCORE_KINDS,
    ModelInfo,
    RefPolicy,
    ScoreTable,
    Status,
)
from varfx.core.variants import VariantBatch

__all__ = [
    "DEFAULT_MAX_UNSCORED",
    "ScoreError",
    "ScoreSummary",
    "ScoreUsageError",
    "calibration_text",
    "choose_model",
    "chunk_bounds",
    "input_identity",
    "output_format",
    "score_vcf",
]

log = logging.getLogger(__name__)

#: Default --max-unscored: a run where more than half of the ALTs could not be scored is
#: almost always the wrong genome build or model, and a pipeline should stop there.
DEFAULT_MAX_UNSCORED = 0.5
#: Default bound on the REF + ALT bytes of one request (well under any message limit).
DEFAULT_BATCH_BYTES = 1 << 20


@dataclass
class ScoreSummary:
    """What a run did: records and variants written (this run and resumed), counts per status,
    seconds, output path and whether it was tabix-indexed."""

    output: str
    records: int = 0
    variants: int = 0
    resumed_records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    indexed: bool = False

    @property
    def variants_per_s(self) -> float:
        return self.variants / self.seconds if self.seconds > 0 else 0.0

    @property
    def unscored_fraction(self) -> float:
        """Fraction of this run's ALTs not scored (0 when there were none)."""
        if not self.variants:
            return 0.0
        return 1.0 - self.statuses.get("OK", 0) / self.variants

    def lines(self) -> list[str]:
        out = [
            f"wrote {'standard output' if self.output == '-' else self.output}: "
            f"{self.records} records this run "
            f"({self.resumed_records} resumed from before), {self.variants} variant-ALTs in "
            f"{self.seconds:.1f} s ({self.variants_per_s:.0f} variants/s)"
        ]
        out += [f"  {name:<22} {n}" for name, n in sorted(self.statuses.items())]
        return out


def output_format(path: str, fmt: str | None) -> str:
    """``vcf``, ``tsv`` or ``parquet``: the given one, else from the file name; ``-`` and
    names without a known extension (``/dev/stdout``, a FIFO) are VCF unless ``fmt`` says.
    A known-looking but unsupported extension (``.csv``, ``.bcf``) is a ScoreUsageError."""
    listing = ", ".join(f"{k} ({' '.join(v)})" for k, v in FORMATS.items())
    if fmt:
        if fmt not in FORMATS:
            raise ScoreUsageError(f"unknown --format {fmt!r}; formats: {listing}")
        return fmt
    name = Path(path).name.lower()
    for kind, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return kind
    if path == "-" or "." not in name or _is_special(path):
        return "vcf"
    raise ScoreUsageError(
        f"cannot tell the output format of {path!r} from its extension; formats: {listing} "
        "(or give --format)"
    )


def _is_special(path: str) -> bool:
    try:
        return os.path.islink(path) or not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def choose_model(models: Sequence[ModelInfo], name: str) -> ModelInfo:
    """The client's rule (``varfx.client.choose_model``: the named model, else the configured
    default, else the only one); a model that cannot be chosen is a ScoreUsageError."""
    from varfx.client._core import choose_model as choose
    from varfx.client.errors import ModelChoiceError

    try:
        return choose(models, name)
    except ModelChoiceError as exc:
        raise ScoreUsageError(str(exc)) from None


def input_identity(path: str) -> str:
    """The input's content identity: size and SHA-256 over its first and last MiB (the same
    file however it is spelled); "" for a pipe or standard input."""
    if path == "-" or _is_special(path):
        return ""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
        h.update(fh.read(1 << 20))
    return f"size={size};sha256_ends={h.hexdigest()[:32]}"


def calibration_text(info: ModelInfo) -> str:
    """The ``calibration`` manifest value: the background's description on one line, or
    ``none: ...`` saying that the model has none (and how to make one)."""
    text = " ".join(str(getattr(info, "calibration", "") or "").split())
    if text:
        return text
    return (
        f"none: model {info.name} v{info.version} has no calibration (no quantiles; "
        f"varfx calibrate REPO/{info.name}/{info.version} --genome FASTA makes one)"
    )


def _manifest(
    info: ModelInfo,
    policy: str,
    reverse_complement: bool,
    indels_as_written: bool,
    genome_check: str,
    identity: str,
    regions: str = "",
) -> tuple[tuple[str, str], ...]:
    from varfx import __version__

    genome = getattr(info, "genome", None)
    out = [
        ("model", info.name),
        ("model_version", str(info.version)),
        ("model_sha256", str(getattr(info, "sha256", "") or "")),
        ("calibration", calibration_text(info)),
        (
            "assembly",
            (getattr(genome, "assembly", "") or info.assembly) if genome else info.assembly,
        ),
        ("genome_digest", str(getattr(genome, "digest", "") or "")),
        ("window_length", str(info.sequence_length)),
        ("reverse_complement", str(reverse_complement).lower()),
        ("ref_policy", policy),
        ("indels", "as-written" if indels_as_written else "left-align"),
        ("genome_check", genome_check),
        ("version", __version__),
    ]
    if getattr(info, "calibration", ""):  # the server serves only a calibration of this file
        out.insert(4, ("calibration_model_sha256", str(getattr(info, "sha256", "") or "")))
    if identity:
        out.append(("input", identity))
    if regions:
        out.append(("regions", regions))
    return tuple(out)


def _command(
    input_path: str,
    model: str,
    fmt: str,
    features: Sequence[str] | None,
    kinds: Sequence[str],
    policy: str,
    reverse_complement: bool,
) -> str:
    """The command that reproduces the run (the input by its name only: resume compares the
    input by content, not by spelling)."""
    name = "-" if input_path == "-" else Path(input_path).name
    parts = ["varfx", "score", name, "--model", model, "--format", fmt]
    if features:
        parts += ["--features", ",".join(features)]
    parts += ["--scores", ",".join(kinds), "--ref-policy", policy]
    if reverse_complement:
        parts.append("--reverse-complement")
    return shlex.join(parts)


def score_vcf(
    client: Any,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str = "",
    fmt: str | None = None,
    features: Sequence[str] | None = None,
    scores: Sequence[str] | str | None = None,
    ref_policy: str = "strict",
    reverse_complement: bool = False,
    indels_as_written: bool = False,
    resume: bool = False,
    batch_size: int = 2000,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    max_in_flight: int = 4,
    parallel: int = 1,
    skip_genome_check: bool = False,
    tsv_comments: bool = False,
    regions: str = "",
    regions_file: str = "",
    progress: bool | None = None,
    block_bytes: int | None = None,
) -> ScoreSummary:
    """Score every record of ``input_path`` (``-``: standard input) and write ``output``
    (``-``: standard output); see the module docstring.

    ``scores``: kinds written per feature (TSV/Parquet: default all four, and the three
    calibrated ones for a calibrated model; VCF: default diff, plus quantile for a calibrated
    model, and only with ``features``); a calibrated kind asked of a model without calibration
    is a ScoreUsageError. ``regions`` (``chr1:1-5000000,chr2``) / ``regions_file`` (BED):
    only the records whose POS lies in them, from a tabix-indexed input (``regions.py``). Raises ScoreUsageError, ScoreError, VcfFormatError (naming
    ``FILE:LINE``) or VarfxError.
    """
    from varfx.client._convert import parse_kinds

    start = time.perf_counter()
    in_path, out_path = str(input_path), str(output)
    fmt = output_format(out_path, fmt)
    if batch_size < 1 or batch_bytes < 1 or max_in_flight < 1 or parallel < 1:
        raise ScoreUsageError("--batch-size, --max-in-flight and --parallel must be >= 1")
    policy = RefPolicy.parse(ref_policy).name.lower()
    info = choose_model(client.list_models(), model)
    if features:
        unknown = [f for f in features if f not in info.features]
        if unknown:
            raise ScoreUsageError(
                f"unknown feature(s) {unknown}; model {info.name} has {list(info.features)}"
            )
    chosen = tuple(features) if features else info.features
    calibrated = bool(getattr(info, "calibration", ""))
    asked = parse_kinds(scores) if scores else ()
    refused = [k for k in asked if k in CALIBRATED_KINDS and not calibrated]
    if refused:
        raise ScoreUsageError(
            f"--scores {','.join(refused)}: model {info.name} v{info.version} has no calibration, "
            f"so the server has no quantiles for it; calibrate it first (varfx calibrate "
            f"REPO/{info.name}/{info.version} --genome FASTA) or leave out {', '.join(refused)}"
        )
    if fmt == "vcf":
        default = ("diff", "quantile") if calibrated else ("diff",)
        kinds = (asked or default) if features else ()
    else:
        kinds = asked or (SCORE_KINDS + CALIBRATED_KINDS if calibrated else SCORE_KINDS)
    if resume and (in_path == "-" or _is_special(in_path)):
        raise ScoreUsageError("--resume needs the input as a regular file (not - or a pipe)")
    blocks_kw: dict[str, Any] = {"block_bytes": block_bytes} if block_bytes else {}
    shard = ""
    if regions or regions_file:
        from varfx.client.regions import parse_regions, read_bed, region_stream

        chosen_regions = parse_regions(regions) if regions else []
        if regions_file:
            chosen_regions += read_bed(regions_file)
        shard = ",".join(str(r) for r in chosen_regions)
        if in_path == "-" or _is_special(in_path):
            raise ScoreUsageError("--regions needs the input as a bgzipped, indexed file")
        blocks_kw["stream"] = region_stream(in_path, chosen_regions)
    with VcfBlocks(in_path, **blocks_kw) as reader:
        if reader.empty and not reader.header.meta and reader.header.columns is None:
            raise ScoreError(f"{reader.path}: empty input (no header and no records)")
        genome_check = check_genome(reader.header, info, reader.path, skip=skip_genome_check)
        spec = OutputSpec(
            model=info,
            features=chosen,
            detail_kinds=kinds,
            ref_policy=policy,
            reverse_complement=reverse_complement,
            command=_command(
                in_path, info.name, fmt, features, kinds or ("diff",), policy, reverse_complement
            ),
            manifest=_manifest(
                info,
                policy,
                reverse_complement,
                indels_as_written,
                genome_check,
                input_identity(in_path),
                shard,
            ),
            notes=policy != "strict",
            tsv_comments=tsv_comments,
            quantile_summary=calibrated,
        )
        summary = ScoreSummary(output=out_path)
        target = open_target(out_path, fmt, spec, resume=resume)
        if target is None:  # --resume of a finished output
            summary.seconds = time.perf_counter() - start
            return summary
        if reader.empty:
            log.warning("%s has no records; writing the header only", reader.path)
        try:
            n_columns = 8
            first = reader.peek_columns()
            if first:
                n_columns = first
            writer = make_writer(fmt, spec) if fmt != "parquet" else target.table_writer()
            done = target.begin(writer.header_lines(reader.header, n_columns))
            summary.resumed_records = done
            show = progress if progress is not None else sys.stderr.isatty()
            totals = (
                _count(in_path) if show and in_path != "-" and not _is_special(in_path) else (0, 0)
            )
            with Progress(totals[1], totals[0], done, enabled=show) as bar:
                _run(
                    client,
                    info,
                    spec,
                    writer,
                    target.out,
                    reader.blocks(skip=done),
                    summary,
                    batch_size,
                    batch_bytes,
                    max_in_flight,
                    parallel,
                    policy,
                    reverse_complement,
                    indels_as_written,
                    bar,
                )
        except BaseException:
            target.abort()
            raise
    summary.indexed = target.finish()
    summary.seconds = time.perf_counter() - start
    return summary


def _count(path: str) -> tuple[int, int]:
    records = variants = 0
    with VcfBlocks(path) as reader:
        for block in reader.blocks():
            records += block.n_records
            variants += len(block.batch)
    return records, variants


def chunk_bounds(block: VcfBlock, batch_size: int, batch_bytes: int) -> list[tuple[int, int]]:
    """Record ranges [lo, hi) of ``block`` that each hold at most ``batch_size`` variants and
    ``batch_bytes`` REF + ALT bytes (a record over either bound goes alone): chunks are cut on
    record boundaries, so a record's ALTs are scored in one request. One Python step per chunk."""
    n_alts = block.n_alts
    off = block.batch.allele_offsets
    var_bytes = off[2::2] - off[0:-1:2] + 16  # REF + ALT + per-variant overhead
    rec_bytes = np.bincount(block.record_of, weights=var_bytes, minlength=block.n_records)
    cum_v = np.concatenate(([0], np.cumsum(n_alts)))
    cum_b = np.concatenate(([0.0], np.cumsum(rec_bytes)))
    out = []
    lo, r = 0, block.n_records
    while lo < r:
        hi_v = int(np.searchsorted(cum_v, cum_v[lo] + batch_size, side="right")) - 1
        hi_b = int(np.searchsorted(cum_b, cum_b[lo] + batch_bytes, side="right")) - 1
        hi = max(min(hi_v, hi_b, r), lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


def _batches(
    blocks: Iterator[VcfBlock], pending: deque[VcfBlock], batch_size: int, batch_bytes: int
) -> Iterator[VariantBatch]:
    """One batch per chunk of each block; the chunk goes in ``pending`` before its batch goes
    out, so each table finds its records."""
    for block in blocks:
        for lo, hi in chunk_bounds(block, batch_size, batch_bytes):
            part = block.slice(lo, hi)
            pending.append(part)
            yield part.batch


def _stream(
    client: Any,
    batches: Iterator[VariantBatch],
    info: ModelInfo,
    kinds: Sequence[str],
    features: Sequence[str],
    policy: str,
    reverse_complement: bool,
    indels_as_written: bool,
    max_in_flight: int,
    parallel: int,
) -> Iterator[ScoreTable]:
    kwargs: dict[str, Any] = {
        "model_version": info.version,  # pinned: a server restarted with another version fails
        "scores": kinds,
        "features": features,
        "ref_policy": policy,
        "reverse_complement": reverse_complement,
        "max_in_flight": max_in_flight,
    }
    if indels_as_written:
        kwargs["indels_as_written"] = True
    yield from client.stream_batches(batches, info.name, parallel=parallel, **kwargs)


def _run(
    client: Any,
    info: ModelInfo,
    spec: OutputSpec,
    writer: Any,
    out: IO[bytes],
    blocks: Iterator[VcfBlock],
    summary: ScoreSummary,
    batch_size: int,
    batch_bytes: int,
    max_in_flight: int,
    parallel: int,
    policy: str,
    reverse_complement: bool,
    indels_as_written: bool,
    bar: Progress,
) -> None:
    from varfx.client._convert import parse_kinds

    pending: deque[VcfBlock] = deque()
    # max |diff| comes with every kind; quantile brings the max quantile
    kinds = parse_kinds(
        (*(spec.detail_kinds or ("diff",)), *(("quantile",) * spec.quantile_summary))
    )
    names = np.array([s.name for s in sorted(Status)])
    tables = _stream(
        client,
        _batches(blocks, pending, batch_size, batch_bytes),
        info,
        kinds,
        spec.features,
        policy,
        reverse_complement,
        indels_as_written,
        max_in_flight,
        parallel,
    )
    expected = dict(spec.manifest)
    for table in tables:
        block = pending.popleft()
        _check_manifest(getattr(table, "manifest", None), expected)
        scores = BlockScores.from_tables([table], spec.detail_kinds)
        if len(scores.status) != len(block.batch):
            raise RuntimeError(f"{len(block.batch)} variants sent, {len(scores.status)} scored")
        out.write(writer.block(block, scores))
        out.flush()
        counts = np.bincount(scores.status.astype(np.int64), minlength=len(names))
        summary.statuses.update({str(names[i]): int(c) for i, c in enumerate(counts) if c})
        summary.variants += len(block.batch)
        summary.records += block.n_records
        bar.update(len(block.batch), block.n_records)
    if pending:
        raise RuntimeError(f"{len(pending)} chunks left without scores")  # a bug, not input


def _check_manifest(got: Any, expected: dict[str, str]) -> None:
    """Each response's manifest against the one in the output's header (where both say):
    a server restarted with another model file or genome mid-run must not mix its scores in."""
    if got is None:
        return
    pairs = [
        ("model_sha256", got.model_sha256),
        ("genome_digest", got.genome_digest),
        ("window_length", str(got.window_length) if got.window_length else ""),
        ("reverse_complement", str(bool(got.reverse_complement)).lower()),
        ("calibration", " ".join(str(getattr(got, "calibration", "") or "").split())),
    ]
    for key, value in pairs:
        want = expected.get(key, "")
        if key == "calibration" and want.startswith("none:"):
            continue  # calibrated since: the raw scores are the same, no quantile is written
        if value and want and value != want:
            raise ScoreError(
                f"the server answered under another manifest: {key} {value} where this run's "
                f"output says {want} (was the server restarted with another model or genome?); "
                "the complete records so far are kept, rerun with --resume against the same "
                "server configuration"
            )
