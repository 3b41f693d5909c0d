"""The fp16-compute graph of a model (``model.fp16.onnx``) and its export-time check.

:func:`fp16_compute_graph` rewrites a float32 ONNX graph so that its arithmetic runs in float16:
float initializers and float constants become float16, ``Cast(to=float)`` becomes
``Cast(to=float16)``, float graph inputs are cast to float16 on entry, and every float output is
cast back to float32 (a final ``Sigmoid`` runs on the float32 logits, so probabilities near 0
and 1 keep float32 resolution). Token input (uint8) and probabilities output (float32) are kept,
so the server feeds both graphs the same arrays. This is not :func:`varfx.training.export.
onnx_to_fp16_weights` (fp16 storage, fp32 arithmetic).

:func:`check_fp16` runs both graphs with ONNX Runtime's CPU provider on random token windows (N
included) and on real validation windows and compares probabilities (max abs difference) and the
mean validation auROC; the result, with the bounds it was held to, goes into the fp16 file's
``varfx`` metadata as ``fp16_check`` (:mod:`varfx.core.precision`). Validation windows only,
never the test region.

:func:`write_fp16` makes the file for a model already in a repository (``varfx fp16``), with
validation windows labelled from a genome and peak files under the model's recorded split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varfx.core.precision import (
    FP16_AUROC_BOUND,
    FP16_DIFF_BOUND,
    FP16_FILE,
    fp16_check_problem,
)
from varfx.training.errors import DataError, ExportError

__all__ = [
    "ValidationWindows",
    "check_fp16",
    "fp16_compute_graph",
    "run_validation_windows",
    "split_validation_windows",
    "write_fp16",
    "write_fp16_file",
]

log = logging.getLogger(__name__)

_FLOAT, _HALF = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
_HALF_MAX = 65504.0


@dataclass(frozen=True)
class ValidationWindows:
    """Labelled validation windows: tokens uint8 [n, L], labels uint8 [n, F], and where from."""

    tokens: np.ndarray
    labels: np.ndarray
    source: str


def _half_tensor(tensor: Any, where: str) -> Any:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    if arr.size and float(np.max(np.abs(arr))) > _HALF_MAX:
        raise ExportError(
            f"{where} {tensor.name!r} holds |x| = {float(np.max(np.abs(arr))):.3g} > 65504, "
            "beyond float16"
        )
    return numpy_helper.from_array(arr.astype(np.float16), tensor.name)


def fp16_compute_graph(model_bytes: bytes) -> bytes:
    """The float16-arithmetic version of a float32 ONNX model (I/O types kept; see module doc).

    Raises:
        ExportError: a weight beyond the float16 range, or an op with a float type attribute
            this rewrite does not know.
    """
    import onnx
    from onnx import helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    inits = [_half_tensor(t, "initializer") if t.data_type == _FLOAT else t for t in g.initializer]
    del g.initializer[:]
    g.initializer.extend(inits)
    init_names = {t.name for t in g.initializer}
    nodes = list(g.node)
    for node in nodes:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT:
                attr.i = _HALF
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _FLOAT:
                attr.t.CopyFrom(_half_tensor(attr.t, f"{node.op_type} attribute"))
            elif attr.name in ("to", "dtype") and attr.i == _FLOAT:
                raise ExportError(f"{node.op_type} node {node.name!r} makes float32 tensors")
    head: list[Any] = []
    for inp in g.input:
        if inp.name in init_names or inp.type.tensor_type.elem_type != _FLOAT:
            continue
        half = inp.name + "__fp16"
        for node in nodes:
            node.input[:] = [half if x == inp.name else x for x in node.input]
        head.append(helper.make_node("Cast", [inp.name], [half], to=_HALF))
    tail: list[Any] = []
    for out in g.output:
        if out.type.tensor_type.elem_type != _FLOAT:
            continue
        producer = next(n for n in nodes if out.name in n.output)
        if producer.op_type == "Sigmoid":  # the sigmoid in float32: probabilities keep 1e-7
            logits = producer.input[0]
            producer.input[0] = logits + "__fp32"
            nodes.insert(
                nodes.index(producer),
                helper.make_node("Cast", [logits], [logits + "__fp32"], to=_FLOAT),
            )
        else:
            half = out.name + "__fp16"
            producer.output[:] = [half if x == out.name else x for x in producer.output]
            tail.append(helper.make_node("Cast", [half], [out.name], to=_FLOAT))
    del g.node[:]
    g.node.extend(head + nodes + tail)
    del g.value_info[:]  # element types changed; ORT infers them again
    onnx.checker.check_model(m)
    return bytes(m.SerializeToString())


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ExportError(f"ONNX Runtime (CPU) cannot load the graph: {exc}") from exc


def _probs(session: Any, tokens: np.ndarray, batch: int = 256) -> np.ndarray:
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: tokens[i : i + batch]})[0] for i in range(0, len(tokens), batch)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _random_windows(n: int, length: int, seed: int) -> np.ndarray:
    from varfx.training.export import _random_tokens  # the export parity check's windows

    return _random_tokens(n, length, seed)


def _mean_auroc(labels: np.ndarray, probs: np.ndarray, features: Sequence[str]) -> float | None:
    from varfx.training.evaluate import per_feature_metrics

    value = per_feature_metrics(labels, probs, list(features)).mean_auroc
    return None if value is None or value != value else float(value)


def check_fp16(
    fp32_bytes: bytes,
    fp16_bytes: bytes,
    length: int,
    features: Sequence[str],
    valid: ValidationWindows | None,
    *,
    n_random: int = 256,
    seed: int = 0,
    diff_bound: float = FP16_DIFF_BOUND,
    auroc_bound: float = FP16_AUROC_BOUND,
) -> dict[str, Any]:
    """The ``fp16_check`` record of two graphs (ORT CPU), see :mod:`varfx.core.precision`.

    Args:
        length: window length L; features: the F output names.
        valid: labelled validation windows (None: the real-window numbers stay null and the
            check does not pass).
    """
    s32, s16 = _session(fp32_bytes), _session(fp16_bytes)
    tokens = _random_windows(n_random, length, seed)
    check: dict[str, Any] = {
        "max_abs_diff_random": float(np.max(np.abs(_probs(s16, tokens) - _probs(s32, tokens)))),
        "random_windows": n_random,
        "max_abs_diff_real": None,
        "real_windows": 0,
        "valid_auroc_fp32": None,
        "valid_auroc_fp16": None,
        "valid_auroc_change": None,
        "valid_windows": 0,
        "valid_source": None,
        "diff_bound": diff_bound,
        "auroc_bound": auroc_bound,
        "measured_on": "onnxruntime CPUExecutionProvider",
        "reference_sha256": hashlib.sha256(fp32_bytes).hexdigest(),
    }
    if valid is not None and len(valid.tokens):
        p32, p16 = _probs(s32, valid.tokens), _probs(s16, valid.tokens)
        a32 = _mean_auroc(valid.labels, p32, features)
        a16 = _mean_auroc(valid.labels, p16, features)
        check.update(
            max_abs_diff_real=float(np.max(np.abs(p16 - p32))),
            real_windows=len(valid.tokens),
            valid_auroc_fp32=a32,
            valid_auroc_fp16=a16,
            valid_auroc_change=None if a32 is None or a16 is None else a16 - a32,
            valid_windows=len(valid.tokens),
            valid_source=valid.source,
        )
    check["within_bound"] = fp16_check_problem(check) is None
    return check


def _take(n: int, max_windows: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(max_windows, n)).astype(np.int64))


def _split_windows(genome: Any, index: Any, max_windows: int, source: str) -> ValidationWindows:
    from varfx.training.dataset import WindowDataset

    ds = WindowDataset(genome, index, "valid")
    if not len(ds):
        raise DataError(f"{source}: no validation windows")
    take = _take(len(ds), max_windows)
    tokens = np.stack([ds[int(i)][0] for i in take])
    return ValidationWindows(tokens, ds.labels()[take], source)


def run_validation_windows(run: str | Path, max_windows: int = 2000) -> ValidationWindows:
    """Up to ``max_windows`` validation windows of a ``varfx train`` run (its index.npz),
    evenly spaced through the split."""
    from varfx.training._fasta import FastaTokens
    from varfx.training.dataset import WindowIndex

    run = Path(run)
    cfg = json.loads((run / "config.json").read_text())
    index = WindowIndex.load(run / "index.npz")
    return _split_windows(FastaTokens(cfg["genome"]), index, max_windows, f"run {run} valid split")


def _regions(items: Sequence[Any]) -> tuple[Any, ...]:
    from varfx.training.dataset import Region, parse_region

    return tuple(parse_region(r) if isinstance(r, str) else Region(**r) for r in items)


def _region_label(r: Any) -> str:
    """``chr9`` or ``20:20000001-29500000`` (1-based, inclusive) for a Region."""
    if r.start == 0 and r.end is None:
        return str(r.contig)
    return f"{r.contig}:{r.start + 1}-{'' if r.end is None else r.end}"


def split_validation_windows(
    meta: dict[str, Any],
    genome: Sequence[str | Path],
    peaks: Sequence[str | Path],
    *,
    max_windows: int = 2000,
    seed: int = 0,
) -> ValidationWindows:
    """Validation windows of a model from its metadata's split (``training_summary.split``),
    labelled from ``peaks`` (one file per feature) on ``genome``: ``varfx train``'s index rule,
    200-bp bins, 1:1 random negatives; up to ``max_windows``, evenly spaced.

    Raises:
        DataError: no recorded validation split, peak files that do not match the features,
            or no validation windows.
    """
    from varfx.training._fasta import FastaTokens
    from varfx.training.dataset import IndexConfig, SplitSpec, build_index
    from varfx.training.peaks import PeakSet, feature_name, find_peak_files
    from varfx.training.protocol import _match_features  # the protocol's file -> feature rule

    split = (meta.get("training_summary") or {}).get("split") or {}
    if not split.get("valid"):
        raise DataError("the model's metadata records no validation split (training_summary.split)")
    features = tuple(meta["features"])
    fasta = FastaTokens([str(g) for g in genome])
    files = find_peak_files([str(p) for p in peaks])
    exact = [feature_name(f) for f in files]  # file names equal to the features (varfx simulate)
    names = exact if sorted(exact) == sorted(features) else _match_features(files, features)
    peak_set = PeakSet.load(files, fasta.lengths, names)
    # held-out regions on contigs this FASTA lacks are left out (e.g. chrX when only chr20 given)
    known = set(fasta.lengths)

    def present(regions: tuple[Any, ...]) -> tuple[Any, ...]:
        from varfx.core.contigs import contig_aliases

        return tuple(r for r in regions if known & set(contig_aliases(r.contig)))

    spec = SplitSpec(present(_regions(split["valid"])), present(_regions(split.get("test", []))))
    icfg = IndexConfig(length=int(meta["sequence_length"]), negative_ratio=1.0, seed=seed)
    index = build_index(fasta, peak_set, spec, icfg)
    order = [peak_set.features.index(f) for f in features]
    index.labels, index.features = index.labels[:, order], features
    regions = ", ".join(_region_label(r) for r in _regions(split["valid"]))
    return _split_windows(fasta, index, max_windows, f"validation region {regions} of {fasta.path}")


def write_fp16_file(
    target: Path, fp16_bytes: bytes, meta: dict[str, Any], check: dict[str, Any]
) -> Path:
    """Write ``fp16_bytes`` to ``target`` with ``meta`` + precision fp16 + ``fp16_check``."""
    import onnx

    from varfx.training.export import _write_atomic

    m = onnx.load_from_string(fp16_bytes)
    del m.metadata_props[:]
    onnx.helper.set_model_props(
        m, {"varfx": json.dumps({**meta, "precision": "fp16", "fp16_check": check})}
    )
    _write_atomic(target, m.SerializeToString())
    return target


def write_fp16(
    model_dir: str | Path,
    genome: Sequence[str | Path],
    peaks: Sequence[str | Path],
    *,
    max_windows: int = 2000,
    diff_bound: float = FP16_DIFF_BOUND,
    auroc_bound: float = FP16_AUROC_BOUND,
    keep_failed: bool = False,
) -> tuple[Path | None, dict[str, Any]]:
    """Make ``MODEL_DIR/model.fp16.onnx`` for ``MODEL_DIR/model.onnx`` (``varfx fp16``).

    Returns:
        (the file written, or None when the check failed and ``keep_failed`` is off; the check).

    Raises:
        ExportError: no model.onnx, or no varfx metadata in it.
        DataError: see :func:`split_validation_windows`.
    """
    import onnx

    model_dir = Path(model_dir)
    src = model_dir / "model.onnx"
    if not src.is_file():
        raise ExportError(f"{src} not found")
    fp32_bytes = src.read_bytes()
    props = {p.key: p.value for p in onnx.load_from_string(fp32_bytes).metadata_props}
    if not props.get("varfx"):
        raise ExportError(f"{src}: no varfx metadata (features, sequence_length, split)")
    meta = json.loads(props["varfx"])
    valid = split_validation_windows(meta, genome, peaks, max_windows=max_windows)
    fp16_bytes = fp16_compute_graph(fp32_bytes)
    check = check_fp16(
        fp32_bytes,
        fp16_bytes,
        int(meta["sequence_length"]),
        meta["features"],
        valid,
        diff_bound=diff_bound,
        auroc_bound=auroc_bound,
    )
    problem = fp16_check_problem(check)
    if problem is not None and not keep_failed:
        log.warning("%s: fp16 graph not written: %s", src, problem)
        return None, check
    return write_fp16_file(model_dir / FP16_FILE, fp16_bytes, meta, check), check
