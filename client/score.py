"""``varfx score``: annotate a VCF with variant-effect scores from a varfx server.

Records stream from the input (``VcfReader``), multi-allelic records split into one Variant per
ALT, through ``Client.iter_chunks`` (bounded in flight, retried, resumed after a server restart),
and are written back in input order. Output goes to ``OUT.partial`` as plain text with only
complete records flushed; at the end it is bgzipped + tabix-indexed (``.gz``) or renamed.
``resume=True`` counts the records in ``OUT.partial``, skips that many input records and goes on,
so nothing is scored twice and the final file equals an uninterrupted run's byte for byte.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pysam

from varfx.client._client import Client
from varfx.client._convert import parse_kinds
from varfx.client._output import ChunkText, OutputSpec, TsvWriter, VcfWriter, make_writer
from varfx.client.progress import Progress
from varfx.client.types import ModelInfo, RefPolicy, Variant
from varfx.client.vcf import VcfReader, VcfRecord, count_records

__all__ = ["ScoreError", "ScoreSummary", "choose_model", "output_format", "score_vcf"]

log = logging.getLogger(__name__)


class ScoreError(Exception):
    """A ``varfx score`` job cannot run (bad option, unknown model, mismatched resume file)."""


@dataclass
class ScoreSummary:
    """What a run did: records and variants written (this run and resumed), counts per status,
    seconds, output path and whether it was tabix-indexed."""

    output: Path
    records: int = 0
    variants: int = 0
    resumed_records: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    indexed: bool = False

    @property
    def variants_per_s(self) -> float:
        return self.variants / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"wrote {self.output}: {self.records} records this run "
            f"({self.resumed_records} resumed from before), {self.variants} variant-ALTs in "
            f"{self.seconds:.1f} s ({self.variants_per_s:.0f} variants/s)"
        ]
        out += [f"  {name:<22} {n}" for name, n in sorted(self.statuses.items())]
        return out


def output_format(path: Path, fmt: str | None) -> str:
    """``vcf`` or ``tsv``: the given one, else from the file name (``.tsv[.gz]`` -> tsv)."""
    if fmt:
        if fmt not in ("vcf", "tsv"):
            raise ScoreError(f"unknown --format {fmt!r}; expected vcf or tsv")
        return fmt
    name = path.name.lower().removesuffix(".gz").removesuffix(".bgz")
    return "tsv" if name.endswith((".tsv", ".txt")) else "vcf"


def choose_model(models: Sequence[ModelInfo], name: str) -> ModelInfo:
    """The named model, or the server's default when ``name`` is empty."""
    if not models:
        raise ScoreError("the server holds no models")
    if name:
        for m in models:
            if m.name == name:
                return m
        raise ScoreError(f"model {name!r} not on the server; it has {[m.name for m in models]}")
    for m in models:
        if m.is_default:
            return m
    return models[0]


def _canonical_command(
    input_path: str,
    model: str,
    fmt: str,
    spec_features: Sequence[str] | None,
    kinds: Sequence[str],
    ref_policy: str,
    reverse_complement: bool,
) -> str:
    parts = ["varfx", "score", input_path, "--model", model, "--format", fmt]
    if spec_features:
        parts += ["--features", ",".join(spec_features)]
    parts += ["--scores", ",".join(kinds), "--ref-policy", ref_policy]
    if reverse_complement:
        parts.append("--reverse-complement")
    return shlex.join(parts)


def _prepare_partial(
    partial: Path,
    header_lines: list[str],
    writer_cls: type[VcfWriter] | type[TsvWriter],
    alts_of: Callable[[int], int],
) -> int | None:
    """Check an existing partial file's header and cut it back to its last complete record;
    returns the number of input records it holds, or None when it holds less than a header
    (killed while starting: begin again). ``alts_of(i)``: ALT count of input record i (TSV
    writes one line per ALT, so the last record may have only some of its lines)."""
    data = partial.read_bytes()
    cut = data.rfind(b"\n") + 1
    lines = data[:cut].decode("utf-8").split("\n")[:-1]
    if len(lines) < len(header_lines) and lines == header_lines[: len(lines)]:
        return None
    head = lines[: len(header_lines)]
    if head != header_lines:
        for i, (a, b) in enumerate(
            zip(head + [""] * len(header_lines), header_lines, strict=False)
        ):
            if a != b:
                raise ScoreError(
                    f"{partial} was written with other settings (header line {i + 1} is "
                    f"{a[:100]!r}, this run writes {b[:100]!r}); remove it or run without --resume"
                )
    body = lines[len(header_lines) :]
    done = int(writer_cls.count_done(body))
    if writer_cls is TsvWriter and done:
        n_alts = alts_of(done - 1)
        tail = [line for line in body[-n_alts:] if line.startswith(f"{done}\t")]
        if len(tail) < n_alts:  # the last record lost some of its ALT lines
            cut -= sum(len(line.encode("utf-8")) + 1 for line in tail)
            done -= 1
    if cut < len(data):
        with open(partial, "r+b") as fh:
            fh.truncate(cut)
    return done


def _alts_of(path: str | os.PathLike[str]) -> Callable[[int], int]:
    def alts(index: int) -> int:
        with VcfReader(path) as reader:
            for rec in reader:
                if rec.index == index:
                    return len(rec.alts)
        raise ScoreError(f"the partial output has more records than {path}; is it the same input?")

    return alts


