"""Writers for ``varfx score``: annotated VCF and TSV, as plain text, complete records only.

Both take records and their per-ALT scores (``add(record, table, rows)``) and write plain text to
a stream; ``varfx score`` compresses/indexes at the end. Numbers are written with ``%.6g``;
unscored values are ``.`` (VCF) or empty (TSV). No dates go into headers, so a resumed run
writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from varfx.client.types import ModelInfo, ScoreTable, Status
from varfx.client.vcf import VCF_COLUMNS, VcfHeader, VcfRecord

__all__ = ["ChunkText", "OutputSpec", "TsvWriter", "VcfWriter", "info_key", "make_writer"]

FORMULAS = (
    "ref=p(ref window), alt=p(alt window) (probabilities 0..1); diff=alt-ref (probability "
    "difference); log2fc=log2(alt/(1-alt))-log2(ref/(1-ref)) (log2 odds ratio; p clipped to "
    "[1e-6,1-1e-6])"
)
_STATUS_NAMES = np.array([s.name for s in sorted(Status)], dtype=object)
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.]")


def info_key(kind: str, feature: str) -> str:
    """A VCF 4.3-legal INFO key for one feature's score: ``VARFX_DIFF_<feature>`` with any
    character outside ``[A-Za-z0-9_.]`` replaced by ``_``."""
    return f"VARFX_{kind.upper()}_{_KEY_BAD.sub('_', feature)}"


@dataclass(frozen=True)
class OutputSpec:
    """What goes into the output: model, the score kinds and features written per feature
    (``detail_kinds``; empty = summary only, for VCF without --features), and the command."""

    model: ModelInfo
    features: tuple[str, ...]
    detail_kinds: tuple[str, ...]
    ref_policy: str
    reverse_complement: bool
    command: str


class ChunkText:
    """One ScoreTable prepared for writing, once per chunk, with whole-chunk operations: the
    status/summary columns as Python lists, the per-feature numbers as float64 ``[n, K*F]``
    (kinds x features) and, given a row format, every scored row's numbers formatted by one
    ``%`` over the whole chunk (``values[i]``; ``row_missing`` where not scored)."""

    def __init__(
        self,
        table: ScoreTable,
        kinds: Sequence[str],
        missing: str,
        row_fmt: str = "",
        row_missing: str = "",
    ) -> None:
        ok = table.ok
        self.ok = ok.tolist()
        self.status = _STATUS_NAMES[table.status.astype(np.int64)].tolist()
        self.messages = table.messages
        mad = np.char.mod("%.6g", table.max_abs_diff.astype(np.float64))
        self.mad = np.where(ok, mad, missing).tolist()
        feats = np.array(list(table.features) + [""], dtype=object)
        self.feature = np.where(ok, feats[table.max_index], missing).tolist()
        n = len(table)
        parts = [table.array(kind).astype(np.float64) for kind in kinds]
        self.numbers = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))
        self.values = _format_rows(self.numbers, ok, row_fmt, row_missing) if row_fmt else []

    @classmethod
    def concat(cls, parts: Sequence[tuple[ChunkText, slice]]) -> ChunkText:
        """The rows ``s`` of each ``(text, s)``, in order (a record split across chunks)."""
        out = cls.__new__(cls)
        out.ok = [x for t, s in parts for x in t.ok[s]]
        out.status = [x for t, s in parts for x in t.status[s]]
        out.messages = tuple(m for t, s in parts for m in t.messages[s])
        out.mad = [x for t, s in parts for x in t.mad[s]]
        out.feature = [x for t, s in parts for x in t.feature[s]]
        out.numbers = np.concatenate([t.numbers[s] for t, s in parts], axis=0)
        out.values = [x for t, s in parts for x in t.values[s]]
        return out

    def strings(self, rows: slice, missing: str) -> np.ndarray:
        """The numbers of ``rows`` as ``%.6g`` strings [k, K*F], ``missing`` where not scored."""
        text = np.char.mod("%.6g", self.numbers[rows])
        ok = np.asarray(self.ok[rows], dtype=bool)
        return np.where(ok[:, None], text, missing).astype(object)


def _format_rows(numbers: np.ndarray, ok: np.ndarray, row_fmt: str, row_missing: str) -> list[str]:
    """``row_fmt % tuple(row)`` for every OK row of float64 [n, W] (one ``%`` for all of them;
    ``row_fmt`` must not contain a newline), ``row_missing`` for the others."""
    scored = numbers[ok]
    if len(scored):
        text = ("\n".join([row_fmt] * len(scored)) % tuple(scored.ravel().tolist())).split("\n")
    else:
        text = []
    if len(scored) == len(numbers):
        return text
    out = [row_missing] * len(numbers)
    for i, value in zip(np.flatnonzero(ok).tolist(), text, strict=True):
        out[i] = value
    return out


class VcfWriter:
    """Annotated VCF: the input records with VARFX_* INFO keys, one value per ALT (Number=A)."""

    suffix_missing = "."

    def __init__(self, out: IO[str] | Any, spec: OutputSpec) -> None:
        self.out = out
        self.spec = spec
        keys = [info_key(k, f) for k in spec.detail_kinds for f in spec.features]
        self._prefixes = np.array([k + "=" for k in keys], dtype=object)
        # one formatting operation per single-ALT record
        self._fmt = ";".join(f"{k}=%.6g" for k in keys)
        self._missing = ";".join(f"{k}=." for k in keys)

    def chunk_text(self, table: ScoreTable) -> ChunkText:
        """A chunk's scores prepared for ``write_record``."""
        return ChunkText(table, self.spec.detail_kinds, ".", self._fmt, self._missing)

    def header_lines(self, header: VcfHeader, n_columns: int) -> list[str]:
        spec, m = self.spec, self.spec.model
        lines = [f"##fileformat={header.fileformat or 'VCFv4.3'}"]
        lines += [
            line
            for line in header.meta
            if not line.startswith("##fileformat=")
            and not line.startswith("##INFO=<ID=VARFX_")
            and not line.startswith("##varfx")
        ]
        lines += [
            '##INFO=<ID=VARFX_STATUS,Number=A,Type=String,Description="varfx: OK, or why this '
            "ALT was not scored (REF_MISMATCH, UNKNOWN_CHROMOSOME, POSITION_OUT_OF_RANGE, "
            'SYMBOLIC_ALLELE, INDEL_TOO_LONG, INVALID_ALLELE, REF_EQUALS_ALT)">',
            '##INFO=<ID=VARFX_MAX_ABS_DIFF,Number=A,Type=Float,Description="varfx: max over '
            'features of |alt-ref| (probability difference, 0..1)">',
            '##INFO=<ID=VARFX_MAX_FEATURE,Number=A,Type=String,Description="varfx: feature '
            'where max |alt-ref| occurs">',
        ]
        units = {
            "ref": "probability of the feature with the REF allele (0..1)",
            "alt": "probability of the feature with the ALT allele (0..1)",
            "diff": "alt-ref (probability difference, -1..1)",
            "log2fc": "log2 odds ratio alt vs ref",
        }
        for kind in spec.detail_kinds:
            for f in spec.features:
                lines.append(
                    f"##INFO=<ID={info_key(kind, f)},Number=A,Type=Float,"
                    f'Description="varfx: {kind} for feature {f}: {units[kind]}">'
                )
        lines += [
            f"##varfx_model={m.name}",
            f"##varfx_model_version={m.version}",
            f"##varfx_assembly={m.assembly}",
            f"##varfx_window_length={m.sequence_length}",
            f"##varfx_features={','.join(spec.features)}",
            f"##varfx_ref_policy={spec.ref_policy}",
            f"##varfx_reverse_complement={str(spec.reverse_complement).lower()}",
            f"##varfx_formulas={FORMULAS}",
            f"##varfx_command={spec.command}",
        ]
        columns = list(header.columns or VCF_COLUMNS)
        columns = columns + list(VCF_COLUMNS[len(columns) :]) if len(columns) < 8 else columns
        if len(columns) == 8 and n_columns > 8:
            columns += ["FORMAT"] + [f"SAMPLE{i}" for i in range(1, n_columns - 8)]
        columns[0] = "#CHROM"
        lines.append("\t".join(columns))
        return lines

    def write_record(self, record: VcfRecord, text: ChunkText, rows: slice) -> None:
        fields = list(record.fields) + ["."] * (8 - len(record.fields))
        old = fields[7]
        keep = [kv for kv in old.split(";") if kv and kv != "." and not kv.startswith("VARFX_")]
        if rows.stop - rows.start == 1:
            i = rows.start
            status, mad, feature = text.status[i], text.mad[i], text.feature[i]
        else:
            status = ",".join(text.status[rows])
            mad, feature = ",".join(text.mad[rows]), ",".join(text.feature[rows])
        ours = [
            f"VARFX_STATUS={status}",
            f"VARFX_MAX_ABS_DIFF={mad}",
            f"VARFX_MAX_FEATURE={feature}",
        ]
        if len(self._prefixes):
            if rows.stop - rows.start == 1:
                ours.append(text.values[rows.start])
            else:  # multi-allelic: join the ALTs' values feature by feature, with numpy
                vals = text.strings(rows, ".")
                joined = vals[0]
                for extra in vals[1:]:
                    joined = joined + "," + extra
                ours.append(";".join(self._prefixes + joined))
        fields[7] = ";".join(keep + ours)
        self.out.write("\t".join(fields) + "\n")

    @staticmethod
    def count_done(lines: Sequence[str]) -> int:
        return sum(1 for line in lines if not line.startswith("#"))


