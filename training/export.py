"""``varfx export``: a training run -> ONNX model in a Triton-style repository, parity-checked.

The graph takes ``tokens`` uint8 [batch, L] (A0 C1 G2 T3 N4; one-hot inside) and returns
``probabilities`` float32 [batch, F] (sigmoid of the logits); batch is dynamic, opset 17, made by
the TorchScript exporter (``dynamo=False``). ``metadata_props["varfx"]`` holds the contract's JSON
(features, sequence_length, alphabet, output, assembly, training summary, provenance) and
``genome``: the training FASTA's identity (contig lengths and MD5s; ``family`` for simulated
genomes), which the server checks the genome it pairs the model with against.
Before anything is written, ONNX Runtime's output on random token sequences (N included) is
compared with torch's; a model whose max abs difference exceeds the tolerance is refused
(:class:`ParityError`). 1-D conv / pool layers are written as 2-D ones over ``[N, C, 1, L]``
unless ``conv2d=False`` (:mod:`varfx.training.onnx_layout`: the same arithmetic, 1.3-1.7x faster
on ONNX Runtime's CPU provider); the parity check runs on the rewritten graph. ``fp16=True``
stores the weights as float16 (cast to float32 in the graph, so it runs on every execution
provider) and reports the change in outputs and test auROC. :func:`convert_conv2d` applies the
same rewrite to an existing model file, checked against the file's own 1-D graph.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varfx.core.contract import ContractError, ModelContract
from varfx.core.genomes import canonical_assembly
from varfx.training.errors import ExportError, ParityError
from varfx.training.models import ModelConfig, ProbabilityModel, build_model
from varfx.training.onnx_layout import conv1d_as_conv2d
from varfx.training.triton_config import write_triton_config

__all__ = [
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportResult",
    "convert_conv2d",
    "export_run",
    "load_run_model",
    "next_version",
    "onnx_to_fp16_weights",
    "parity_check",
]

log = logging.getLogger(__name__)

INPUT_NAME = "tokens"
OUTPUT_NAME = "probabilities"
OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """What was written: the model path, its version, the parity diff and fp16 effects.

    Attributes:
        path: ``<repo>/<name>/<version>/model.onnx``.
        max_abs_diff: ORT (fp32 graph) vs torch on random tokens, probabilities.
        fp16_max_abs_diff, fp16_test_auroc_change: only with fp16 (None otherwise); the auROC
            change is the fp16 minus fp32 mean test auROC.
    """

    path: Path
    version: int
    max_abs_diff: float
    metadata: dict[str, Any]
    fp16_max_abs_diff: float | None = None
    fp16_test_auroc_change: float | None = None
    fp16_graph: Path | None = None  # model.fp16.onnx (varfx.training.fp16), when its check passed
    fp16_check: dict[str, Any] | None = None


def load_run_model(run_dir: str | Path) -> tuple[torch.nn.Module, ModelConfig, list[str]]:
    """The best checkpoint of a run as an eval-mode CPU logits model, its config and features."""
    run = Path(run_dir)
    ck_path = run / "best.pt"
    if not ck_path.is_file():
        raise ExportError(f"no best checkpoint in run directory {run} (expected {ck_path})")
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    mcfg = ModelConfig.from_json(ck["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(ck["model"])
    return model.eval(), mcfg, list(ck["features"])


def next_version(repo: Path, name: str) -> int:
    """1 + the highest numeric version folder of ``<repo>/<name>`` (1 when none)."""
    d = repo / name
    versions = (
        [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()] if d.is_dir() else []
    )
    return max(versions, default=0) + 1


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _export_bytes(model: torch.nn.Module, length: int) -> bytes:
    buf = io.BytesIO()
    wrapped = ProbabilityModel(model).eval()
    example = torch.zeros(2, length, dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is on purpose
        torch.onnx.export(
            wrapped,
            (example,),
            buf,  # type: ignore[arg-type]
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def _random_tokens(n: int, length: int, seed: int) -> np.ndarray:
    """uint8 [n, L] random tokens (A, C, G, T, N); a quarter of the rows mostly ACGT, 10% N."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 5, size=(n, length), dtype=np.uint8)
    tokens[: n // 4] = np.where(rng.random((n // 4, length)) < 0.9, tokens[: n // 4] % 4, 4)
    return tokens


def _write_atomic(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``target`` through a temporary file in its folder and a rename.

    ``mode``: the file's permissions; None = 0o666 less the umask (mkstemp makes 0600, and a
    served model must be readable).
    """
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def parity_check(
    model: torch.nn.Module,
    model_bytes: bytes,
    length: int,
    *,
    n: int = 32,
    seed: int = 0,
    tolerance: float = 1e-5,
) -> float:
    """Max abs difference of probabilities, ORT vs torch, on ``n`` random token rows (A,C,G,T,N).

    Raises:
        ParityError: the difference exceeds ``tolerance`` (the message gives both numbers).
    """
    tokens = _random_tokens(n, length, seed)
    with torch.no_grad():
        ref = torch.sigmoid(model.eval()(torch.from_numpy(tokens))).numpy()
    got = _ort_session(model_bytes).run([OUTPUT_NAME], {INPUT_NAME: tokens})[0]
    if got.shape != ref.shape or got.dtype != np.float32:
        raise ParityError(
            f"ONNX output is {got.dtype} {got.shape}; torch gives float32 {ref.shape}"
        )
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= tolerance:
        raise ParityError(
            f"ONNX Runtime and torch disagree: max abs diff {diff:.3g} > tolerance {tolerance:.3g}; "
            "model not written"
        )
    return diff


def onnx_to_fp16_weights(model_bytes: bytes, min_elements: int = 16) -> bytes:
    """Store float32 initializers with >= min_elements values as float16 + a Cast back to float32.

    The arithmetic stays float32 (runs on any provider); the file shrinks about 2x and the
    outputs change by the float16 rounding of the weights.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_from_string(model_bytes)
    g = m.graph
    casts = []
    keep = []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elements:
            half_name = init.name + "__fp16"
            keep.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
            casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    return bytes(m.SerializeToString())


def _test_auroc(run: Path, sessions: list[Any], max_windows: int) -> list[float]:
    """Mean test auROC of each ORT session on up to max_windows test windows of the run."""
    from varfx.training._fasta import FastaTokens
    from varfx.training.dataset import WindowDataset, WindowIndex
    from varfx.training.evaluate import per_feature_metrics

    cfg = json.loads((run / "config.json").read_text())
    index = WindowIndex.load(run / "index.npz")
    ds = WindowDataset(FastaTokens(cfg["genome"]), index, "test")
    take = np.linspace(0, len(ds) - 1, min(max_windows, len(ds))).astype(int)
    tokens = np.stack([ds[int(i)][0] for i in take])
    labels = ds.labels()[take]
    out = []
    for s in sessions:
        probs = np.concatenate(
            [
                s.run([OUTPUT_NAME], {INPUT_NAME: tokens[i : i + 256]})[0]
                for i in range(0, len(tokens), 256)
            ]
        )
        out.append(per_feature_metrics(labels, probs, index.features).mean_auroc)
    return out


def _training_genome(run: Path, assembly: str) -> dict[str, Any] | None:
    """The identity of the run's training FASTA(s) as metadata (``GenomeIdentity.to_json``:
    assembly, family for simulated genomes, contigs with lengths and MD5s); None, with a
    warning, when the FASTAs cannot be read any more."""
    from varfx.core.fasta_identity import FastaIdentityError, fastas_identity

    try:
        cfg = json.loads((run / "config.json").read_text())
        return fastas_identity(cfg["genome"], assembly=assembly).to_json()
    except (OSError, KeyError, ValueError, FastaIdentityError) as exc:
        log.warning("%s: the training genome's identity is not recorded: %s", run, exc)
        return None


def export_run(
    run_dir: str | Path,
    repo: str | Path,
    name: str,
    *,
    version: int | None = None,
    fp16: bool = False,
    conv2d: bool = True,
    tolerance: float = 1e-5,
    fp16_tolerance: float = 1e-2,
    assembly: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
    fp16_graph: bool = True,
) -> ExportResult:
    """Export a run's best checkpoint to ``<repo>/<name>/<version>/model.onnx``.

    Args:
        run_dir: a ``varfx train`` run directory (best.pt, config.json, summary.json).
        version: None = next free version.
        fp16: store weights as float16 (after the fp32 graph passed the parity check).
        conv2d: write 1-D conv / pool layers as 2-D ones (faster on ONNX Runtime's CPU).
        tolerance: max abs diff allowed between ORT and torch (fp32 graph).
        fp16_tolerance: the same for the fp16 graph.
        assembly: overrides the run's assembly name.
        fp16_graph: also write ``model.fp16.onnx`` (float16 arithmetic) when its check on random
            and validation windows passes (``varfx.training.fp16``).

    Raises:
        ParityError: ORT and torch disagree (nothing is written).
        ExportError: missing run files, bad name/version, or an existing model without overwrite.
    """
    run = Path(run_dir)
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}")
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise ExportError(f"{run}: no summary.json (did training finish?)")
    summary = json.loads(summary_path.read_text())
    model, mcfg, features = load_run_model(run)
    repo_dir = Path(repo)
    v = next_version(repo_dir, name) if version is None else version
    if v < 1:
        raise ExportError(f"version must be >= 1, got {v}")
    target = repo_dir / name / str(v) / "model.onnx"
    if target.exists() and not overwrite:
        raise ExportError(f"{target} exists; choose another --version or pass --overwrite")

    model_bytes = _export_bytes(model, mcfg.sequence_length)
    if conv2d:
        model_bytes = conv1d_as_conv2d(model_bytes)
    diff = parity_check(model, model_bytes, mcfg.sequence_length, tolerance=tolerance)
    log.info("parity ORT vs torch: max abs diff %.3g", diff)
    fp16_diff = auroc_change = None
    fp32_bytes = model_bytes
    if fp16:
        model_bytes = onnx_to_fp16_weights(fp32_bytes)
        fp16_diff = parity_check(model, model_bytes, mcfg.sequence_length, tolerance=fp16_tolerance)
        a32, a16 = _test_auroc(run, [_ort_session(fp32_bytes), _ort_session(model_bytes)], 4000)
        auroc_change = a16 - a32
        log.info(
            "fp16 weights: max abs diff %.3g, test auROC change %+.5f", fp16_diff, auroc_change
        )

    from varfx import __version__

    test = summary.get("test") or {}
    meta: dict[str, Any] = {
        "features": features,
        "sequence_length": mcfg.sequence_length,
        "alphabet": "ACGT",
        "output": OUTPUT_NAME,
        "assembly": assembly or summary.get("assembly", "unknown"),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "tokens": "A0 C1 G2 T3 N4"},
        "architecture": mcfg.to_json(),
        "precision": "fp16-weights" if fp16 else "fp32",
        "conv_layout": "2d" if conv2d else "1d",
        "training_summary": {
            "test_mean_auroc": test.get("mean_auroc"),
            "test_mean_auprc": test.get("mean_auprc"),
            "per_feature": test.get("per_feature", {}),
            "split": summary.get("split"),
            "best_epoch": summary.get("best_epoch"),
            "windows": summary.get("windows"),
        },
        "provenance": {
            "varfx_version": __version__,
            "git_commit": _git_commit(),
            "train_command": summary.get("command"),
            "export_command": command if command is not None else " ".join(sys.argv),
            "data": summary.get("data"),
            "run_dir": str(run.resolve()),
            "exported_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "export_check": {"max_abs_diff": diff, "tolerance": tolerance},
    }
    if fp16:
        meta["export_check"].update(
            fp16_max_abs_diff=fp16_diff, fp16_test_auroc_change=auroc_change
        )

    genome = _training_genome(run, str(meta["assembly"]))
    if genome is not None:  # the training genome's contigs, lengths and MD5s (varfx.core.genomes)
        meta["genome"] = genome
        if not canonical_assembly(str(meta["assembly"])) and genome["assembly"]:
            meta["assembly"] = genome["assembly"]
    try:
        ModelContract.from_metadata(meta)
    except ContractError as exc:
        raise ExportError(f"{run}: {exc}") from None

    import onnx

    m = onnx.load_from_string(model_bytes)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {"varfx": json.dumps(meta)})
    m.producer_name = "varfx"
    m.producer_version = __version__
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, m.SerializeToString())
    log.info("wrote %s", target)
    log.info("wrote %s", write_triton_config(repo_dir / name))  # Triton's config.pbtxt
    graph16, check16 = _fp16_graph(run, target, meta) if fp16_graph else (None, None)
    return ExportResult(target, v, diff, meta, fp16_diff, auroc_change, graph16, check16)


