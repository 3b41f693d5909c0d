"""Server CPU per variant with a model that costs nothing (issue 14's host ceiling, server side).

Starts ``varfx serve`` in a subprocess with the null model of ``bench/score_vs_bcftools.py``
(uint8 [B, 600] -> Cast -> ReduceMean -> MatMul -> Sigmoid, 10 features) on a random plain-FASTA
genome, streams packed requests of random SNVs to it from this process (the columnar
``packed_variants`` form, packed responses), and reports the server's CPU microseconds per
variant (user + system time of its process from /proc, over the scoring only) and the variants/s.
Also runs bare ONNX Runtime on the same windows for the ratio.

    .venv/bin/python -m bench.server_overhead [--variants 200000 --per-request 10000 --workers 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.score_vs_bcftools import LENGTH, _free_port, _proc_cpu, null_model
from varfx.proto.v1 import varfx_pb2 as pb


def write_genome(path: Path, n: int, seed: int) -> bytes:
    seq = np.random.default_rng(seed).choice(np.frombuffer(b"ACGT", np.uint8), n).tobytes()
    with open(path, "wb") as fh:
        fh.write(b">chr1\n")
        for i in range(0, n, 60):
            fh.write(seq[i : i + 60] + b"\n")
    import pysam

    pysam.faidx(str(path))
    return seq


def packed_requests(seq: bytes, n: int, per: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, per):
        k = min(per, n - start)
        pos = rng.integers(LENGTH, len(seq) - LENGTH, size=k).astype("<i8")
        ref = np.frombuffer(seq, np.uint8)[pos - 1]
        shift = rng.integers(1, 4, size=k)
        code = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), ref)
        alt = np.frombuffer(b"ACGT", np.uint8)[(code + shift) % 4]
        alleles = np.stack([ref, alt], axis=1).astype(np.uint8).tobytes()
        request = pb.ScoreVariantsRequest(
            model="null",
            options=pb.ScoreOptions(packed=True, scores=[pb.SCORE_KIND_DIFF]),
            packed_variants=pb.PackedVariants(
                contigs=["chr1"],
                contig_index=np.zeros(k, "<i4").tobytes(),
                pos=pos.tobytes(),
                alleles=alleles,
                allele_offsets=np.arange(2 * k + 1, dtype="<u4").tobytes(),
            ),
        )
        out.append(request.SerializeToString())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variants", type=int, default=200_000)
    ap.add_argument("--per-request", type=int, default=10_000)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        null_model(root / "repo")
        seq = write_genome(root / "g.fa", 2_000_000, 1)
        requests = packed_requests(seq, args.variants, args.per_request, 2)
        port = _free_port()
        cmd = [
            sys.executable, "-m", "varfx", "--log-level", "WARNING", "serve",
            "--model-repo", str(root / "repo"), "--genome", str(root / "g.fa"),
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
            "--max-batch", str(args.max_batch), "--max-queue", str(8 * args.max_batch),
        ]  # fmt: skip
        if args.workers > 1:
            cmd += ["--workers", str(args.workers)]
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            channel = grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 28)]
            )
            grpc.channel_ready_future(channel).result(timeout=120)
            raw = channel.stream_stream(
                "/varfx.v1.VariantEffectService/StreamScoreVariants",
                request_serializer=None,
                response_deserializer=pb.ScoreVariantsResponse.FromString,
            )
            pids = [proc.pid] + _children(proc.pid)
            list(raw(iter(requests[:2])))  # warm
            for r in range(args.rounds):
                cpu0 = sum(_proc_cpu(p) for p in pids)
                t0 = time.perf_counter()
                n = 0
                for reply in raw(iter(requests)):
                    n += len(reply.packed.status)
                wall = time.perf_counter() - t0
                cpu = sum(_proc_cpu(p) for p in pids) - cpu0
                print(
                    f"round {r + 1}: {n / wall:,.0f} variants/s, server CPU "
                    f"{cpu / n * 1e6:.2f} us/variant ({args.workers} worker(s))"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return 0


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


if __name__ == "__main__":
    sys.exit(main())