def _finish(partial: Path, output: Path, fmt: str) -> bool:
    """Move the finished text into place: bgzip (+ tabix for VCF) when the name ends in .gz.
    The partial file goes last, so an interruption here is finished by ``--resume``."""
    if not output.name.endswith((".gz", ".bgz")):
        os.replace(partial, output)
        return False
    indexed = False
    pysam.tabix_compress(str(partial), str(output), force=True)
    if fmt == "vcf":
        try:
            pysam.tabix_index(str(output), preset="vcf", force=True)
            indexed = True
        except Exception as exc:  # unsorted input: keep the file, say why there is no index
            log.warning("%s not indexed (%s); sort it to index it", output, exc)
    partial.unlink()
    return indexed


def score_vcf(
    client: Client,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str = "",
    fmt: str | None = None,
    features: Sequence[str] | None = None,
    scores: Sequence[str] | str | None = None,
    ref_policy: str = "strict",
    reverse_complement: bool = False,
    resume: bool = False,
    batch_size: int = 500,
    max_in_flight: int = 4,
    progress: bool | None = None,
) -> ScoreSummary:
    """Score every record of ``input_path`` and write ``output`` (see the module docstring).

    ``scores``: kinds written per feature (TSV: default all four; VCF: default diff, and only
    with ``features``). Raises ScoreError, VcfFormatError (naming the line) or VarfxError.
    """
    start = time.perf_counter()
    out_path = Path(output)
    fmt = output_format(out_path, fmt)
    policy = RefPolicy.parse(ref_policy).name.lower()
    info = choose_model(client.list_models(), model)
    if features:
        unknown = [f for f in features if f not in info.features]
        if unknown:
            raise ScoreError(
                f"unknown feature(s) {unknown}; model {info.name} has {list(info.features)}"
            )
    chosen = tuple(features) if features else info.features
    if fmt == "vcf":
        kinds = parse_kinds(scores or "diff") if features else ()
    else:
        kinds = parse_kinds(scores)
    spec = OutputSpec(
        model=info,
        features=chosen,
        detail_kinds=kinds,
        ref_policy=policy,
        reverse_complement=reverse_complement,
        command=_canonical_command(
            str(input_path),
            info.name,
            fmt,
            features,
            kinds or ("diff",),
            policy,
            reverse_complement,
        ),
    )
    partial = out_path.with_name(out_path.name + ".partial")
    if resume and not partial.exists() and out_path.exists():
        log.info("%s is complete already; nothing to resume", out_path)
        return ScoreSummary(output=out_path, seconds=time.perf_counter() - start)
    summary = ScoreSummary(output=out_path)
    show = progress if progress is not None else sys.stderr.isatty()
    # the counting pass reads the whole input once more: only for a bar someone sees
    total_records, total_variants = count_records(input_path) if show else (0, 0)
    with VcfReader(input_path) as reader:
        records = iter(reader)
        first = next(records, None)
        n_columns = len(first.fields) if first is not None else 8
        writer = make_writer(fmt, None, spec)
        header_lines = writer.header_lines(reader.header, n_columns)
        done = None
        if resume and partial.exists():
            done = _prepare_partial(partial, header_lines, type(writer), _alts_of(input_path))
        with open(partial, "w" if done is None else "a", encoding="utf-8", newline="\n") as out:
            writer.out = out
            if done is None:
                done = 0
                out.write("\n".join(header_lines) + "\n")
                out.flush()
            else:
                log.info("resuming after %d complete records in %s", done, partial)
            summary.resumed_records = done
            bar = Progress(total_variants, total_records, done, enabled=show)
            _run(client, info, spec, writer, _chain(first, records), done, summary,
                 batch_size, max_in_flight, policy, reverse_complement, bar)  # fmt: skip
    summary.indexed = _finish(partial, out_path, fmt)
    summary.seconds = time.perf_counter() - start
    return summary


def _chain(first: VcfRecord | None, rest: Iterator[VcfRecord]) -> Iterator[VcfRecord]:
    if first is not None:
        yield first
    yield from rest


def _run(
    client: Client,
    info: ModelInfo,
    spec: OutputSpec,
    writer: VcfWriter | TsvWriter,
    records: Iterator[VcfRecord],
    skip: int,
    summary: ScoreSummary,
    batch_size: int,
    max_in_flight: int,
    policy: str,
    reverse_complement: bool,
    bar: Progress,
) -> None:
    queue: deque[VcfRecord] = deque()

    def variants() -> Iterator[Variant]:
        for rec in records:
            if rec.index < skip:
                bar.skip(rec.n_alts)
                continue
            queue.append(rec)  # before its variants go out: results find their record
            yield from rec.variants()

    write = writer.write_record
    out = writer.out
    carry: list[tuple[ChunkText, int]] = []  # rows of a record split across chunks
    with bar:
        for table in client.iter_chunks(
            variants(),
            info.name,
            model_version=info.version,  # pinned: a server restarted with another version fails
            scores=spec.detail_kinds or ("diff",),
            features=spec.features,
            ref_policy=policy,
            reverse_complement=reverse_complement,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
        ):
            text = writer.chunk_text(table)
            summary.statuses.update(text.status)
            summary.variants += len(table)
            i, n = 0, len(table)
            written = 0
            while queue:
                rec = queue[0]
                k = rec.n_alts - len(carry)
                if i + k > n:
                    carry.extend((text, r) for r in range(i, n))
                    break
                if carry:
                    parts = [(t, slice(r, r + 1)) for t, r in carry]
                    merged = ChunkText.concat([*parts, (text, slice(i, i + k))])
                    write(rec, merged, slice(0, rec.n_alts))
                    carry = []
                else:
                    write(rec, text, slice(i, i + k))
                queue.popleft()
                i += k
                written += 1
            out.flush()
            summary.records += written
            bar.update(len(table), written)
    if queue or carry:
        raise RuntimeError(f"{len(queue)} records left without scores")  # a bug, not input
