"""varfx.client: Python client for the varfx gRPC service and the ``varfx score`` command.

Needs only the base install (grpcio, protobuf, numpy, pysam, tqdm)::

    from varfx.client import Client
    with Client("localhost:50051") as client:
        table = client.score_variants([("chr1", 14677, "G", "A", "rs1")])
        print(table.features, table.diff)   # diff: float32 [n, F], alt - ref probability

Scores: ref/alt are probabilities (0..1), diff = alt - ref, log2fc = log2 odds ratio.
"""

from __future__ import annotations

from varfx.client._aio import AsyncClient
from varfx.client._client import Client
from varfx.client._retry import RetryPolicy
from varfx.client.errors import VarfxError, VcfFormatError
from varfx.client.types import (
    SCORE_KINDS,
    ModelInfo,
    RefPolicy,
    ScoreTable,
    SequencePair,
    Status,
    Variant,
    VariantScore,
)

__all__ = [
    "SCORE_KINDS",
    "AsyncClient",
    "Client",
    "ModelInfo",
    "RefPolicy",
    "RetryPolicy",
    "ScoreTable",
    "SequencePair",
    "Status",
    "VarfxError",
    "Variant",
    "VariantScore",
    "VcfFormatError",
]
