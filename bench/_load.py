"""Load generation against a running server, in a separate process (off the server's GIL).

``measure_load`` starts a spawned process with ``concurrency`` gRPC callers (threads, one channel
each) that send unary ScoreVariants or StreamScoreVariants requests in a loop until the
throughput is stable: three consecutive windows within 10% of each other, or a time cap.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import resource
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LoadResult", "measure_load", "stable_rate"]

VariantTuple = tuple[str, int, str, str]


@dataclass(frozen=True)
class LoadResult:
    """Throughput (variants/s over the stable windows) and request latency percentiles (ms)."""

    mode: str  # "unary" | "stream"
    concurrency: int
    per_request: int  # variants per request (unary) or per stream message
    variants_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    windows: list[float]  # variants/s of every measured window
    stable: bool  # three consecutive windows within 10% before the cap
    seconds: float
    client_cpu_s: float  # CPU seconds the load process used over the measured windows
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stable_rate(windows: list[float], tolerance: float = 0.10) -> bool:
    """True when the last three window rates lie within ``tolerance`` of each other."""
    last = windows[-3:]
    return len(last) == 3 and min(last) > 0 and max(last) / min(last) <= 1 + tolerance


def _requests(variants: list[VariantTuple], size: int, model: str) -> list[Any]:
    from varfx.proto.v1 import varfx_pb2 as pb

    # what varfx.client sends: every score kind, answered as packed arrays
    options = pb.ScoreOptions(packed=True)
    out = []
    for i in range(0, len(variants) - size + 1, size):
        chunk = variants[i : i + size]
        out.append(
            pb.ScoreVariantsRequest(
                model=model,
                options=options,
                variants=[pb.Variant(chrom=c, pos=p, ref=r, alt=a) for c, p, r, a in chunk],
            )
        )
    return out


def _child(conn: Any, args: dict[str, Any]) -> None:  # runs in the spawned process
    import grpc

    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

    concurrency, mode = args["concurrency"], args["mode"]
    requests = _requests(args["variants"], args["per_request"], args["model"])
    stop = threading.Event()
    done = [0] * concurrency  # variants answered, per caller
    records: list[tuple[float, float]] = []  # (finish time, latency s)
    errors = [0]

    # Caller k cycles over its own requests (every concurrency-th one), so no two callers ever
    # send the same windows at once (the batcher would deduplicate them and inflate throughput).
    own = [requests[k::concurrency] for k in range(concurrency)]
    if min(len(o) for o in own) < args["stream_depth"] + 1:
        raise ValueError(
            f"{len(requests)} requests of {args['per_request']} variants are too few for "
            f"{concurrency} callers with disjoint work; pass more variants"
        )

    def unary(k: int, stub: Any) -> None:
        i = 0
        mine = own[k]
        while not stop.is_set():
            req = mine[i % len(mine)]
            i += 1
            t0 = time.perf_counter()
            try:
                stub.ScoreVariants(req, timeout=600)
            except grpc.RpcError:
                errors[0] += 1
                continue
            t1 = time.perf_counter()
            records.append((t1, t1 - t0))
            done[k] += len(req.variants)

    def stream(k: int, stub: Any) -> None:
        slots = threading.Semaphore(args["stream_depth"])
        sent: collections.deque[tuple[float, int]] = collections.deque()

        mine = own[k]

        def gen() -> Any:
            i = 0
            while not stop.is_set():
                if not slots.acquire(timeout=0.05):
                    continue
                req = mine[i % len(mine)]
                i += 1
                sent.append((time.perf_counter(), len(req.variants)))
                yield req

        while not stop.is_set():
            try:
                for _resp in stub.StreamScoreVariants(gen(), timeout=600):
                    t0, n = sent.popleft()
                    t1 = time.perf_counter()
                    records.append((t1, t1 - t0))
                    done[k] += n
                    slots.release()
            except grpc.RpcError:
                errors[0] += 1

    channels = [grpc.insecure_channel(args["target"]) for _ in range(concurrency)]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=30)
    fn = unary if mode == "unary" else stream
    threads = [
        threading.Thread(target=fn, args=(k, pb_grpc.VariantEffectServiceStub(ch)), daemon=True)
        for k, ch in enumerate(channels)
    ]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    # warm-up: every caller has had an answer (bounded by half the cap), then warmup_s more
    while not all(done) and time.perf_counter() - t_start < args["cap_s"] / 2:
        time.sleep(0.05)
    time.sleep(args["warmup_s"])
    window = args["window_s"]
    rates: list[float] = []
    marks: list[float] = []
    cpu_marks: list[float] = []
    last, t_last = sum(done), time.perf_counter()
    marks.append(t_last)
    cpu_marks.append(_cpu())
    stable = False
    while True:
        time.sleep(window)
        now, total = time.perf_counter(), sum(done)
        rates.append((total - last) / (now - t_last))
        last, t_last = total, now
        marks.append(now)
        cpu_marks.append(_cpu())
        if len(rates) >= 3 and stable_rate(rates):
            stable = True
            break
        if now - t_start > args["cap_s"] and len(rates) >= 3:
            break
    stop.set()
    t_from = marks[-4] if len(marks) >= 4 else marks[0]
    lat = np.array([lat for t, lat in list(records) if t_from <= t <= marks[-1]]) * 1000
    last3 = rates[-3:]
    conn.send(
        {
            "variants_per_s": float(np.mean(last3)),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p95_ms": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "windows": rates,
            "stable": stable,
            "seconds": time.perf_counter() - t_start,
            "client_cpu_s": cpu_marks[-1] - (cpu_marks[-4] if len(cpu_marks) >= 4 else 0.0),
            "errors": errors[0],
        }
    )
    for t in threads:
        t.join(timeout=60)
    for ch in channels:
        ch.close()
    conn.close()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure_load(
    target: str,
    variants: list[VariantTuple],
    *,
    mode: str,
    concurrency: int,
    per_request: int,
    model: str = "",
    window_s: float = 1.0,
    warmup_s: float = 0.5,
    cap_s: float = 30.0,
    stream_depth: int = 2,
) -> LoadResult:
    """Drive the server at ``target`` with ``concurrency`` callers; see the module docstring."""
    if mode not in ("unary", "stream"):
        raise ValueError(f"mode={mode!r}: must be 'unary' or 'stream'")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    args = {
        "target": target,
        "variants": variants,
        "mode": mode,
        "concurrency": concurrency,
        "per_request": per_request,
        "model": model,
        "window_s": window_s,
        "warmup_s": warmup_s,
        "cap_s": cap_s,
        "stream_depth": stream_depth,
    }
    proc = ctx.Process(target=_child, args=(child, args), daemon=True)
    proc.start()
    child.close()
    try:
        while not parent.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"load process died (exit code {proc.exitcode})")
        out = parent.recv()
    except EOFError as exc:
        raise RuntimeError(f"load process died (exit code {proc.exitcode})") from exc
    finally:
        proc.join(timeout=120)
        if proc.is_alive():
            proc.terminate()
    return LoadResult(mode=mode, concurrency=concurrency, per_request=per_request, **out)
