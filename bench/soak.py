"""Soak test of a real ``varfx serve`` under legal and illegal traffic (issue 16), loopback only,
bounded in count and time. Not a test: it prints figures for docs/benchmarks.md.

Scenarios (each ``--seconds`` long, against one server started here):

A. streams: ``--streams`` streams x 4 requests in flight x ``--per-request`` packed SNVs against
   ``--max-queue`` windows, while unary callers send the same size (shed with
   RESOURCE_EXHAUSTED when the queue is full), a prober checks health every 20 ms, and a checker
   sends a fixed 10-variant request every 0.25 s and compares its scores with the expected ones;
B. rejected: ``--senders`` threads sending 1e6-variant per-message requests (17 MiB: refused by
   gRPC core at their 5-byte length prefix, over the port's receive limit), while a prober
   checks health every 20 ms and a raw HTTP/2 call sends only a length prefix every 50 ms (the
   server's own rejection latency, no upload in it); then the server idles;
C. drain: calls in flight when SIGTERM arrives must all finish OK within the grace period.

Reported: server RSS (start, peak, end of each scenario), health p99, rejection p99 (as the
client sees it and, in B, from the length prefix), wrong answers, calls lost on SIGTERM.

    .venv/bin/python -m bench.soak [--seconds 60 --streams 24 --per-request 10000 --max-queue 512]
                                   [--scenarios ABC]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.h2_prefix import prefix_answer
from bench.score_vs_bcftools import _free_port, _proc_cpu, null_model
from bench.server_overhead import packed_requests, write_genome
from varfx.proto.v1 import varfx_pb2 as pb

_SCORE = "/varfx.v1.VariantEffectService/ScoreVariants"
_STREAM = "/varfx.v1.VariantEffectService/StreamScoreVariants"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


class Soak:
    def __init__(self, target: str, pid: int) -> None:
        self.target, self.pid = target, pid
        self.stop = threading.Event()
        self.health_ms: list[float] = []
        self.reject_ms: list[float] = []
        self.prefix_ms: list[float] = []
        self.wrong = 0
        self.checked = 0
        self.errors: dict[str, int] = {}
        self.peak = 0.0

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_send_message_length", 1 << 30),
                ("grpc.max_receive_message_length", 1 << 30),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )

    def count(self, exc: grpc.RpcError) -> None:
        name = exc.code().name  # type: ignore[attr-defined]
        self.errors[name] = self.errors.get(name, 0) + 1

    def prober(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel())
        while not self.stop.is_set():
            t0 = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            self.health_ms.append((time.perf_counter() - t0) * 1000)
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def checker(self, request: bytes, expected: bytes) -> None:
        call = self.channel().unary_unary(_SCORE)
        while not self.stop.is_set():
            try:
                got = pb.ScoreVariantsResponse.FromString(call(request, timeout=30))
                self.checked += 1
                if got.packed.diff != expected:
                    self.wrong += 1
            except grpc.RpcError as exc:
                self.count(exc)
            time.sleep(0.25)

    def streamer(self, requests: list[bytes]) -> None:
        call = self.channel().stream_stream(_STREAM)

        def feed():  # type: ignore[no-untyped-def]
            i = 0
            while not self.stop.is_set():
                yield requests[i % len(requests)]
                i += 1

        try:
            for _ in call(feed(), timeout=600):
                if self.stop.is_set():
                    break
        except grpc.RpcError as exc:
            if not self.stop.is_set():
                self.count(exc)

    def unary(self, request: bytes) -> None:
        call = self.channel().unary_unary(_SCORE)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                call(request, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                    self.reject_ms.append((time.perf_counter() - t0) * 1000)
                self.count(exc)

    def prefix_prober(self, declared: int) -> None:
        """The server's own rejection latency: a call that sends only its length prefix."""
        host, port = self.target.rsplit(":", 1)
        while not self.stop.is_set():
            seconds, status = prefix_answer(host, int(port), _SCORE, declared)
            if status is not None:
                self.prefix_ms.append(seconds * 1000)
            else:
                self.errors["prefix: no status"] = self.errors.get("prefix: no status", 0) + 1
            time.sleep(0.05)


def big_sender(target: str, request_file: str, seconds: float, out: Any) -> None:
    """One sender of refused requests, in its own process (so that the probers' timings in
    the parent do not wait on its GIL): sends ``request_file``'s message for ``seconds`` as
    fast as the answers come, then puts (milliseconds per call, codes) on ``out``."""
    request = Path(request_file).read_bytes()
    call = Soak(target, 0).channel().unary_unary(_SCORE)
    ms: list[float] = []
    codes: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            call(request, timeout=60)
            name = "OK"
        except grpc.RpcError as exc:
            name = exc.code().name  # type: ignore[attr-defined]
        ms.append((time.perf_counter() - t0) * 1000)
        codes[name] = codes.get(name, 0) + 1
    out.put((ms, codes))


def run_threads(soak: Soak, targets: list[tuple[object, tuple]], seconds: float) -> None:
    threads = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    time.sleep(seconds)
    soak.stop.set()
    for t in threads:
        t.join(timeout=120)


def scenario_a(args: argparse.Namespace, run: Run) -> None:
    """Streams + unary + health + checker."""
    soak = Soak(run.target, run.pid)
    targets: list[tuple[object, tuple]] = [
        (soak.prober, ()),
        (soak.checker, (run.check, run.expected)),
    ]
    targets += [(soak.streamer, (run.stream_requests,)) for _ in range(args.streams)]
    targets += [(soak.unary, (run.stream_requests[0],)) for _ in range(2)]
    run_threads(soak, targets, args.seconds)
    end = rss_mb(run.pid)
    print(
        f"A streams: {args.streams} x 4 x {args.per_request} vs max-queue {args.max_queue}, "
        f"{args.seconds:.0f} s: RSS peak {soak.peak:.0f} MB (+{soak.peak - run.start:.0f}), "
        f"end {end:.0f} MB; health p99 {p99(soak.health_ms):.1f} ms "
        f"({len(soak.health_ms)} checks); unary rejection p99 {p99(soak.reject_ms):.1f} ms "
        f"({len(soak.reject_ms)}); checker {soak.checked} calls, {soak.wrong} wrong; "
        f"errors {soak.errors}"
    )