def _fp16_graph(run: Path, target: Path, meta: dict[str, Any]) -> tuple[Path | None, Any]:
    """``model.fp16.onnx`` beside ``target`` when its check passes (varfx.training.fp16)."""
    from varfx.core.precision import FP16_FILE, fp16_check_problem
    from varfx.training import fp16
    from varfx.training.errors import DataError

    try:
        valid = fp16.run_validation_windows(run)
    except (DataError, OSError) as exc:
        log.warning("fp16 graph: no validation windows (%s)", exc)
        valid = None
    fp32_bytes = target.read_bytes()
    half = fp16.fp16_compute_graph(fp32_bytes)
    check = fp16.check_fp16(fp32_bytes, half, int(meta["sequence_length"]), meta["features"], valid)
    problem = fp16_check_problem(check)
    if problem is not None:
        log.warning("fp16 graph not written: %s", problem)
        old = target.with_name(FP16_FILE)
        if old.is_file() and not old.is_symlink():  # an earlier export's, checked against another
            old.unlink()
        return None, check
    path = fp16.write_fp16_file(target.with_name(FP16_FILE), half, meta, check)
    log.info("wrote %s (max abs diff %.2g)", path, check["max_abs_diff_real"])
    return path, check


def convert_conv2d(
    src: str | Path, dst: str | Path, *, tolerance: float = 1e-5, n: int = 32, seed: int = 0
) -> float:
    """Rewrite the model file ``src`` into ``dst`` (may be the same path) with 2-D conv layers.

    ONNX Runtime runs both graphs on ``n`` random token rows (uint8 [n, L], L from the graph
    input or the ``varfx`` metadata's sequence_length); the file is written (atomically, with
    ``src``'s permissions) only when the probabilities agree within ``tolerance``. The ``varfx``
    metadata, when present, records ``"conv_layout": "2d"``.

    Returns:
        The max abs difference of the outputs.

    Raises:
        ParityError: the outputs disagree (nothing written).
        ExportError: ``src`` is not a token-input model this can check, or ``dst``'s folder is
            missing.
    """
    import onnx
    from onnx import TensorProto

    src, dst = Path(src), Path(dst)
    if not dst.parent.is_dir():
        raise ExportError(f"cannot write {dst}: folder {dst.parent} does not exist")
    before = src.read_bytes()
    m = onnx.load_from_string(before)
    props = {p.key: p.value for p in m.metadata_props}
    meta: dict[str, Any] = json.loads(props["varfx"]) if props.get("varfx") else {}
    init_names = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in init_names]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.UINT8:
        raise ExportError(
            f"{src}: expected one uint8 token input [batch, L], got {[i.name for i in inputs]}"
        )
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    length = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value else None
    length = length or meta.get("sequence_length")
    if not length:
        raise ExportError(f"{src}: input {inp.name!r} has no fixed length and no sequence_length")
    after = conv1d_as_conv2d(before)
    if meta:
        m2 = onnx.load_from_string(after)
        del m2.metadata_props[:]
        onnx.helper.set_model_props(
            m2, {**props, "varfx": json.dumps({**meta, "conv_layout": "2d"})}
        )
        after = m2.SerializeToString()
    tokens = _random_tokens(n, int(length), seed)
    want, got = (_ort_session(b).run(None, {inp.name: tokens})[0] for b in (before, after))
    diff = float(np.max(np.abs(got - want)))
    if not diff <= tolerance:
        raise ParityError(
            f"{src}: the 2-D graph disagrees with the 1-D one: max abs diff {diff:.3g} > "
            f"tolerance {tolerance:.3g}; not written"
        )
    _write_atomic(dst, after, src.stat().st_mode & 0o777)
    return diff
