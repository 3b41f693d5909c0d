"""GPU-only measurements: matrix-multiply roofline (torch) and device memory over a run."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import numpy as np

__all__ = ["gpu_memory_run", "matmul_roofline", "nvidia_smi_memory_mib"]


def matmul_roofline(n: int = 8192, seconds: float = 2.0) -> dict[str, float]:
    """Dense matmul TFLOP/s in bf16, fp16, tf32 and strict fp32 on cuda:0 (torch)."""
    import torch

    out: dict[str, float] = {}
    configs = [
        ("bf16", torch.bfloat16, False),
        ("fp16", torch.float16, False),
        ("tf32", torch.float32, True),
        ("fp32", torch.float32, False),
    ]
    prev = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, tf32 in configs:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)
            for _ in range(3):
                a @ b
            torch.cuda.synchronize()
            t0, reps = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                for _ in range(10):
                    a @ b
                torch.cuda.synchronize()
                reps += 10
            out[name] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
        torch.cuda.empty_cache()
    return out


def nvidia_smi_memory_mib() -> float | None:
    """Memory used on GPU 0 in MiB (nvidia-smi), None when it cannot be read."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return float(proc.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_memory_run(
    runner: Any, max_batch: int, *, seconds: float, seed: int = 0, interval_s: float = 0.25
) -> dict[str, Any]:
    """Run ``runner.predict`` on random batch sizes 1..max_batch for ``seconds`` while sampling
    device memory; flat = the last half's peak stays within 5% (or 64 MiB) of the first half's."""
    rng = np.random.default_rng(seed)
    length = runner.spec.sequence_length
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t_start = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            mib = nvidia_smi_memory_mib()
            if mib is not None:
                samples.append((time.perf_counter() - t_start, mib))
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sizes: list[int] = []
    try:
        while time.perf_counter() - t_start < seconds:
            b = int(rng.integers(1, max_batch + 1))
            runner.predict(rng.integers(0, 4, size=(b, length), dtype=np.uint8))
            sizes.append(b)
    finally:
        stop.set()
        thread.join(timeout=15)
    mem = np.array([m for _, m in samples])
    half = len(mem) // 2
    flat = None
    if half >= 2:
        first, last = float(mem[:half].max()), float(mem[half:].max())
        flat = last <= first * 1.05 or last - first <= 64
    return {
        "runs": len(sizes),
        "distinct_batch_sizes": len(set(sizes)),
        "samples": [[round(t, 3), m] for t, m in samples],
        "min_mib": float(mem.min()) if len(mem) else None,
        "max_mib": float(mem.max()) if len(mem) else None,
        "flat": flat,
    }
