"""Service behaviour under stress and failure, on real servers with real ONNX models and FASTA.

Complements test_service.py: interactive streams, a model that fails on some input, a server
without a genome, request validation, health during warm-up, oversized requests.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import numpy_helper
from prometheus_client import CollectorRegistry

from tests.conftest import random_seq, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread

L = 20
SEQ = random_seq(3000, 21)


def stub_for(server: Any) -> pb_grpc.VariantEffectServiceStub:
    return pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))


def snvs(n: int, start: int = 100, chrom: str = "chr1") -> list[pb.Variant]:
    """SNVs inside the contig (windows without N), ALT = the next base of ACGT."""
    out = []
    for i in range(n):
        pos = start + 7 * i
        ref = SEQ[pos - 1]
        alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        out.append(pb.Variant(id=f"v{pos}", chrom=chrom, pos=pos, ref=ref, alt=alt))
    return out


def write_n_intolerant_model(repo: Path, name: str) -> Path:
    """A real token model whose one-hot table has no row for N (token 4): ONNX Runtime fails
    (Gather index out of bounds) on any window that contains N, e.g. at a contig end."""
    path = write_model(repo, name=name, net=TinyCNN.random(3, seed=5), length=L)
    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "onehot_table":
            table = numpy_helper.to_array(init)[:4]
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(table, "onehot_table"))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("robust")
    repo = tmp / "repo"
    write_model(repo, name="good", net=TinyCNN.random(3, seed=5), length=L)
    write_n_intolerant_model(repo, "fragile")
    fasta = write_fasta(tmp / "g.fa", {"chr1": SEQ})
    return repo, fasta


@pytest.fixture(scope="module")
def server(files: tuple[Path, Path]) -> Iterator[Any]:
    repo, fasta = files
    config = ServerConfig(
        model_repo=repo,
        genome=fasta,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_batch=64,
        max_delay_ms=20.0,  # long enough that concurrent calls share runs
        max_queue=64,
        max_variants_per_request=5000,
        warmup_batch_sizes=(1,),
    )
    with start_in_thread(config) as running:
        yield running


def test_deadline_before_the_batch_runs_is_counted_and_nothing_is_computed(
    files: tuple[Path, Path],
) -> None:
    """A batch waits up to 500 ms to fill; a lone call with a 200 ms deadline expires first."""
    repo, fasta = files
    reg = CollectorRegistry()
    config = ServerConfig(
        model_repo=repo,
        genome=fasta,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_delay_ms=500.0,
        default_model="good",
        warmup_batch_sizes=(1,),
    )

    def get(name: str, **labels: str) -> float:
        return reg.get_sample_value(name, labels) or 0.0

    with start_in_thread(config, registry=reg) as srv:
        with pytest.raises(grpc.RpcError) as err:
            stub_for(srv).ScoreVariants(pb.ScoreVariantsRequest(variants=snvs(3)), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        labels = {"method": "ScoreVariants", "code": "DEADLINE_EXCEEDED"}
        deadline = time.time() + 5
        while get("varfx_requests_total", **labels) < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert get("varfx_requests_total", **labels) == 1
        assert get("varfx_queue_depth", model="good") == 0
        assert get("varfx_inflight_requests") == 0
        time.sleep(0.5)  # past max_delay: the batch would have run by now
        assert get("varfx_sequences_total", model="good") == 0


def test_interactive_stream_gets_each_response_before_sending_the_next(server: Any) -> None:
    """A client that waits for each response before sending its next request (ping-pong)."""
    replies: queue.Queue[pb.ScoreVariantsResponse] = queue.Queue()
    sent: list[pb.ScoreVariantsRequest] = []

    def requests() -> Iterator[pb.ScoreVariantsRequest]:
        for i in range(5):
            request = pb.ScoreVariantsRequest(model="good", variants=snvs(2, start=100 + 50 * i))
            sent.append(request)
            yield request
            replies.get(timeout=10)  # the answer to this request must come first

    call = stub_for(server).StreamScoreVariants(requests(), timeout=20)
    got = []
    for response in call:
        got.append(response)
        replies.put(response)
    assert len(got) == 5
    for request, response in zip(sent, got, strict=True):
        assert [s.variant.id for s in response.scores] == [v.id for v in request.variants]
        assert all(s.status.code == pb.OK for s in response.scores)


def test_long_stream_with_a_slow_reader_stays_ordered(server: Any) -> None:
    requests = [
        pb.ScoreVariantsRequest(model="good", variants=snvs(1 + i % 7, start=100 + 9 * i))
        for i in range(60)
    ]
    call = stub_for(server).StreamScoreVariants(iter(requests), timeout=30)
    first = next(call)
    time.sleep(0.3)  # the client reads nothing for a while
    responses = [first, *call]
    assert len(responses) == 60
    for request, response in zip(requests, responses, strict=True):
        assert [s.variant.id for s in response.scores] == [v.id for v in request.variants]


def test_a_failing_model_call_does_not_affect_concurrent_good_calls(server: Any) -> None:
    stub = stub_for(server)
    edge = pb.Variant(id="edge", chrom="chr1", pos=2, ref=SEQ[1], alt="A" if SEQ[1] != "A" else "C")
    alone = stub.ScoreVariants(pb.ScoreVariantsRequest(model="fragile", variants=snvs(4)))
    futures = []
    for i in range(8):
        futures.append(
            stub.ScoreVariants.future(
                pb.ScoreVariantsRequest(model="fragile", variants=snvs(4)), timeout=20
            )
        )
        if i % 2 == 0:  # a window with N (contig start): this model fails on it
            futures.append(
                stub.ScoreVariants.future(
                    pb.ScoreVariantsRequest(model="fragile", variants=[edge]), timeout=20
                )
            )
    bad, good = 0, 0
    for f in futures:
        err = f.exception()
        if err is not None:
            assert err.code() == grpc.StatusCode.INTERNAL
            assert "fragile" in err.details()
            bad += 1
            continue
        for a, b in zip(f.result().scores, alone.scores, strict=True):
            np.testing.assert_allclose(a.diff, b.diff, atol=1e-6)
        good += 1
    assert (good, bad) == (8, 4)
    # the model keeps serving good input afterwards
    again = stub.ScoreVariants(pb.ScoreVariantsRequest(model="fragile", variants=snvs(4)))
    assert [s.status.code for s in again.scores] == [pb.OK] * 4


def test_request_validation_errors_name_the_value(server: Any) -> None:
    stub = stub_for(server)
    cases = [
        (pb.ScoreVariantsRequest(variants=snvs(1)), grpc.StatusCode.INVALID_ARGUMENT, "several"),
        (
            pb.ScoreVariantsRequest(model="good", model_version=7, variants=snvs(1)),
            grpc.StatusCode.NOT_FOUND,
            "version 7",
        ),
        (
            pb.ScoreVariantsRequest(model="good", variants=snvs(1) * 5001),
            grpc.StatusCode.INVALID_ARGUMENT,
            "5001",
        ),
        (
            pb.ScoreVariantsRequest(
                model="good", variants=snvs(1), options=pb.ScoreOptions(features=["feat0", "zz9"])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "zz9",
        ),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(request)
        assert err.value.code() == code
        assert text in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreSequences(
            pb.ScoreSequencesRequest(model="good", pairs=[pb.SequencePair(id="p7", alt="ACGT")])
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "p7" in err.value.details()


def test_request_larger_than_the_queue_is_scored(server: Any) -> None:
    """4 windows per variant with reverse-complement averaging: 400 windows > max_queue 64."""
    variants = snvs(100)
    options = pb.ScoreOptions(reverse_complement=True, scores=[pb.SCORE_KIND_DIFF])
    response = stub_for(server).ScoreVariants(
        pb.ScoreVariantsRequest(model="good", variants=variants, options=options), timeout=30
    )
    assert [s.status.code for s in response.scores] == [pb.OK] * 100
    assert all(len(s.diff) == 3 for s in response.scores)


def test_server_without_genome_scores_sequences_only(files: tuple[Path, Path]) -> None:
    repo, _ = files
    config = ServerConfig(
        model_repo=repo,
        genome=None,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        default_model="good",
        warmup_batch_sizes=(1,),
    )
    with start_in_thread(config) as srv:
        stub = stub_for(srv)
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(pb.ScoreVariantsRequest(variants=snvs(1)))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "genome" in err.value.details()
        pair = pb.SequencePair(id="s", ref=SEQ[:L], alt=SEQ[:9] + "N" + SEQ[10:L])
        response = stub.ScoreSequences(pb.ScoreSequencesRequest(pairs=[pair]))
        assert response.scores[0].status.code == pb.OK
        assert len(response.scores[0].diff) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_is_serving_only_after_warmup(tmp_path: Path) -> None:
    """A heavy model with a large warm-up batch: health says NOT_SERVING while it warms up."""
    write_model(tmp_path / "repo", name="heavy", net=TinyCNN.random(2, channels=256, kernel=31), length=2000)  # fmt: skip
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": SEQ})
    port = _free_port()
    config = ServerConfig(
        model_repo=tmp_path / "repo",
        genome=fasta,
        host="127.0.0.1",
        port=port,
        metrics_port=-1,
        max_batch=64,
        warmup_batch_sizes=(64, 64, 64),
        intra_op_threads=1,
    )
    holder: dict[str, Any] = {}
    starter = threading.Thread(target=lambda: holder.setdefault("srv", start_in_thread(config)))
    starter.start()
    fast_reconnect = [
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 50),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=fast_reconnect)
    health = health_pb2_grpc.HealthStub(channel)
    seen: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status = health.Check(
                    health_pb2.HealthCheckRequest(service="varfx.v1.VariantEffectService"),
                    timeout=1,
                ).status
            except grpc.RpcError:
                status = -1  # not listening yet
            name = {-1: "DOWN"}.get(status) or health_pb2.HealthCheckResponse.ServingStatus.Name(
                status
            )
            if not seen or seen[-1] != name:
                seen.append(name)
            if name == "SERVING":
                break
            time.sleep(0.01)
        starter.join(60)
        assert "srv" in holder
        assert seen[-1] == "SERVING"
        assert "NOT_SERVING" in seen  # observed while warming up
        assert seen.index("NOT_SERVING") < seen.index("SERVING")
        assert set(seen) <= {"DOWN", "NOT_SERVING", "SERVING"}
    finally:
        starter.join(60)
        if "srv" in holder:
            holder["srv"].stop()


def test_concurrent_streams_wait_for_room_in_a_small_queue(files: tuple[Path, Path]) -> None:
    """Streams over a queue of 8 windows: requests of 6 windows cannot all fit at once, yet
    every stream completes (streams wait for room; a unary call would get RESOURCE_EXHAUSTED)."""
    repo, fasta = files
    config = ServerConfig(
        model_repo=repo,
        genome=fasta,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_batch=4,
        max_queue=8,
        max_delay_ms=1.0,
        default_model="good",
        warmup_batch_sizes=(4,),
    )
    with start_in_thread(config) as srv:
        stub = stub_for(srv)
        streams = [
            [
                pb.ScoreVariantsRequest(variants=snvs(3, start=100 + 40 * (4 * k + i)))
                for i in range(6)
            ]
            for k in range(4)
        ]
        calls = [stub.StreamScoreVariants(iter(reqs), timeout=60) for reqs in streams]
        for reqs, call in zip(streams, calls, strict=True):
            responses = list(call)
            assert len(responses) == len(reqs)
            for request, response in zip(reqs, responses, strict=True):
                assert [s.variant.id for s in response.scores] == [v.id for v in request.variants]
                assert all(s.status.code == pb.OK for s in response.scores)


def test_response_over_the_message_limit_fails_before_inference(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", name="wide", n_features=200, length=L)
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": SEQ})
    reg = CollectorRegistry()
    config = ServerConfig(
        model_repo=tmp_path / "repo",
        genome=fasta,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_message_mb=1,
        warmup_batch_sizes=(1,),
    )
    variants = snvs(400)
    with start_in_thread(config, registry=reg) as srv:
        stub = stub_for(srv)
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "400 variants" in err.value.details()
        assert "max_message_mb" in err.value.details()
        assert reg.get_sample_value("varfx_sequences_total", {"model": "wide"}) in (None, 0.0)
        # only the diff array: about a quarter of the size, and it is sent
        options = pb.ScoreOptions(scores=[pb.SCORE_KIND_DIFF])
        ok = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants, options=options))
        assert [len(s.diff) for s in ok.scores] == [200] * 400
        assert ok.ByteSize() <= 400 * (4 * 200 + 6) + 400 * 100  # the server's estimate bounds it


def test_failed_start_releases_what_it_took(files: tuple[Path, Path]) -> None:
    """The metrics port is taken: start-up fails with a clear error and frees the gRPC port."""
    repo, fasta = files
    grpc_port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = ServerConfig(
            model_repo=repo,
            genome=fasta,
            host="127.0.0.1",
            port=grpc_port,
            metrics_port=busy,
            metrics_host="127.0.0.1",
            default_model="good",
            warmup_batch_sizes=(1,),
        )
        with pytest.raises(OSError, match="in use"):
            start_in_thread(config)
    config = ServerConfig(
        model_repo=repo,
        genome=fasta,
        host="127.0.0.1",
        port=grpc_port,
        metrics_port=-1,
        default_model="good",
        warmup_batch_sizes=(1,),
    )
    with start_in_thread(config) as srv:  # the gRPC port was released
        assert srv.port == grpc_port
        response = stub_for(srv).ScoreVariants(pb.ScoreVariantsRequest(variants=snvs(1)))
        assert response.scores[0].status.code == pb.OK


def test_stream_with_a_malformed_request_answers_those_before_it_then_fails(server: Any) -> None:
    requests = [
        pb.ScoreVariantsRequest(model="good", variants=snvs(2)),
        pb.ScoreVariantsRequest(model="absent", variants=snvs(2)),
        pb.ScoreVariantsRequest(model="good", variants=snvs(2, start=500)),
    ]
    call = stub_for(server).StreamScoreVariants(iter(requests), timeout=20)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        got.extend(call)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "absent" in err.value.details()
    assert len(got) == 1
    assert [s.variant.id for s in got[0].scores] == [v.id for v in requests[0].variants]


def test_empty_requests_get_empty_answers(server: Any) -> None:
    stub = stub_for(server)
    response = stub.ScoreVariants(pb.ScoreVariantsRequest(model="good"))
    assert len(response.scores) == 0
    assert list(response.features) == ["feat0", "feat1", "feat2"]
    assert len(stub.ScoreSequences(pb.ScoreSequencesRequest(model="good")).scores) == 0
    assert list(stub.StreamScoreVariants(iter([]))) == []
    # all variants unscorable: statuses, no inference needed
    bad = [pb.Variant(id="x", chrom="chrZ", pos=5, ref="A", alt="C")]
    codes = [s.status.code for s in stub.ScoreVariants(pb.ScoreVariantsRequest(model="good", variants=bad)).scores]  # fmt: skip
    assert codes == [pb.UNKNOWN_CHROMOSOME]
