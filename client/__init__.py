"""varfx.client: Python client for the varfx gRPC service and the ``varfx score`` command.

Needs only the base install (grpcio, protobuf, numpy, pysam, tqdm)::

    from varfx.client import Client
    with Client("localhost:50051") as client:
        table = client.score_variants([("chr1", 14677, "G", "A", "rs1")])
        print(table.features, table.diff)   # diff: float32 [n, F], alt - ref probability

Columnar: ``client.stream_batches(batches, model, parallel=N)`` takes
``varfx.core.VariantBatch`` objects and yields one ScoreTable per batch, in input order;
``table.to_pandas()`` / ``to_anndata()`` need the ``pandas`` / ``anndata`` extras.

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
    from varfx.client._core import ClientOptions, ScoreKwargs, choose_model
    from varfx.client._retry import RetryPolicy
    from varfx.client.errors import ModelChoiceError, VarfxError, VcfFormatError
    from varfx.client.types import (
        CALIBRATED_KINDS,
        SCORE_KINDS,
        Manifest,
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
    "ClientOptions": "_core",
    "ScoreKwargs": "_core",
    "choose_model": "_core",
    "RetryPolicy": "_retry",
    "ModelChoiceError": "errors",
    "VarfxError": "errors",
    "VcfFormatError": "errors",
    "CALIBRATED_KINDS": "types",
    "SCORE_KINDS": "types",
    "Manifest": "types",
    "ModelInfo": "types",
    "RefPolicy": "types",
    "ScoreTable": "types",
    "SequencePair": "types",
    "Status": "types",
    "Variant": "types",
    "VariantScore": "types",
}

__all__ = [
    "CALIBRATED_KINDS",
    "SCORE_KINDS",
    "AsyncClient",
    "Client",
    "ClientOptions",
    "Manifest",
    "ModelChoiceError",
    "ModelInfo",
    "RefPolicy",
    "RetryPolicy",
    "ScoreKwargs",
    "ScoreTable",
    "SequencePair",
    "Status",
    "VarfxError",
    "Variant",
    "VariantScore",
    "VcfFormatError",
    "choose_model",
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