def scenario_b(args: argparse.Namespace, run: Run) -> None:
    """Rejected 1e6-variant requests, then idle. The senders' time per call is the client's
    (copying the message into its call, sending, the answer); the prefix probe's is the server's
    own, from the 5-byte length prefix it refuses on to the status (bench/h2_prefix.py)."""
    big = pb.ScoreVariantsRequest(
        variants=[
            pb.Variant(chrom="chr1", pos=1000 + i % 100_000, ref="A", alt="C")
            for i in range(args.big)
        ]
    ).SerializeToString()
    print(f"B rejected: a request of {args.big} variants is {len(big) / 2**20:.0f} MiB")
    base = rss_mb(run.pid)
    soak = Soak(run.target, run.pid)
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    with tempfile.NamedTemporaryFile(suffix=".pb") as fh:
        fh.write(big)
        fh.flush()
        senders = [
            spawn.Process(target=big_sender, args=(run.target, fh.name, args.seconds, results))
            for _ in range(args.senders)
        ]
        for sender in senders:
            sender.start()
        cpu0 = _proc_cpu(run.pid)
        run_threads(soak, [(soak.prober, ()), (soak.prefix_prober, (len(big),))], args.seconds)
        cpu = _proc_cpu(run.pid) - cpu0
        for _ in senders:
            ms, codes = results.get(timeout=120)
            soak.reject_ms += ms
            for name, count in codes.items():
                soak.errors[name] = soak.errors.get(name, 0) + count
        for sender in senders:
            sender.join(timeout=60)
    time.sleep(5)
    idle = rss_mb(run.pid)
    print(
        f"B rejected: {args.senders} sender processes, {args.seconds:.0f} s, "
        f"{len(soak.reject_ms)} calls, server CPU {cpu * 1e6 / max(1, len(soak.reject_ms)):.0f} us "
        f"per call ({cpu / args.seconds:.2f} cores) (client median {np.median(soak.reject_ms):.1f}, p99 "
        f"{p99(soak.reject_ms):.1f} ms, codes {soak.errors}); server from the length prefix "
        f"median {np.median(soak.prefix_ms):.1f}, p99 {p99(soak.prefix_ms):.1f} ms "
        f"({len(soak.prefix_ms)} probes); RSS before {base:.0f} MB, peak {soak.peak:.0f} MB, "
        f"idle after 5 s {idle:.0f} MB (start {run.start:.0f}, +{idle - run.start:.0f}); "
        f"health median {np.median(soak.health_ms):.1f}, p99 {p99(soak.health_ms):.1f} ms "
        f"({len(soak.health_ms)} checks)"
    )


def scenario_c(args: argparse.Namespace, run: Run) -> None:
    """SIGTERM with calls in flight."""
    call = grpc.insecure_channel(run.target).unary_unary(_SCORE)
    futures = [call.future(run.stream_requests[i % 4], timeout=60) for i in range(8)]
    time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    ok = lost = 0
    for f in futures:
        try:
            f.result()
            ok += 1
        except grpc.RpcError as exc:
            lost += exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    code = run.proc.wait(timeout=60)
    print(f"C drain: {ok} of {len(futures)} in-flight calls OK, {lost} lost; exit {code}")


@dataclass
class Run:
    """The server under test and the requests every scenario uses."""

    proc: subprocess.Popen  # type: ignore[type-arg]
    target: str
    start: float  # server RSS before the first scenario, MB
    stream_requests: list[bytes]
    check: bytes
    expected: bytes

    @property
    def pid(self) -> int:
        return self.proc.pid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--streams", type=int, default=24)
    ap.add_argument("--per-request", type=int, default=10_000)
    ap.add_argument("--max-queue", type=int, default=512)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--big", type=int, default=1_000_000, help="variants per rejected request")
    ap.add_argument("--scenarios", default="ABC", help="which of A, B and C to run (default all)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        null_model(root / "repo")
        seq = write_genome(root / "g.fa", 2_000_000, 1)
        stream_requests = packed_requests(seq, 4 * args.per_request, args.per_request, 2)
        check = packed_requests(seq, 10, 10, 3)[0]
        port = _free_port()
        cmd = [
            sys.executable, "-m", "varfx", "--log-level", "WARNING", "serve",
            "--model-repo", str(root / "repo"), "--genome", str(root / "g.fa"),
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
            "--max-queue", str(args.max_queue), "--grace-s", "30",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            target = f"127.0.0.1:{port}"
            ch = grpc.insecure_channel(target)
            grpc.channel_ready_future(ch).result(timeout=120)
            health = health_pb2_grpc.HealthStub(ch)
            while health.Check(health_pb2.HealthCheckRequest()).status != 1:
                time.sleep(0.2)
            expected = pb.ScoreVariantsResponse.FromString(
                ch.unary_unary(_SCORE)(check)
            ).packed.diff
            run = Run(proc, target, rss_mb(proc.pid), stream_requests, check, expected)
            print(
                f"machine: {os.cpu_count()} cores; server pid {proc.pid}, "
                f"start RSS {run.start:.0f} MB"
            )
            for name, scenario in (("A", scenario_a), ("B", scenario_b), ("C", scenario_c)):
                if name in args.scenarios.upper():
                    scenario(args, run)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
