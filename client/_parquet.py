"""Parquet output of ``varfx score`` (``-o x.parquet``; needs pyarrow: ``pip install
'varfx[parquet]'``).

One row per variant-ALT with typed columns: ``record`` int64 (1-based input record),
``chrom`` dictionary<string>, ``pos`` int64, ``id``/``ref``/``alt`` string, ``status``
dictionary<string>, ``message`` string, ``max_abs_diff`` float32, ``max_feature`` string, for a
calibrated model ``max_quantile`` float32 and ``max_quantile_feature`` string, and one float32
column ``<kind>_<feature>`` per score (null where not scored). The run's manifest is in
the file's key-value metadata (``varfx_<key>``, and all of it as JSON under ``varfx_manifest``).
Columns are built from the block's arrays (string columns straight from its byte buffers).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from varfx.client._blocks import VcfBlock, VcfHeader, gather
from varfx.client._output import BlockScores, OutputSpec, _manifest
from varfx.client._score_errors import ScoreUsageError
from varfx.client.types import Status

__all__ = ["ParquetWriter"]

_STATUS = [s.name for s in sorted(Status)]


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ScoreUsageError(
            "Parquet output needs pyarrow: pip install 'varfx[parquet]' (or pyarrow)"
        ) from None
    return pa, pq


class _Sink:
    """``write(record_batch)`` into a pyarrow ParquetWriter (the ``out`` of the target)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, batch: Any) -> None:
        self._writer.write_batch(batch)

    def flush(self) -> None:  # row groups are complete when written
        pass

    def close(self) -> None:
        self._writer.close()


class ParquetWriter:
    """Writes record batches; ``block(block, scores)`` builds one per chunk."""

    def __init__(self, spec: OutputSpec, target: Any) -> None:
        self.pa, self.pq = _pyarrow()
        self.spec = spec
        self.target = target
        self._sink: _Sink | None = None
        pa = self.pa
        fields = [
            pa.field("record", pa.int64()),
            pa.field("chrom", pa.dictionary(pa.int32(), pa.string())),
            pa.field("pos", pa.int64()),
            pa.field("id", pa.string()),
            pa.field("ref", pa.string()),
            pa.field("alt", pa.string()),
            pa.field("status", pa.dictionary(pa.int8(), pa.string())),
            pa.field("message", pa.string()),
            pa.field("max_abs_diff", pa.float32()),
            pa.field("max_feature", pa.string()),
        ]
        if spec.quantile_summary:
            fields += [
                pa.field("max_quantile", pa.float32()),
                pa.field("max_quantile_feature", pa.string()),
            ]
        fields += [
            pa.field(f"{k}_{f}", pa.float32()) for k in spec.detail_kinds for f in spec.features
        ]
        manifest = dict(_manifest(spec))
        meta = {f"varfx_{k}": v for k, v in manifest.items()}
        meta["varfx_manifest"] = json.dumps(manifest, sort_keys=True)
        self.schema = pa.schema(fields, metadata=meta)

    def header_lines(self, header: VcfHeader, n_columns: int) -> list[str]:
        return []

    def open(self, path: str) -> _Sink:
        if self.target.resume:
            raise ScoreUsageError("--resume is not supported for Parquet output; run again")
        self._sink = _Sink(self.pq.ParquetWriter(path, self.schema, compression="zstd"))
        return self._sink

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()

    def _strings(self, data: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Any:
        buf, off = gather(data, lo, hi)
        pa = self.pa
        return pa.Array.from_buffers(
            pa.string(), len(lo), [None, pa.py_buffer(off.astype(np.int32)), pa.py_buffer(buf)]
        )

    def block(self, block: VcfBlock, scores: BlockScores) -> Any:
        pa = self.pa
        data = np.frombuffer(block.data, dtype=np.uint8)
        batch = block.batch
        rec = block.record_of
        off = batch.allele_offsets
        ok = scores.ok
        ids = self._strings(data, block.tabs[rec, 1] + 1, block.tabs[rec, 2])
        feats = scores.feature_names("")
        columns = [
            pa.array(rec + block.first_index + 1, pa.int64()),
            pa.DictionaryArray.from_arrays(
                pa.array(batch.contig_index, pa.int32()), pa.array(list(batch.contigs), pa.string())
            ),
            pa.array(batch.pos, pa.int64()),
            ids,
            self._strings(np.frombuffer(batch.alleles, dtype=np.uint8), off[0:-1:2], off[1::2]),
            self._strings(np.frombuffer(batch.alleles, dtype=np.uint8), off[1::2], off[2::2]),
            pa.DictionaryArray.from_arrays(
                pa.array(scores.status, pa.int8()), pa.array(_STATUS, pa.string())
            ),
            pa.array(scores.messages, pa.string()),
            pa.array(scores.max_abs_diff.astype(np.float32), pa.float32(), mask=~ok),
            pa.array(feats.tolist(), pa.string(), mask=~ok),
        ]
        if self.spec.quantile_summary:
            max_q, q_feats = scores.quantile_columns("")
            columns += [
                pa.array(max_q.astype(np.float32), pa.float32(), mask=~ok),
                pa.array(q_feats.tolist(), pa.string(), mask=~ok),
            ]
        for j in range(scores.numbers.shape[1]):
            col = scores.numbers[:, j].astype(np.float32)
            columns.append(pa.array(col, pa.float32(), mask=~ok | np.isnan(col)))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)
