"""Scale-out on loopback: two varfx servers behind one round-robin target. Calls spread over
both (seen in each server's varfx_variants_total over HTTP), and a job completes with nothing
lost when one replica stops midway."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy._stack import scrape, snvs, start_server

pytestmark = pytest.mark.slow


def variants_total(metrics_port: int) -> float:
    """Sum of varfx_variants_total over all labels, from a scrape of /metrics."""
    total = 0.0
    for family in text_string_to_metric_families(scrape(metrics_port)):
        if family.name == "varfx_variants":
            total += sum(s.value for s in family.samples if s.name == "varfx_variants_total")
    return total


@pytest.fixture
def replicas(model_repo: Path, genome_fa: Path) -> Iterator[list[Any]]:
    servers = [start_server(model_repo, genome_fa, max_connection_age_s=30.0) for _ in range(2)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def _target(servers: list[Any]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def test_round_robin_channel_spreads_calls(
    replicas: list[Any], genome_seqs: dict[str, str]
) -> None:
    """The gRPC mechanism the client relies on: one channel, a multi-address target and the
    round_robin policy send successive calls to different replicas."""
    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

    seq = genome_seqs["chr1"]
    options = [("grpc.lb_policy_name", "round_robin")]
    with grpc.insecure_channel(_target(replicas), options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.VariantEffectServiceStub(channel)
        for k in range(20):
            chunk = snvs(seq, "chr1", range(100 + 10 * k, 110 + 10 * k))
            request = pb.ScoreVariantsRequest(
                variants=[pb.Variant(chrom=c, pos=p, ref=r, alt=a) for c, p, r, a in chunk]
            )
            response = stub.ScoreVariants(request, timeout=30)
            assert [s.status.code for s in response.scores] == [0] * 10
    counts = [variants_total(s.metrics_port) for s in replicas]
    assert sum(counts) == 200
    assert min(counts) >= 50, counts  # both replicas took a real share


def _fast_retry() -> Any:
    from varfx.client import RetryPolicy

    return RetryPolicy(max_attempts=20, initial_backoff=0.05, max_backoff=0.5)


def _client_class() -> Any:
    client_mod = pytest.importorskip("varfx.client")
    client_cls = getattr(client_mod, "Client", None)
    if client_cls is None:
        pytest.skip("varfx.client.Client not available yet")
    return client_cls


def _job(seq: str, n_positions: int) -> list[tuple[str, int, str, str, str]]:
    """SNVs, three ALTs per position, with ids: 3 * n_positions variants."""
    out = []
    for pos in range(30, 30 + n_positions):
        ref = seq[pos - 1]
        for alt in "ACGT":
            if alt != ref:
                out.append(("chr1", pos, ref, alt, f"chr1:{pos}:{ref}>{alt}"))
    return out


def _score_in_chunks(
    client: Any, job: list[Any], *, size: int = 50, on_done: Any = None
) -> list[Any]:
    """The job as unary ScoreVariants calls of ``size`` variants, 4 in flight at a time, through
    one Client (round robin sends successive calls to successive replicas)."""
    chunks = [job[i : i + size] for i in range(0, len(job), size)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.score_variants, chunk) for chunk in chunks]
        tables = []
        for i, future in enumerate(futures):
            tables.append(future.result())
            if on_done is not None:
                on_done(i, len(chunks))
    return [score for table in tables for score in table]


def test_client_spreads_a_job_and_survives_a_replica_stopping(
    replicas: list[Any], genome_seqs: dict[str, str]
) -> None:
    client_cls = _client_class()
    job = _job(genome_seqs["chr1"], 600)  # 1800 variants
    ids = [v[4] for v in job]
    a, b = replicas

    # 1. One client, one large job in chunks: both replicas score a real share of it.
    with client_cls(_target(replicas), timeout=60) as client:
        reference = _score_in_chunks(client, job)
    assert [r.variant.id for r in reference] == ids
    assert all(r.status.name == "OK" for r in reference)
    first = [variants_total(s.metrics_port) for s in replicas]
    assert sum(first) == len(job)
    assert min(first) >= len(job) // 4, first

    # 2. The same job again; replica B stops (draining, as on SIGTERM) once a third of the
    # chunks are answered. Calls that find B gone are retried on A: every variant comes back,
    # in order, scored exactly as before, and A took over the rest.
    stopper = threading.Thread(target=b.stop, kwargs={"grace": 1.0})

    def stop_b(i: int, n: int) -> None:
        if i == n // 3:
            stopper.start()

    with client_cls(_target(replicas), timeout=60, retry=_fast_retry()) as client:
        results = _score_in_chunks(client, job, on_done=stop_b)
    stopper.join(timeout=30)
    assert [r.variant.id for r in results] == ids
    assert all(r.status.name == "OK" for r in results)
    assert [r.max_abs_diff for r in results] == [r.max_abs_diff for r in reference]
    a_second = variants_total(a.metrics_port) - first[0]
    assert a_second > len(job) / 2, (a_second, first)


def test_streamed_job_moves_to_the_other_replica_when_its_replica_stops(
    replicas: list[Any], genome_seqs: dict[str, str]
) -> None:
    """One stream is one RPC, so it runs on one replica; stop THAT replica midway and the
    client resumes the stream on the other one from the first unanswered chunk."""
    client_cls = _client_class()
    job = _job(genome_seqs["chr1"], 600)
    ids = [v[4] for v in job]
    with client_cls(replicas[0].target, timeout=60) as client:
        reference = list(client.iter_scores(job, batch_size=50))
    base = [variants_total(s.metrics_port) for s in replicas]
    results: list[Any] = []
    stopped: Any = None
    with client_cls(_target(replicas), timeout=60, retry=_fast_retry()) as client:
        for result in client.iter_scores(job, batch_size=50, max_in_flight=2):
            results.append(result)
            if stopped is None and len(results) == len(job) // 3:
                moved = [
                    variants_total(s.metrics_port) - n for s, n in zip(replicas, base, strict=True)
                ]
                (busy,) = [i for i, m in enumerate(moved) if m > 0]  # the stream's replica
                stopped = replicas[busy]
                stopped_metrics = stopped.metrics  # its HTTP endpoint goes away with it
                stopped.stop(grace=1.0)
                survivor = replicas[1 - busy]
                survivor_before = variants_total(survivor.metrics_port)
    assert stopped is not None
    assert [r.variant.id for r in results] == ids
    assert all(r.status.name == "OK" for r in results)
    assert [r.max_abs_diff for r in results] == [r.max_abs_diff for r in reference]
    # The stopped replica drained what it had (the chunks in flight); the survivor scored
    # the rest: together at least the whole job (a chunk scored but not answered is redone).
    by_stopped = (
        sum(
            s.value
            for family in stopped_metrics.registry.collect()
            if family.name == "varfx_variants"
            for s in family.samples
            if s.name == "varfx_variants_total"
        )
        - base[replicas.index(stopped)]
    )
    by_survivor = variants_total(survivor.metrics_port) - survivor_before
    assert by_stopped >= len(job) // 3
    assert by_survivor > len(job) / 2
    assert by_stopped + by_survivor >= len(job)
