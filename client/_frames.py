"""ScoreTable as a pandas DataFrame (wide or long) or an AnnData: the optional extras.

pandas and anndata are imported here, on use, so the plain client install never needs them.
Every column is built from whole arrays; the only per-row Python is decoding allele and id
strings (pandas holds strings as Python objects).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from varfx.client._convert import string_columns
from varfx.client.types import Status

if TYPE_CHECKING:
    from varfx.client.types import ScoreTable
    from varfx.core.variants import VariantBatch

__all__ = ["anndata", "input_columns", "long_frame", "wide_frame"]

_STATUS_NAMES = [s.name for s in sorted(Status)]


def _import(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"ScoreTable.to_{extra}() needs {module}: pip install 'varfx[{extra}]'"
        ) from None


def _variant_columns(pd: Any, batch: VariantBatch) -> dict[str, Any]:
    chroms, _, refs, alts, ids = string_columns(batch)
    unique = len(set(batch.contigs)) == len(batch.contigs)
    return {
        "chrom": pd.Categorical.from_codes(batch.contig_index, categories=list(batch.contigs))
        if unique
        else chroms,
        "pos": batch.pos.astype(np.int64, copy=False),
        "ref": refs,
        "alt": alts,
        "id": ids,
    }


def input_columns(pd: Any, table: ScoreTable) -> dict[str, Any]:
    """The input columns (variants: chrom, pos, ref, alt, id; pairs: id, ref, alt), then
    status, message, max_abs_diff, max_feature (and max_quantile, max_quantile_feature when the
    table has quantiles)."""
    if table.pairs:
        cols: dict[str, Any] = {
            "id": [p.id for p in table.pairs],
            "ref": [p.ref for p in table.pairs],
            "alt": [p.alt for p in table.pairs],
        }
    else:
        cols = _variant_columns(pd, table.batch)
    ok = table.ok
    names = np.array([*table.features, ""], dtype=object)
    cols["status"] = pd.Categorical.from_codes(
        table.status.astype(np.int64), categories=_STATUS_NAMES
    )
    cols["message"] = list(table.messages)
    cols["max_abs_diff"] = table.max_abs_diff.astype(np.float32, copy=False)
    cols["max_feature"] = np.where(ok, names[table.max_index], "")
    if table.max_quantile is not None and table.max_quantile_index is not None:
        cols["max_quantile"] = table.max_quantile.astype(np.float32, copy=False)
        cols["max_quantile_feature"] = np.where(ok, names[table.max_quantile_index], "")
    return cols


def wide_frame(table: ScoreTable) -> Any:
    """One row per input; see ``ScoreTable.to_pandas``."""
    pd = _import("pandas", "pandas")
    index = pd.RangeIndex(len(table))
    inputs = pd.DataFrame(input_columns(pd, table), index=index)
    if not table.kinds:
        return inputs
    names = [f"{kind}_{name}" for kind in table.kinds for name in table.features]
    values = np.hstack([table.array(kind) for kind in table.kinds])  # one float32 block
    return pd.concat([inputs, pd.DataFrame(values, columns=names, index=index)], axis=1)


def long_frame(table: ScoreTable) -> Any:
    """One row per (input, kind, feature); see ``ScoreTable.to_pandas(long=True)``."""
    pd = _import("pandas", "pandas")
    kinds = table.kinds
    n, k, f = len(table), len(kinds), len(table.features)
    cols = input_columns(pd, table)
    for name in ("message", "max_abs_diff", "max_feature", "max_quantile", "max_quantile_feature"):
        cols.pop(name, None)
    rows = np.repeat(np.arange(n), k * f)
    out: dict[str, Any] = {}
    for name, value in cols.items():
        if isinstance(value, pd.Categorical):
            out[name] = value.take(rows)
        elif isinstance(value, np.ndarray):
            out[name] = value[rows]
        else:
            out[name] = np.asarray(value, dtype=object)[rows]
    out["feature"] = pd.Categorical.from_codes(
        np.tile(np.arange(f), n * k), categories=list(table.features)
    )
    out["kind"] = pd.Categorical.from_codes(
        np.tile(np.repeat(np.arange(k), f), n), categories=list(kinds)
    )
    values = (
        np.stack([table.array(kind) for kind in kinds], axis=1)
        if k
        else np.zeros((n, 0, f), np.float32)
    )
    out["value"] = values.reshape(-1)
    return pd.DataFrame(out, index=pd.RangeIndex(n * k * f))


def anndata(table: ScoreTable) -> Any:
    """obs = inputs, var = features, layers = kinds; see ``ScoreTable.to_anndata``."""
    ad = _import("anndata", "anndata")
    pd = _import("pandas", "anndata")
    obs = pd.DataFrame(input_columns(pd, table))
    obs.index = pd.Index([str(i) for i in range(len(table))])
    var = pd.DataFrame(index=pd.Index(list(table.features), name="feature"))
    layers = {kind: table.array(kind) for kind in table.kinds}
    uns: dict[str, Any] = {"model": table.model, "model_version": table.model_version}
    if table.manifest is not None:
        manifest = dataclasses.asdict(table.manifest)
        manifest["ref_policy"] = table.manifest.ref_policy.name
        uns["manifest"] = manifest
    x = layers.get("diff")
    return ad.AnnData(X=None if x is None else x.copy(), obs=obs, var=var, layers=layers, uns=uns)
