"""Prometheus metrics: exact names, types and labels, scraped over HTTP from a real server."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import eventually
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread
from varfx.server.metrics import Metrics, start_metrics_server

# name -> (type, label names); deploy/ dashboards and alert rules depend on these.
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "varfx_requests": ("counter", {"method", "code"}),
    "varfx_request_duration_seconds": ("histogram", {"method"}),
    "varfx_queue_wait_seconds": ("histogram", {"model"}),
    "varfx_batch_size": ("histogram", {"model"}),
    "varfx_inference_duration_seconds": ("histogram", {"model"}),
    "varfx_variants": ("counter", {"model", "status"}),
    "varfx_sequences": ("counter", {"model"}),
    "varfx_queue_depth": ("gauge", {"model"}),
    "varfx_queue_capacity": ("gauge", {"model"}),
    "varfx_inflight_requests": ("gauge", set()),
    "varfx_model_info": ("gauge", {"model", "version", "device", "sequence_length", "features"}),
    "varfx_gpu_memory_used_bytes": ("gauge", {"device"}),
}


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(snap: dict[Any, float], name: str, **labels: str) -> float:
    return snap.get((name, frozenset(labels.items())), 0.0)


def touch_all(m: Metrics) -> None:
    m.requests.labels(method="ScoreVariants", code="OK").inc()
    m.request_duration.labels(method="ScoreVariants").observe(0.01)
    m.queue_wait.labels(model="m").observe(0.001)
    m.batch_size.labels(model="m").observe(3)
    m.inference_duration.labels(model="m").observe(0.002)
    m.variants.labels(model="m", status="OK").inc(2)
    m.sequences.labels(model="m").inc(3)
    m.queue_depth.labels(model="m").set(0)
    m.queue_capacity.labels(model="m").set(8192)
    m.inflight.set(0)
    m.model_info.labels(
        model="m", version="1", device="cpu", sequence_length="20", features="4"
    ).set(1)
    m.gpu_memory.labels(device="cuda:0").set(123)


def test_exact_names_types_labels_over_http() -> None:
    m = Metrics(CollectorRegistry())
    touch_all(m)
    server, port = start_metrics_server(m.registry, "127.0.0.1", 0)
    try:
        assert port > 0
        text = fetch(port)
    finally:
        server.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    assert "varfx_requests_total" in text
    assert "varfx_variants_total" in text
    assert "varfx_sequences_total" in text
    buckets = [
        s.labels["le"] for s in families["varfx_batch_size"].samples if s.name.endswith("_bucket")
    ]
    assert buckets == [f"{float(1 << i)}" for i in range(11)] + ["+Inf"]
    assert any(n.startswith("process_") for n in families)
    assert any(n.startswith("python_") for n in families)


def test_promtool_accepts_the_exposition() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    m = Metrics(CollectorRegistry())
    touch_all(m)
    from prometheus_client import generate_latest

    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(m.registry),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_registries_are_independent() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())  # no duplicate errors
    a.sequences.labels(model="m").inc(5)
    assert a.registry.get_sample_value("varfx_sequences_total", {"model": "m"}) == 5
    assert b.registry.get_sample_value("varfx_sequences_total", {"model": "m"}) is None


def test_gpu_memory_gauge_stays_empty_without_nvml() -> None:
    pytest.importorskip("onnxruntime")
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401

        pytest.skip("pynvml installed: the gauge may have samples")
    except ImportError:
        pass
    m = Metrics(CollectorRegistry())
    m.enable_gpu_memory(0)
    assert m.registry.get_sample_value("varfx_gpu_memory_used_bytes", {"device": "cuda:0"}) is None


def test_counters_move_by_the_expected_amounts(server: Any, genome_seqs: dict[str, str]) -> None:
    seq = genome_seqs["chr1"]
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    ok = [pb.Variant(chrom="chr1", pos=p, ref=seq[p - 1], alt="N") for p in (50, 90, 130)]
    mismatch = pb.Variant(chrom="chr1", pos=200, ref="ACGTACGTAC", alt="A")
    if seq[199:209] == "ACGTACGTAC":
        pytest.skip("random genome happens to match")
    symbolic = pb.Variant(chrom="chr1", pos=10, ref=seq[9], alt="<DEL>")
    before = samples(fetch(server.metrics_port))

    stub.ScoreVariants(pb.ScoreVariantsRequest(model="tok", variants=[*ok, mismatch, symbolic]))
    with pytest.raises(grpc.RpcError):
        stub.ScoreVariants(pb.ScoreVariantsRequest(model="nope", variants=ok))
    list(stub.StreamScoreVariants(iter([pb.ScoreVariantsRequest(model="agct", variants=ok)] * 3)))
    stub.ScoreSequences(
        pb.ScoreSequencesRequest(model="tok", pairs=[pb.SequencePair(ref="ACGT", alt="ACGA")])
    )
    snap: dict[str, Any] = {}

    def calls_recorded() -> tuple[float, ...]:
        # call metrics land when each call is done on the server, just after the client's answer
        snap["after"] = samples(fetch(server.metrics_port))
        return (
            value(snap["after"], "varfx_requests_total", method="ScoreSequences", code="OK")
            - value(before, "varfx_requests_total", method="ScoreSequences", code="OK"),
            value(snap["after"], "varfx_inflight_requests"),
        )

    eventually(calls_recorded, (1, 0))
    after = snap["after"]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("varfx_requests_total", method="ScoreVariants", code="OK") == 1
    assert delta("varfx_requests_total", method="ScoreVariants", code="NOT_FOUND") == 1
    assert delta("varfx_requests_total", method="StreamScoreVariants", code="OK") == 1
    assert delta("varfx_requests_total", method="ScoreSequences", code="OK") == 1
    assert delta("varfx_request_duration_seconds_count", method="ScoreVariants") == 2
    assert delta("varfx_variants_total", model="tok", status="OK") == 3 + 1
    assert delta("varfx_variants_total", model="tok", status="REF_MISMATCH") == 1
    assert delta("varfx_variants_total", model="tok", status="SYMBOLIC_ALLELE") == 1
    assert delta("varfx_variants_total", model="agct", status="OK") == 9
    # windows: tok scored 3 ref + 3 alt + 1 pair (2 windows); dedupe can only lower that
    tok_seqs = delta("varfx_sequences_total", model="tok")
    assert 1 <= tok_seqs <= 8
    assert delta("varfx_batch_size_sum", model="tok") == tok_seqs
    runs = delta("varfx_batch_size_count", model="tok")
    assert runs >= 1
    assert delta("varfx_inference_duration_seconds_count", model="tok") == runs
    assert delta("varfx_queue_wait_seconds_count", model="tok") == 2  # one per submit
    assert 1 <= delta("varfx_sequences_total", model="agct") <= 18
    assert value(after, "varfx_inflight_requests") == 0
    assert value(after, "varfx_queue_depth", model="tok") == 0
    assert value(after, "varfx_queue_capacity", model="tok") == server.config.max_queue
    info = value(
        after,
        "varfx_model_info",
        model="tok",
        version="1",
        device="cpu",
        sequence_length="20",
        features="4",
    )
    assert info == 1


def test_metrics_port_off_still_instruments(model_repo: Path, genome_fa: Path) -> None:
    registry = CollectorRegistry()
    config = ServerConfig(
        model_repo=model_repo,
        genome=genome_fa,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        default_model="tok",
        warmup_batch_sizes=(1,),
    )
    with start_in_thread(config, registry=registry) as srv:
        assert srv.metrics_port is None
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        stub.ListModels(pb.ListModelsRequest())
        got = eventually(
            lambda: registry.get_sample_value(
                "varfx_requests_total", {"method": "ListModels", "code": "OK"}
            ),
            1,
        )
        assert got == 1
        assert registry.get_sample_value("varfx_queue_capacity", {"model": "tok"}) == 8192


def test_stop_releases_the_metrics_port(model_repo: Path, genome_fa: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = ServerConfig(
        model_repo=model_repo,
        genome=genome_fa,
        host="127.0.0.1",
        port=0,
        metrics_port=port,
        metrics_host="127.0.0.1",
        default_model="tok",
        warmup_batch_sizes=(1,),
    )
    for _ in range(2):  # the second start binds the same metrics port again
        with start_in_thread(config, registry=CollectorRegistry()) as srv:
            assert srv.metrics_port == port
            assert "varfx_queue_capacity" in fetch(port)
