"""In-process peers: bare ONNX Runtime (batch-size sweep) and a torch-eager scoring loop; and
``varfx score`` end to end as a subprocess."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._load import stable_rate
from varfx.core.tokens import TOKEN_TABLE
from varfx.core.windows import WindowRule

__all__ = [
    "Rate",
    "bare_ort_sweep",
    "measure_steps",
    "ort_session",
    "torch_peer",
    "varfx_score",
    "varfx_score_available",
]


@dataclass(frozen=True)
class Rate:
    """A stable throughput: mean of the last three windows (units/s)."""

    per_s: float
    windows: list[float]
    stable: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_steps(
    step: Callable[[int], int], *, window_s: float, cap_s: float, warmup_steps: int = 1
) -> Rate:
    """Call ``step(i)`` (returns units done) until three consecutive ``window_s`` windows agree
    within 10%, or ``cap_s`` passed (with at least three windows)."""
    for i in range(warmup_steps):
        step(-1 - i)
    t_start = time.perf_counter()
    rates: list[float] = []
    i = 0
    while True:
        t0, units = time.perf_counter(), 0
        while time.perf_counter() - t0 < window_s:
            units += step(i)
            i += 1
        rates.append(units / (time.perf_counter() - t0))
        if len(rates) >= 3 and stable_rate(rates):
            return Rate(float(np.mean(rates[-3:])), rates, True, time.perf_counter() - t_start)
        if time.perf_counter() - t_start > cap_s and len(rates) >= 3:
            return Rate(float(np.mean(rates[-3:])), rates, False, time.perf_counter() - t_start)


def ort_session(path: Path, *, intra_op_threads: int, spinning: bool) -> Any:
    """A CPU ONNX Runtime session with the given threading (for the bare-ORT thread sweep)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bare_ort_sweep(
    runner: Any,
    batch_sizes: Sequence[int],
    *,
    window_s: float,
    cap_s: float,
    session: Any = None,
) -> dict[int, Rate]:
    """Variants/s (2 windows per variant) of ONNX Runtime alone on pre-built token windows, per
    batch size (in windows); ``session`` defaults to the server's (``runner.session``)."""
    spec = runner.spec
    sess = session if session is not None else runner.session
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 4, size=(max(batch_sizes) * 4, spec.sequence_length), dtype=np.uint8)
    if spec.input_kind != "tokens":
        from varfx.core.tokens import one_hot

        feed_pool: np.ndarray = one_hot(pool, spec.alphabet, spec.n_value)
    else:
        feed_pool = pool
    out: dict[int, Rate] = {}
    for b in batch_sizes:
        blocks = [np.ascontiguousarray(feed_pool[k * b : (k + 1) * b]) for k in range(4)]

        def step(i: int, b: int = b, blocks: list[np.ndarray] = blocks) -> int:
            sess.run([spec.output_name], {spec.input_name: blocks[i % 4]})
            return b

        rate = measure_steps(step, window_s=window_s, cap_s=cap_s)
        out[b] = Rate(rate.per_s / 2, [r / 2 for r in rate.windows], rate.stable, rate.seconds)
    return out


def torch_peer(
    module: Any,
    genome_seq: bytes,
    sites: Sequence[tuple[int, str, str]],
    length: int,
    *,
    device: str,
    batch: int,
    window_s: float,
    cap_s: float,
) -> Rate:
    """A straightforward torch scoring loop: per variant, slice ref/alt windows from the genome
    on the host (DESIGN.md convention), encode, then per batch ``module(ref)``, ``module(alt)``,
    ``alt - ref`` and the max |diff|, copied back to the host. Variants/s."""
    import torch

    dev = torch.device("cuda" if device == "cuda" else "cpu")
    net = module.to(dev).eval()
    rule = WindowRule(length)  # the one window rule (varfx.core); the loop around it is the peer's

    def windows(chunk: Sequence[tuple[int, str, str]]) -> tuple[np.ndarray, np.ndarray]:
        ref_b, alt_b = [], []
        for pos, ref, alt in chunk:
            start = int(rule.starts(np.array([pos]))[0])
            seg = genome_seq[start : start + rule.span(len(ref), len(alt))]
            ref_b.append(seg[:length])
            alt_b.append(rule.alt_window(seg, len(ref), alt.encode()))
        ref_t = TOKEN_TABLE[np.frombuffer(b"".join(ref_b), dtype=np.uint8)].reshape(-1, length)
        alt_t = TOKEN_TABLE[np.frombuffer(b"".join(alt_b), dtype=np.uint8)].reshape(-1, length)
        return ref_t, alt_t

    n_chunks = max(1, len(sites) // batch)

    def step(i: int) -> int:
        chunk = sites[(i % n_chunks) * batch : (i % n_chunks + 1) * batch]
        ref_t, alt_t = windows(chunk)
        with torch.inference_mode():
            r = net(torch.from_numpy(ref_t).to(dev))
            a = net(torch.from_numpy(alt_t).to(dev))
            diff = a - r
            diff.abs().max(dim=1)
            diff.cpu().numpy()
        return len(chunk)

    return measure_steps(step, window_s=window_s, cap_s=cap_s)


def varfx_score_available() -> bool:
    """True when this checkout's CLI has a working ``varfx score``."""
    proc = subprocess.run(
        [sys.executable, "-m", "varfx", "score", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0


def varfx_score(
    target: str,
    vcf: Path,
    out: Path,
    n_variants: int,
    model: str = "",
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run ``varfx score`` end to end as a subprocess; wall time -> variants/s. The output
    format follows ``out``'s name as for a user: ``.vcf.gz`` is the default annotated VCF
    (bgzipped + tabix-indexed), ``.tsv`` every score kind of every feature.

    ``profile``: also run it under ``py-spy record`` (collapsed stacks written there); the wall
    time then includes py-spy's sampling overhead, so measure without it first."""
    exe = shutil.which("varfx", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "varfx"]
    cmd += ["score", str(vcf), "--server", target, "-o", str(out)]
    if model:
        cmd += ["--model", model]
    if profile is not None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if spy is None:
            return {"error": "py-spy not installed"}
        cmd = [spy, "record", "--format", "raw", "--rate", "100", "-o", str(profile), "--", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with gzip.open(out, "rt") if out.name.endswith(".gz") else out.open() as fh:
        rows = sum(1 for line in fh if line.strip() and not line.startswith("#"))
    rows -= out.name.endswith((".tsv", ".tsv.gz"))  # the TSV's column-name line
    # its own summary: seconds from the job's start (after interpreter start-up and imports)
    job = re.search(r"variant-ALTs in ([0-9.]+) s", proc.stderr + proc.stdout)  # summary: stderr
    return {
        "command": " ".join(cmd),
        "variants": n_variants,
        "output": out.name,
        "rows_out": rows,
        "wall_s": wall,
        "job_s": float(job.group(1)) if job else None,
        "variants_per_s": n_variants / wall,
    }
