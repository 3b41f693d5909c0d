"""Writers for ``varfx score``: annotated VCF and TSV, written a block of records at a time.

``VcfWriter.block(block, scores)`` / ``TsvWriter.block(...)`` turn one ``VcfBlock`` and its
per-ALT ``BlockScores`` into the output bytes of all its records with whole-block operations:
the numbers of every variant are formatted by one ``%`` over the block, and each output line is
gathered from the input line's bytes (the VCF keeps every column but INFO byte for byte) and the
formatted text with numpy. Numbers are ``%.6g``; unscored values are ``.`` (VCF) or empty (TSV).
Headers hold no dates, so a resumed run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from varfx.client._blocks import VcfBlock, VcfHeader, gather
from varfx.client.types import ModelInfo, ScoreTable, Status

__all__ = [
    "FORMATS",
    "VCF_COLUMNS",
    "BlockScores",
    "OutputSpec",
    "TsvWriter",
    "VcfWriter",
    "info_key",
    "make_writer",
]

#: The eight fixed VCF columns.
VCF_COLUMNS: tuple[str, ...] = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
#: Output formats and the file names that select them.
FORMATS = {
    "vcf": (".vcf", ".vcf.gz", ".vcf.bgz"),
    "tsv": (".tsv", ".tsv.gz", ".txt", ".txt.gz"),
    "parquet": (".parquet", ".pq"),
}
FORMULAS = (
    "ref=p(ref window), alt=p(alt window) (probabilities 0..1); diff=alt-ref (probability "
    "difference); log2fc=log2(alt/(1-alt))-log2(ref/(1-ref)) (log2 odds ratio; p clipped to "
    "[1e-6,1-1e-6])"
)
CALIBRATED_FORMULAS = (
    "against the N background values b of the feature (##varfx_calibration): "
    "quantile=#{|b|<=|diff|}/N (0..1); signed_quantile=2*#{b<=diff}/N-1 (-1..1); "
    "pvalue=(1+#{|b|>=|diff|})/(1+N); max_quantile=max over features of quantile"
)
_UNITS = {
    "ref": "probability of the feature with the REF allele (0..1)",
    "alt": "probability of the feature with the ALT allele (0..1)",
    "diff": "alt-ref (probability difference, -1..1)",
    "log2fc": "log2 odds ratio alt vs ref",
    "quantile": "fraction of the calibration background with |diff| at most this one (0..1)",
    "signed_quantile": "rank of diff in the calibration background as 2F(diff)-1 (-1..1)",
    "pvalue": "empirical p-value of |diff| against the calibration background",
}
_STATUS_NAMES = np.array([s.name for s in sorted(Status)], dtype=object)
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.]")
# a short line's missing QUAL/FILTER columns (by how many are missing), then INFO's tab
_PADS = np.array(["\t", "\t.\t", "\t.\t.\t"], dtype=object)
_NOTE_ESCAPES = {
    ord(";"): "%3B",
    ord("="): "%3D",
    ord(","): "%2C",
    ord(" "): "_",
    ord("\t"): "_",
    ord("\n"): "_",
    ord("%"): "%25",
}


def info_key(kind: str, feature: str) -> str:
    """A VCF 4.3-legal INFO key for one feature's score: ``VARFX_DIFF_<feature>`` with any
    character outside ``[A-Za-z0-9_.]`` replaced by ``_``."""
    return f"VARFX_{kind.upper()}_{_KEY_BAD.sub('_', feature)}"


@dataclass(frozen=True)
class OutputSpec:
    """What goes into the output: model, the score kinds and features written per feature
    (``detail_kinds``; empty = summary only, for VCF without --features), the run's manifest
    (``##varfx_<key>=<value>`` lines, in order) and whether to add per-ALT notes (REF-policy
    warnings) to the VCF. ``quantile_summary``: the model is calibrated, so the summary
    max quantile and its feature are written (``VARFX_MAX_QUANTILE``, TSV/Parquet columns)."""

    model: ModelInfo
    features: tuple[str, ...]
    detail_kinds: tuple[str, ...]
    ref_policy: str
    reverse_complement: bool
    command: str
    manifest: tuple[tuple[str, str], ...] = ()
    notes: bool = False
    tsv_comments: bool = True
    quantile_summary: bool = False


@dataclass
class BlockScores:
    """The scores of one block's v variants: ``status`` int8 [v], ``messages`` (v strings),
    ``max_abs_diff`` float64 [v], ``max_index`` int64 [v], ``numbers`` float64 [v, K*F]
    (kinds x features, the spec's ``detail_kinds`` order); with quantiles ``max_quantile``
    float64 [v] and ``max_quantile_index`` int64 [v] (None otherwise)."""

    status: np.ndarray
    messages: list[str]
    max_abs_diff: np.ndarray
    max_index: np.ndarray
    numbers: np.ndarray
    features: tuple[str, ...] = field(default=())
    max_quantile: np.ndarray | None = None
    max_quantile_index: np.ndarray | None = None

    @classmethod
    def from_tables(cls, tables: Sequence[ScoreTable], kinds: Sequence[str]) -> BlockScores:
        feats = tables[0].features if tables else ()
        numbers = [
            np.concatenate([t.array(k) for k in kinds], axis=1).astype(np.float64)
            if kinds
            else np.zeros((len(t), 0))
            for t in tables
        ]
        return cls(
            status=np.concatenate([t.status for t in tables]).astype(np.int8),
            messages=[m for t in tables for m in t.messages],
            max_abs_diff=np.concatenate([t.max_abs_diff for t in tables]).astype(np.float64),
            max_index=np.concatenate([t.max_index for t in tables]).astype(np.int64),
            numbers=np.concatenate(numbers, axis=0) if numbers else np.zeros((0, 0)),
            features=tuple(feats),
            max_quantile=_cat([t.max_quantile for t in tables], np.float64),
            max_quantile_index=_cat([t.max_quantile_index for t in tables], np.int64),
        )

    @property
    def ok(self) -> np.ndarray:
        return np.asarray(self.status == Status.OK)

    def status_names(self) -> np.ndarray:
        return _STATUS_NAMES[self.status.astype(np.int64)]  # type: ignore[no-any-return]

    def feature_names(self, missing: str, index: np.ndarray | None = None) -> np.ndarray:
        """The feature of each row's max (``index``: max_index by default), ``missing``
        unless OK."""
        feats = np.array([*self.features, missing], dtype=object)
        index = self.max_index if index is None else index
        return feats[np.where(self.ok, index, len(self.features))]  # type: ignore[no-any-return]

    def quantile_columns(self, missing: str) -> list[np.ndarray]:
        """[max_quantile, its feature name] (the spec's quantile summary)."""
        if self.max_quantile is None or self.max_quantile_index is None:
            raise ValueError(
                "the scores carry no max_quantile (the model's quantiles were not asked for)"
            )
        return [self.max_quantile, self.feature_names(missing, self.max_quantile_index)]


def _cat(parts: list[np.ndarray | None], dtype: type) -> np.ndarray | None:
    """The parts one after the other as ``dtype``; None when there are none or one is None."""
    arrays = [p for p in parts if p is not None]
    if not arrays or len(arrays) < len(parts):
        return None
    return np.concatenate(arrays).astype(dtype)


def _rows_text(formats: list[str], args: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``"\\n".join(formats) % args`` as uint8 and the [lo, hi) of each row (one ``%``)."""
    if not len(formats):
        z = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint8), z, z
    text = ("\n".join(formats) % tuple(args)).encode("utf-8") + b"\n"
    buf = np.frombuffer(text, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    lo = np.concatenate(([0], nl[:-1] + 1))
    return buf, lo, nl


def _flat_args(columns: list[np.ndarray], ok: np.ndarray, ok_only_from: int) -> list[Any]:
    """The ``%`` arguments row by row: every column for OK rows, only the first
    ``ok_only_from`` for the others (their formats print ``.`` in place of the rest)."""
    n = len(ok)
    mat = np.empty((n, len(columns)), dtype=object)
    for j, col in enumerate(columns):
        mat[:, j] = col
    sel = np.ones_like(mat, dtype=bool)
    sel[~ok, ok_only_from:] = False
    return mat[sel].tolist()  # type: ignore[no-any-return]


def _escape_notes(messages: list[str], missing: str) -> np.ndarray:
    out = np.array(messages, dtype=object)
    has = np.flatnonzero(out != "")
    out[out == ""] = missing
    for i in has.tolist():
        out[i] = out[i].translate(_NOTE_ESCAPES)
    return out


class VcfWriter:
    """Annotated VCF: the input records with VARFX_* INFO keys, one value per ALT (Number=A)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.keys = [info_key(k, f) for k in spec.detail_kinds for f in spec.features]
        head = ["VARFX_STATUS=%s"] + (["VARFX_NOTE=%s"] if spec.notes else [])
        ok = head + ["VARFX_MAX_ABS_DIFF=%.6g", "VARFX_MAX_FEATURE=%s"]
        bad = head + ["VARFX_MAX_ABS_DIFF=.", "VARFX_MAX_FEATURE=."]
        if spec.quantile_summary:
            ok += ["VARFX_MAX_QUANTILE=%.6g", "VARFX_MAX_QUANTILE_FEATURE=%s"]
            bad += ["VARFX_MAX_QUANTILE=.", "VARFX_MAX_QUANTILE_FEATURE=."]
        ok += [f"{k}=%.6g" for k in self.keys]
        bad += [f"{k}=." for k in self.keys]
        self._fmt_ok, self._fmt_bad = ";".join(ok), ";".join(bad)

    def header_lines(self, header: VcfHeader, n_columns: int) -> list[str]:
        spec = self.spec
        fileformat = header.fileformat or "VCFv4.3"
        if fileformat in ("VCFv4.0", "VCFv4.1", "VCFv3.3", "VCFv3.2"):
            fileformat = "VCFv4.2"  # Number=A keys need 4.1+; 4.2 is what tools expect
        lines = [f"##fileformat={fileformat}"]
        lines += [
            line
            for line in header.meta
            if not line.startswith("##fileformat=")
            and not line.startswith("##INFO=<ID=VARFX_")
            and not line.startswith("##varfx")
        ]
        statuses = ", ".join(s.name for s in sorted(Status) if s != Status.OK)
        lines += [
            '##INFO=<ID=VARFX_STATUS,Number=A,Type=String,Description="varfx: OK, or why this '
            f'ALT was not scored ({statuses})">',
            '##INFO=<ID=VARFX_MAX_ABS_DIFF,Number=A,Type=Float,Description="varfx: max over '
            'features of |alt-ref| (probability difference, 0..1)">',
            '##INFO=<ID=VARFX_MAX_FEATURE,Number=A,Type=String,Description="varfx: feature '
            'where max |alt-ref| occurs">',
        ]
        if spec.quantile_summary:
            lines += [
                '##INFO=<ID=VARFX_MAX_QUANTILE,Number=A,Type=Float,Description="varfx: max over '
                "features of the quantile: the fraction of the model's calibration background "
                '(##varfx_calibration) with |diff| at most this one (0..1)">',
                '##INFO=<ID=VARFX_MAX_QUANTILE_FEATURE,Number=A,Type=String,Description="varfx: '
                'feature where the max quantile occurs">',
            ]
        if spec.notes:
            lines.append(
                '##INFO=<ID=VARFX_NOTE,Number=A,Type=String,Description="varfx: warning for '
                "this ALT (e.g. the REF-policy note when REF does not match the genome), '.' "
                'when none; ; = , %% percent-encoded, spaces as _">'
            )
        for kind in spec.detail_kinds:
            for f in spec.features:
                lines.append(
                    f"##INFO=<ID={info_key(kind, f)},Number=A,Type=Float,"
                    f'Description="varfx: {kind} for feature {f}: {_UNITS[kind]}">'
                )
        lines += [f"##varfx_{k}={v}" for k, v in _manifest(spec)]
        columns = list(header.columns or VCF_COLUMNS)
        columns = columns + list(VCF_COLUMNS[len(columns) :]) if len(columns) < 8 else columns
        if len(columns) == 8 and n_columns > 8:
            columns += ["FORMAT"] + [f"SAMPLE{i}" for i in range(1, n_columns - 8)]
        columns[0] = "#CHROM"
        lines.append("\t".join(columns))
        return lines

    def _texts(self, scores: BlockScores, pad: np.ndarray, sep: np.ndarray) -> np.ndarray:
        """``pad + sep + VARFX_* text + "\\n"`` of every row as one uint8 buffer (one ``%``)."""
        ok = scores.ok
        lead = "%s%s"
        cols = [pad, sep, scores.status_names()]
        same = len(pad) and (pad == pad[0]).all() and (sep == sep[0]).all()
        if same and "%" not in pad[0] + sep[0]:  # the usual case: one pad and sep, in the format
            lead, cols = pad[0] + sep[0], cols[2:]
        if self.spec.notes:
            cols.append(_escape_notes(scores.messages, "."))
        n_head = len(cols)  # printed for unscored rows too: (pad, sep,) status (and note)
        cols += [scores.max_abs_diff, scores.feature_names(".")]
        if self.spec.quantile_summary:
            cols += scores.quantile_columns(".")
        cols += [scores.numbers[:, j] for j in range(scores.numbers.shape[1])]
        if ok.all():
            formats: Any = [lead + self._fmt_ok] * len(ok)
        else:
            formats = np.where(ok, lead + self._fmt_ok, lead + self._fmt_bad).tolist()
        buf, _, _ = _rows_text(formats, _flat_args(cols, ok, n_head))
        return buf

    def _record_texts(
        self, block: VcfBlock, scores: BlockScores, pad: np.ndarray, sep: np.ndarray
    ) -> np.ndarray:
        """As ``_texts`` but one row per record: a multi-allelic record's ALTs are joined key by
        key (``KEY=a,b``; Python per such record)."""
        n_alts = block.n_alts
        if (n_alts == 1).all():
            return self._texts(scores, pad, sep)
        empty = np.full(len(n_alts), "", dtype=object)
        first = np.concatenate(([0], np.cumsum(n_alts)[:-1]))
        per_variant = self._texts(scores, empty[block.record_of], empty[block.record_of])
        rows = bytes(per_variant).decode("utf-8").split("\n")
        out = []
        for r, (k, v0) in enumerate(zip(n_alts.tolist(), first.tolist(), strict=True)):
            if k == 1:
                text = rows[v0]
            else:
                parts = [t.split(";") for t in rows[v0 : v0 + k]]
                text = ";".join(
                    kv[0].split("=", 1)[0] + "=" + ",".join(p.split("=", 1)[1] for p in kv)
                    for kv in zip(*parts, strict=True)
                )
            out.append(f"{pad[r]}{sep[r]}{text}\n")
        return np.frombuffer("".join(out).encode("utf-8"), dtype=np.uint8)

    def block(self, block: VcfBlock, scores: BlockScores) -> bytes:
        """The output lines of every record of ``block`` (``scores``: one row per ALT).

        Each line is the input line up to FILTER, the kept INFO entries, the VARFX_* keys and
        the FORMAT/sample columns. Built with two byte masks: which input bytes are kept (D) and
        which output bytes come from D rather than from the formatted text (O)."""
        r, ncol = block.n_records, block.n_columns
        base = int(block.start[0])  # a chunk of a block: only its own bytes
        data = np.frombuffer(block.data, dtype=np.uint8)[base : int(block.end[-1])]
        tabs, start, end = block.tabs - base, block.start - base, block.end - base
        full = ncol >= 8
        prefix_hi = np.where(full, tabs[:, 6], end)
        info_lo = np.where(full, tabs[:, 6] + 1, prefix_hi)
        info_hi = np.where(full, tabs[:, 7], prefix_hi)
        suffix_lo = np.where(ncol > 8, tabs[:, 7], end)
        info_len = info_hi - info_lo
        dot = info_len == 1
        if dot.any():
            dot &= data[np.where(dot, info_lo, 0)] == 46
        keep = (info_len > 0) & ~dot
        sep = np.where(keep, ";", "").astype(object)
        if (
            block.data.find(b"VARFX_", base, int(block.end[-1])) >= 0
        ):  # old varfx keys are dropped (Python, per such record)
            keep = keep.copy()
            for i in np.flatnonzero(keep).tolist():
                info = data[int(info_lo[i]) : int(info_hi[i])].tobytes()
                if b"VARFX_" in info:
                    kept = b";".join(
                        kv
                        for kv in info.split(b";")
                        if kv and kv != b"." and not kv.startswith(b"VARFX_")
                    )
                    keep[i] = False
                    sep[i] = kept.decode("utf-8") + ";" if kept else ""
        pad_m = np.maximum(7 - ncol, 0)
        pad = _PADS[pad_m]
        texts = self._record_texts(block, scores, pad, sep)
        nl = np.flatnonzero(texts == 10)
        row_len = np.diff(np.concatenate(([-1], nl))) - 1  # pad + sep + ours, per record
        pad_len = 2 * pad_m + 1
        kept_info = np.where(keep, info_len, 0)
        # input bytes: [0, start0) drop, then per record: prefix keep, tab drop, info keep?,
        # drop to the suffix, suffix keep, drop to the next record
        edges = np.empty((r, 6), dtype=np.int64)
        edges[:, 0], edges[:, 1], edges[:, 2] = start, prefix_hi, info_lo
        edges[:, 3], edges[:, 4], edges[:, 5] = info_lo + kept_info, suffix_lo, end
        bounds = np.concatenate(([0], edges.ravel(), [len(data)]))
        runs = np.diff(bounds)
        values = np.zeros((r, 6), dtype=bool)
        values[:, 0], values[:, 2], values[:, 4] = True, keep, True
        d_mask = np.repeat(np.concatenate(([False], values.ravel())), runs)
        # output: per record prefix (D), pad (O), info (D), sep + ours (O), suffix (D), \n (O)
        out_runs = np.empty((r, 6), dtype=np.int64)
        out_runs[:, 0] = prefix_hi - start
        out_runs[:, 1] = pad_len
        out_runs[:, 2] = kept_info
        out_runs[:, 3] = row_len - pad_len
        out_runs[:, 4] = end - suffix_lo
        out_runs[:, 5] = 1
        from_d = np.repeat(np.tile(np.array([1, 0, 1, 0, 1, 0], dtype=bool), r), out_runs.ravel())
        out = np.empty(len(from_d), dtype=np.uint8)
        out[from_d] = data[d_mask]
        out[~from_d] = texts
        return out.tobytes()

    @staticmethod
    def count_done(lines: Sequence[str]) -> int:
        return sum(1 for line in lines if not line.startswith("#"))


def _manifest(spec: OutputSpec) -> list[tuple[str, str]]:
    m = spec.model
    out = list(spec.manifest) or [
        ("model", m.name),
        ("model_version", str(m.version)),
        ("assembly", m.assembly),
        ("window_length", str(m.sequence_length)),
        ("ref_policy", spec.ref_policy),
        ("reverse_complement", str(spec.reverse_complement).lower()),
    ]
    formulas = f"{FORMULAS}; {CALIBRATED_FORMULAS}" if spec.quantile_summary else FORMULAS
    out += [
        ("features", ",".join(spec.features)),
        ("formulas", formulas),
        ("command", spec.command),
    ]
    return out


class TsvWriter:
    """TSV: one row per variant-ALT; ``record`` is the 1-based input record number. The manifest
    comes first as ``# varfx_<key>=<value>`` lines when ``spec.tsv_comments``; without them the
    first line names the columns, so ``pandas.read_csv(path, sep="\\t")`` reads it as it is."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        width = len(spec.detail_kinds) * len(spec.features)
        q_ok, q_bad = ("\t%.6g\t%s", "\t\t") if spec.quantile_summary else ("", "")
        self._fmt_ok = "%d\t\n\t%s\t%s\t%.6g\t%s" + q_ok + "\t%.6g" * width
        self._fmt_bad = "%d\t\n\t%s\t%s\t\t" + q_bad + "\t" * width

    def columns(self) -> list[str]:
        spec = self.spec
        cols = ["record", "chrom", "pos", "id", "ref", "alt", "status", "message"]
        cols += ["max_abs_diff", "max_feature"]
        if spec.quantile_summary:
            cols += ["max_quantile", "max_quantile_feature"]
        cols += [f"{k}_{f}" for k in spec.detail_kinds for f in spec.features]
        return cols

    def header_lines(self, header: VcfHeader, n_columns: int) -> list[str]:
        lines = []
        if self.spec.tsv_comments:
            lines = [f"# varfx_{k}={v}" for k, v in _manifest(self.spec)]
        return [*lines, "\t".join(self.columns())]

    def block(self, block: VcfBlock, scores: BlockScores) -> bytes:
        ok = scores.ok
        v = len(ok)
        msgs = np.array(scores.messages, dtype=object)
        for i in np.flatnonzero(msgs != "").tolist():
            m = msgs[i]
            if "\t" in m or "\n" in m or "\r" in m:
                msgs[i] = m.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        number = (block.record_of + block.first_index + 1).astype(object)
        cols = [number, scores.status_names(), msgs, scores.max_abs_diff, scores.feature_names("")]
        if self.spec.quantile_summary:
            cols += scores.quantile_columns("")
        cols += [scores.numbers[:, j] for j in range(scores.numbers.shape[1])]
        formats = np.where(ok, self._fmt_ok, self._fmt_bad).tolist()
        text, lo, hi = _rows_text(formats, _flat_args(cols, ok, 3))
        head_lo, head_hi = lo[0::2], hi[0::2]  # "record\t"
        tail_lo, tail_hi = lo[1::2], hi[1::2]  # "\tstatus\tmessage\t..."
        base = int(block.start[0])  # a chunk of a block: only its own bytes
        data = np.frombuffer(block.data, dtype=np.uint8)[base : int(block.end[-1])]
        n_data = len(data)
        src = np.concatenate([data, text, np.frombuffer(b"\t\n", dtype=np.uint8)])
        rec = block.record_of
        nl = n_data + len(text)
        seg_lo = np.empty((v, 6), dtype=np.int64)
        seg_hi = np.empty((v, 6), dtype=np.int64)
        seg_lo[:, 0], seg_hi[:, 0] = head_lo + n_data, head_hi + n_data
        seg_lo[:, 1], seg_hi[:, 1] = block.start[rec] - base, block.tabs[rec, 3] - base
        seg_lo[:, 2], seg_hi[:, 2] = nl, nl + 1  # tab
        seg_lo[:, 3], seg_hi[:, 3] = block.alt_start - base, block.alt_end - base
        seg_lo[:, 4], seg_hi[:, 4] = tail_lo + n_data, tail_hi + n_data
        seg_lo[:, 5], seg_hi[:, 5] = nl + 1, nl + 2  # newline
        out, _ = gather(src, seg_lo.ravel(), seg_hi.ravel())
        return out


def make_writer(fmt: str, spec: OutputSpec) -> VcfWriter | TsvWriter:
    if fmt == "vcf":
        return VcfWriter(spec)
    if fmt == "tsv":
        return TsvWriter(spec)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(FORMATS)}")
