"""Quick benchmark: the varfx server (gRPC + windows + batcher + ORT) against bare ONNX Runtime.

Builds a small real CNN (tests/onnx_models.py) and a random genome in a temp dir, starts a server
on a loopback port in this process, and reports:

- single-call latency: one ScoreVariants call with one SNV (median / p90 / p99, ms), and bare ORT
  on the same 2 windows;
- throughput: variants/s with ``--concurrency`` callers sending ``--per-request`` SNVs each,
  against bare ORT running pre-built token windows in batches of ``--max-batch`` (2 windows per
  variant: what the server must compute at least).

    .venv/bin/python -m bench.quick_server_vs_ort [--length 1000 --channels 64 --device cpu]

(run from the repository root, as a module, so that tests.onnx_models is importable).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from tests.onnx_models import TinyCNN, write_model
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread
from varfx.server.runtime import select_providers


def write_genome(path: Path, n: int, seed: int) -> str:
    import pysam

    seq = "".join(np.random.default_rng(seed).choice(list("ACGT"), n))
    with open(path, "w") as fh:
        fh.write(">chr1\n")
        for i in range(0, n, 80):
            fh.write(seq[i : i + 80] + "\n")
    pysam.faidx(str(path))
    return seq


def snvs(seq: str, n: int, length: int, seed: int) -> list[pb.Variant]:
    rng = np.random.default_rng(seed)
    pos = rng.integers(length, len(seq) - length, n)
    out = []
    for i, p in enumerate(pos.tolist()):
        ref = seq[p - 1]
        out.append(pb.Variant(id=str(i), chrom="chr1", pos=p, ref=ref, alt="ACGT"[("ACGT".index(ref) + 1) % 4]))  # fmt: skip
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--kernel", type=int, default=9)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--variants", type=int, default=8000)
    ap.add_argument("--per-request", type=int, default=250)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--intra-op-threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="throughput passes (best is shown)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        net = TinyCNN.random(args.features, channels=args.channels, kernel=args.kernel, seed=1)
        model_path = write_model(tmp / "repo", name="bench", net=net, length=args.length)
        seq = write_genome(tmp / "g.fa", 200_000, seed=2)
        config = ServerConfig(
            model_repo=tmp / "repo",
            genome=tmp / "g.fa",
            host="127.0.0.1",
            port=0,
            metrics_port=-1,
            device=args.device,
            max_batch=args.max_batch,
            max_delay_ms=args.max_delay_ms,
            max_queue=1 << 20,
            intra_op_threads=args.intra_op_threads,
        )
        # bare ORT, same providers and thread setting as the server
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.intra_op_threads
        sess = ort.InferenceSession(str(model_path), so, providers=select_providers(args.device))
        name = sess.get_inputs()[0].name
        rng = np.random.default_rng(3)
        windows = rng.integers(0, 4, (2 * args.variants, args.length), dtype=np.uint8)
        for b in (2, args.max_batch):
            sess.run(None, {name: windows[:b]})  # warm-up
        ort_lat = []
        for _ in range(args.latency_calls):
            t0 = time.perf_counter()
            sess.run(None, {name: windows[:2]})
            ort_lat.append(time.perf_counter() - t0)

        def ort_pass() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(windows), args.max_batch):
                sess.run(None, {name: windows[i : i + args.max_batch]})
            return args.variants / (time.perf_counter() - t0)

        ort_runs: list[float] = []
        server_runs: list[float] = []

        with start_in_thread(config) as server:
            channel = grpc.insecure_channel(server.target)
            stub = pb_grpc.VariantEffectServiceStub(channel)
            one = snvs(seq, args.latency_calls, args.length, seed=4)
            stub.ScoreVariants(pb.ScoreVariantsRequest(variants=one[:1]))
            lat = []
            for v in one:
                t0 = time.perf_counter()
                stub.ScoreVariants(pb.ScoreVariantsRequest(variants=[v]))
                lat.append(time.perf_counter() - t0)
            variants = snvs(seq, args.variants, args.length, seed=5)
            requests = [
                pb.ScoreVariantsRequest(variants=variants[i : i + args.per_request])
                for i in range(0, len(variants), args.per_request)
            ]
            # alternate server and bare ORT passes: a shared machine's load hits both alike
            for _ in range(args.repeat):
                ort_runs.append(ort_pass())
                with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                    t0 = time.perf_counter()
                    done = list(pool.map(stub.ScoreVariants, requests))
                    seconds = time.perf_counter() - t0
                assert sum(len(r.scores) for r in done) == args.variants
                server_runs.append(args.variants / seconds)
            server_vps, ort_vps = max(server_runs), max(ort_runs)
            device = stub.ListModels(pb.ListModelsRequest()).models[0].device

    print(
        f"model: L={args.length} channels={args.channels} kernel={args.kernel} "
        f"features={args.features} on {device}; max_batch={args.max_batch} "
        f"max_delay_ms={args.max_delay_ms}"
    )
    print(
        f"single call, 1 SNV: server median {pct(lat, 50):.2f} ms, p90 {pct(lat, 90):.2f} ms, "
        f"p99 {pct(lat, 99):.2f} ms | bare ORT (2 windows) median {pct(ort_lat, 50):.2f} ms"
    )
    print(
        f"throughput: server {server_vps:,.0f} variants/s ({args.concurrency} callers x "
        f"{args.per_request} SNVs/request) | bare ORT {ort_vps:,.0f} variants/s "
        f"(batches of {args.max_batch} windows) | ratio {server_vps / ort_vps:.2f} "
        f"(best of {args.repeat})"
    )
    print(f"server single-call mean {statistics.mean(lat) * 1000:.2f} ms over {len(lat)} calls")


if __name__ == "__main__":
    main()
