"""Host ceiling of ``varfx score`` (issue 14): the null model, 200k random SNVs -> ``.vcf.gz``,
against ``bcftools view -Oz`` on the same file, in alternating rounds.

    .venv/bin/python -m bench.score_vs_bcftools --variants 200000 --rounds 3 [--profile out.svg]

The null model costs almost nothing (uint8 [B, 600] -> Cast -> ReduceMean -> MatMul -> Sigmoid,
10 features), so the run measures the serving layers. ``varfx serve`` runs as its own process;
``score_vcf`` runs in this process, so its CPU time (``resource.getrusage``, all threads) is the
client's. Prints JSON: variants/s of each round, bcftools records/s, their ratio (median over
rounds), server and client CPU microseconds per variant. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import SimGenome, distinct_sites, write_vcf

FEATURES = [f"f{i}" for i in range(10)]
LENGTH = 600


def null_model(repo: Path) -> Path:
    """``<repo>/null/1/model.onnx``: uint8 [B, 600] -> Cast -> ReduceMean -> MatMul -> Sigmoid."""
    import onnx
    from onnx import TensorProto, helper

    w = np.linspace(-1, 1, len(FEATURES), dtype=np.float32).reshape(1, -1)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
            helper.make_node("MatMul", ["m", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probs"]),
        ],
        "null",
        [helper.make_tensor_value_info("tokens", TensorProto.UINT8, ["batch", LENGTH])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "features": FEATURES,
        "sequence_length": LENGTH,
        "alphabet": "ACGT",
        "n_value": 0.25,
        "output": "probabilities",
        "assembly": "bench-sim",
    }
    helper.set_model_props(model, {"varfx": json.dumps(meta)})
    path = repo / "null" / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bcftools_round(vcf: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["bcftools", "view", "-Oz", "-o", str(out), str(vcf)], check=True)
    return time.perf_counter() - t


def breakdown(vcf: Path, batch_size: int, work: Path) -> dict[str, float]:
    """Client CPU microseconds per variant of each stage, one thread, no server (synthetic
    scores): read + parse, chunking, request building + serialising, writing, BGZF, tabix."""
    import pysam

    from varfx.client._bgzf import BgzfWriter
    from varfx.client._blocks import VcfBlocks
    from varfx.client._core import ScoreCall
    from varfx.client._output import BlockScores, OutputSpec, VcfWriter
    from varfx.client.score import chunk_bounds
    from varfx.client.types import ModelInfo

    out: dict[str, float] = {}
    t = time.process_time()
    blocks = list(VcfBlocks(vcf).blocks())
    n = sum(len(b.batch) for b in blocks)
    out["read_parse"] = time.process_time() - t
    t = time.process_time()
    parts = [b.slice(lo, hi) for b in blocks for lo, hi in chunk_bounds(b, batch_size, 1 << 20)]
    out["chunk"] = time.process_time() - t
    t = time.process_time()
    call = ScoreCall.plan("null", True, scores=("diff",))
    for p in parts:
        call.request(p.batch).SerializeToString()
    out["request"] = time.process_time() - t
    info = ModelInfo(
        "null",
        1,
        (1,),
        tuple(FEATURES),
        LENGTH,
        "",
        "cpu",
        "tokens",
        "probabilities",
        "ACGT",
        True,
        64,
    )
    writer = VcfWriter(OutputSpec(info, info.features, (), "strict", False, "bench"))
    rng = np.random.default_rng(0)
    scores = [
        BlockScores(
            np.zeros(len(p.batch), np.int8),
            [""] * len(p.batch),
            rng.random(len(p.batch)),
            np.zeros(len(p.batch), np.int64),
            np.zeros((len(p.batch), 0)),
            info.features,
        )
        for p in parts
    ]
    t = time.process_time()
    text = [writer.block(p, sc) for p, sc in zip(parts, scores, strict=True)]
    out["write"] = time.process_time() - t
    gz = work / "breakdown.vcf.gz"
    t = time.process_time()
    bgzf = BgzfWriter(str(gz))
    for chunk in text:
        bgzf.write(chunk)
    bgzf.close()
    out["bgzf"] = time.process_time() - t
    t = time.process_time()
    pysam.tabix_index(str(gz), preset="vcf", force=True)
    out["tabix"] = time.process_time() - t
    return {k: 1e6 * v / n for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--max-in-flight", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--server-args", default="", help="extra varfx serve flags")
    ap.add_argument(
        "--profile", default="", help="py-spy of one client round: .svg flame graph, .txt stacks"
    )
    ap.add_argument("--keep", default="", help="keep the work directory here")
    ap.add_argument("--breakdown", action="store_true", help="also time each client stage")
    args = ap.parse_args(argv)
    if not shutil.which("bcftools"):
        sys.stderr.write("bcftools not found (apt-get install bcftools)\n")
        return 2
    from varfx.client import Client
    from varfx.client.score import score_vcf

    work = Path(args.keep or tempfile.mkdtemp(prefix="varfx-bench-score-"))
    work.mkdir(parents=True, exist_ok=True)
    genome = SimGenome(work, size=max(2_000_000, 3 * args.variants))
    repo = work / "models"
    null_model(repo)
    vcf = work / "in.vcf"
    write_vcf(vcf, genome, distinct_sites(genome, args.variants))
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "varfx",
        "serve",
        "--model-repo",
        str(repo),
        "--genome",
        str(genome.path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        "-1",
        *args.server_args.split(),
    ]
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    result: dict[str, Any] = {"variants": args.variants, "rounds": []}
    try:
        with Client(f"127.0.0.1:{port}") as client:
            client.wait_until_serving(120)
            # one warm-up round (model and channel warm, page cache hot)
            score_vcf(
                client,
                vcf,
                work / "warm.vcf.gz",
                batch_size=args.batch_size,
                max_in_flight=args.max_in_flight,
                parallel=args.parallel,
                progress=False,
            )
            bcftools_round(vcf, work / "bcf.vcf.gz")
            for _ in range(args.rounds):
                b = bcftools_round(vcf, work / "bcf.vcf.gz")
                s_cpu, c_cpu, t = _proc_cpu(server.pid), _self_cpu(), time.perf_counter()
                summary = score_vcf(
                    client,
                    vcf,
                    work / "out.vcf.gz",
                    batch_size=args.batch_size,
                    max_in_flight=args.max_in_flight,
                    parallel=args.parallel,
                    progress=False,
                )
                wall = time.perf_counter() - t
                s_cpu, c_cpu = _proc_cpu(server.pid) - s_cpu, _self_cpu() - c_cpu
                n = summary.variants
                result["rounds"].append(
                    {
                        "bcftools_records_per_s": args.variants / b,
                        "varfx_variants_per_s": n / wall,
                        "ratio": (n / wall) / (args.variants / b),
                        "server_cpu_us_per_variant": 1e6 * s_cpu / n,
                        "client_cpu_us_per_variant": 1e6 * c_cpu / n,
                        "ok": summary.statuses.get("OK", 0),
                    }
                )
            if args.profile:
                _profile(args, port, vcf, work)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    if args.breakdown:
        result["client_stage_us_per_variant"] = breakdown(vcf, args.batch_size, work)
    rounds = result["rounds"]
    for key in rounds[0]:
        result[f"median_{key}"] = statistics.median(r[key] for r in rounds)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=1))
    return 0


def _profile(args: argparse.Namespace, port: int, vcf: Path, work: Path) -> None:
    """py-spy over one ``varfx score`` subprocess (same settings): an SVG flame graph, or
    collapsed stacks (``.txt``) that ``bench/_profile.py``-style tools summarise."""
    fmt = "raw" if args.profile.endswith(".txt") else "flamegraph"
    cmd = [
        "py-spy",
        "record",
        "-o",
        args.profile,
        "--format",
        fmt,
        "--rate",
        "200",
        "--",
        sys.executable,
        "-m",
        "varfx",
        "score",
        str(vcf),
        "--server",
        f"127.0.0.1:{port}",
        "-o",
        str(work / "prof.vcf.gz"),
        "--batch-size",
        str(args.batch_size),
        "--max-in-flight",
        str(args.max_in_flight),
        "--no-progress",
    ]
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd[0] = spy
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    raise SystemExit(main())
