"""Scale-out on loopback: two varfx servers behind one round-robin target. Calls spread over
both (seen in each server's varfx_variants_total over HTTP), and a job completes with nothing
lost when one replica stops midway."""

from __future__ import annotations

import threading
from collections.abc import Iterator
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


def test_client_spreads_a_job_and_survives_a_replica_stopping(
    replicas: list[Any], genome_seqs: dict[str, str]
) -> None:
    client_cls = _client_class()
    job = _job(genome_seqs["chr1"], 600)  # 1800 variants
    target = _target(replicas)

    # 1. One client, one large streamed job: both replicas score part of it.
    with client_cls(target, timeout=60) as client:
        reference = list(client.iter_scores(job, batch_size=50))
    assert [r.variant.id for r in reference] == [v[4] for v in job]
    assert all(r.status.name == "OK" for r in reference)
    first = [variants_total(s.metrics_port) for s in replicas]
    assert sum(first) == len(job)
    assert min(first) >= len(job) // 5, first

    # 2. The same job again; replica B stops (draining, as on SIGTERM) once a third of the
    # results are in. The job completes, in order, with every variant scored exactly as before.
    a, b = replicas
    stopper: threading.Thread | None = None
    results = []
    with client_cls(target, timeout=60) as client:
        for i, result in enumerate(client.iter_scores(job, batch_size=50)):
            results.append(result)
            if i == len(job) // 3:
                stopper = threading.Thread(target=b.stop, kwargs={"grace": 1.0})
                stopper.start()
    assert stopper is not None
    stopper.join(timeout=30)
    assert [r.variant.id for r in results] == [v[4] for v in job]
    assert all(r.status.name == "OK" for r in results)
    for got, want in zip(results, reference, strict=True):
        assert got.max_abs_diff == pytest.approx(want.max_abs_diff, abs=1e-6)
    # A took over after B stopped: it scored more than its share of the second run.
    a_second = variants_total(a.metrics_port) - first[0]
    assert a_second > len(job) / 2, (a_second, first)
