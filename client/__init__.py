"""varfx.client: Python client for the varfx gRPC service and the ``varfx score`` command.

Needs only the base install (grpcio, protobuf, numpy, pysam, tqdm)::

    from varfx.client import Client
    with Client("localhost:50051") as client:
        table = client.score_variants([("chr1", 14677, "G", "A", "rs1")])
        print(table.features, table.diff)   # diff: float32 [n, F], alt - ref probability

Scores: ref/alt are probabilities (0..1), diff = alt - ref, log2fc = log2 odds ratio.
Names are imported on first use, so that ``varfx --help`` (which imports ``varfx.client._cli``)
does not pay for grpc and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "AsyncClient": "_aio",
    "Client": "_client",
    "RetryPolicy": "_retry",
    "VarfxError": "errors",
    "VcfFormatError": "errors",
    "SCORE_KINDS": "types",
    "ModelInfo": "types",
    "RefPolicy": "types",
    "ScoreTable": "types",
    "SequencePair": "types",
    "Status": "types",
    "Variant": "types",
    "VariantScore": "types",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'varfx.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"varfx.client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