class TsvWriter:
    """TSV: one row per variant-ALT; ``record`` is the 1-based input record number."""

    suffix_missing = ""

    def __init__(self, out: IO[str] | Any, spec: OutputSpec) -> None:
        self.out = out
        self.spec = spec
        width = len(spec.detail_kinds) * len(spec.features)
        self._fmt = "\t".join(["%.6g"] * width)
        self._missing = "\t" * (width - 1) if width else ""

    def header_lines(self, header: VcfHeader, n_columns: int) -> list[str]:
        spec, m = self.spec, self.spec.model
        cols = ["record", "chrom", "pos", "id", "ref", "alt", "status", "message"]
        cols += ["max_abs_diff", "max_feature"]
        cols += [f"{k}_{f}" for k in spec.detail_kinds for f in spec.features]
        return [
            f"# varfx model={m.name} version={m.version} assembly={m.assembly} "
            f"window_length={m.sequence_length} ref_policy={spec.ref_policy} "
            f"reverse_complement={str(spec.reverse_complement).lower()}",
            f"# {FORMULAS}",
            f"# command: {spec.command}",
            "\t".join(cols),
        ]

    def chunk_text(self, table: ScoreTable) -> ChunkText:
        """A chunk's scores prepared for ``write_record``."""
        return ChunkText(table, self.spec.detail_kinds, "", self._fmt, self._missing)

    def write_record(self, record: VcfRecord, text: ChunkText, rows: slice) -> None:
        chrom, pos, vid, ref = record.fields[:4]
        number = str(record.index + 1)
        lines = []
        for i, alt in zip(range(rows.start, rows.stop), record.alts, strict=True):
            msg = text.messages[i]
            if "\t" in msg or "\n" in msg:
                msg = msg.replace("\t", " ").replace("\n", " ")
            head = "\t".join(
                (
                    number,
                    chrom,
                    pos,
                    vid,
                    ref,
                    alt,
                    text.status[i],
                    msg,
                    text.mad[i],
                    text.feature[i],
                )
            )
            lines.append(head + "\t" + text.values[i] + "\n" if self._fmt else head + "\n")
        self.out.write("".join(lines))  # one write per record

    @staticmethod
    def count_done(lines: Sequence[str]) -> int:
        for line in reversed(lines):
            if line and not line.startswith("#") and line.split("\t", 1)[0].isdigit():
                return int(line.split("\t", 1)[0])
        return 0


def make_writer(fmt: str, out: IO[str] | None, spec: OutputSpec) -> VcfWriter | TsvWriter:
    if fmt == "vcf":
        return VcfWriter(out, spec)
    if fmt == "tsv":
        return TsvWriter(out, spec)
    raise ValueError(f"unknown output format {fmt!r}; expected vcf or tsv")
