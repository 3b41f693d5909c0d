"""Server memory stays bounded under traffic (issue 16, reduced from bench/soak.py): a real
``varfx serve`` subprocess on loopback, its RSS read from /proc while streams that want far more
windows than the queue holds run, and after oversized requests are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.score_vs_bcftools import _free_port, null_model
from bench.server_overhead import packed_requests, write_genome
from bench.soak import rss_mb
from varfx.proto.v1 import varfx_pb2 as pb

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

_SCORE = "/varfx.v1.VariantEffectService/ScoreVariants"
_STREAM = "/varfx.v1.VariantEffectService/StreamScoreVariants"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, bytes]]:
    root = tmp_path_factory.mktemp("mem")
    null_model(root / "repo")
    seq = write_genome(root / "g.fa", 1_000_000, 1)
    port = _free_port()
    cmd = [
        sys.executable, "-m", "varfx", "--log-level", "ERROR", "serve",
        "--model-repo", str(root / "repo"), "--genome", str(root / "g.fa"),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
        "--max-queue", "256", "--max-batch", "128",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        target = f"127.0.0.1:{port}"
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=120)
        yield target, proc.pid, seq
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def test_streams_far_beyond_the_queue_keep_memory_bounded(served: tuple[str, int, bytes]) -> None:
    """12 streams x 4 requests in flight x 8,000 SNVs = 768,000 windows wanted at once against
    a 256-window queue: built up front they would be ~460 MB; admitted first, a few MB."""
    target, pid, seq = served
    requests = packed_requests(seq, 32_000, 8_000, 5)
    start = rss_mb(pid)
    peak = start
    stop = threading.Event()
    answered = [0]

    def stream() -> None:
        call = _channel(target).stream_stream(_STREAM)
        for reply in call(iter(requests), timeout=120):
            answered[0] += len(pb.ScoreVariantsResponse.FromString(reply).packed.status)
            if stop.is_set():
                break

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert answered[0] == 12 * 32_000  # every variant answered
    assert peak - start < 150, f"RSS {start:.0f} -> peak {peak:.0f} MB"


def test_refused_large_requests_give_their_memory_back(served: tuple[str, int, bytes]) -> None:
    """Requests over the variant limit (parsed, then refused) and over the byte limit (refused
    at their length prefix): RSS comes back to within 100 MB of where it was once the senders stop."""
    target, pid, _ = served
    over_count = pb.ScoreVariantsRequest(
        variants=[pb.Variant(chrom="chr1", pos=1000 + i, ref="A", alt="C") for i in range(60_000)]
    ).SerializeToString()
    over_bytes = over_count * 25  # ~25 MB: more than 10,000 variants can take
    start = rss_mb(pid)
    codes: list[grpc.StatusCode] = []

    def send(data: bytes, n: int) -> None:
        call = _channel(target).unary_unary(_SCORE)
        for _ in range(n):
            try:
                call(data, timeout=60)
            except grpc.RpcError as exc:
                codes.append(exc.code())  # type: ignore[attr-defined]

    threads = [threading.Thread(target=send, args=(over_count, 15)) for _ in range(3)]
    threads += [threading.Thread(target=send, args=(over_bytes, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # over the count: parsed, then INVALID_ARGUMENT; over the bytes: refused by gRPC core at
    # the length prefix (the port's receive limit, server/requests.py), RESOURCE_EXHAUSTED
    assert Counter(codes) == {
        grpc.StatusCode.INVALID_ARGUMENT: 3 * 15,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 4,
    }
    time.sleep(2)
    after = rss_mb(pid)
    assert after - start < 100, f"RSS {start:.0f} -> {after:.0f} MB after refusals"
