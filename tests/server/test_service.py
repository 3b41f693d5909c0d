"""The real server on an ephemeral loopback port, real ONNX models, real FASTA."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import shared_path, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread

L = 20
C = L // 2 - 1


def stub_for(server: Any) -> pb_grpc.VariantEffectServiceStub:
    return pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))


def scrape(server: Any) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def manual_windows(seq: str, pos: int, ref: str, alt: str) -> tuple[str, str]:
    """Windows by plain string slicing, independent of varfx.server.windows."""
    padded = "N" * L + seq + "N" * L
    start = pos - 1 - C + L
    ref_w = padded[start : start + L]
    alt_w = (padded[start : start + C] + alt + padded[start + C + len(ref) :])[:L]
    return ref_w, alt_w


def ort_predict(model_path: Path, windows: list[str]) -> np.ndarray:
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    tokens = np.array([["ACGTN".index(b) for b in w] for w in windows], dtype=np.uint8)
    return sess.run(None, {sess.get_inputs()[0].name: tokens})[0]


def random_variants(seq: str, chrom: str, n: int, seed: int) -> list[pb.Variant]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pos = int(rng.integers(1, len(seq) - 5))
        kind = i % 3
        ref = seq[pos - 1] if kind != 2 else seq[pos - 1 : pos + 2]
        alt = (
            "ACGT"[("ACGT".index(ref[0]) + 1) % 4]
            if kind == 0
            else ref[0] + "GA"
            if kind == 1
            else ref[0]
        )
        out.append(pb.Variant(id=f"v{i}", chrom=chrom, pos=pos, ref=ref, alt=alt))
    return out


def test_scores_equal_direct_onnxruntime(
    server: Any, model_repo: Path, genome_seqs: dict[str, str]
) -> None:
    seq = genome_seqs["chr1"]
    variants = random_variants(seq, "chr1", 30, seed=5)
    variants.append(pb.Variant(chrom="chr1", pos=2, ref=seq[1], alt="N"))  # near the start
    # as written: this pins the window rule itself (normalisation has tests of its own)
    options = pb.ScoreOptions(indels_as_written=True)
    request = pb.ScoreVariantsRequest(variants=variants, options=options)
    response = stub_for(server).ScoreVariants(request)
    assert response.model == "tok"
    assert [s.variant.id for s in response.scores] == [v.id for v in variants]
    windows = [manual_windows(seq, v.pos, v.ref, v.alt) for v in variants]
    probs = ort_predict(
        model_repo / "tok" / "1" / "model.onnx", [w for pair in windows for w in pair]
    )
    ref_p, alt_p = probs[0::2], probs[1::2]
    for i, s in enumerate(response.scores):
        assert s.status.code == pb.OK, s.status.message
        np.testing.assert_allclose(s.ref, ref_p[i], atol=1e-5)
        np.testing.assert_allclose(s.alt, alt_p[i], atol=1e-5)
        np.testing.assert_allclose(s.diff, alt_p[i] - ref_p[i], atol=1e-5)
        r = np.clip(ref_p[i].astype(float), 1e-6, 1 - 1e-6)
        a = np.clip(alt_p[i].astype(float), 1e-6, 1 - 1e-6)
        np.testing.assert_allclose(s.log2fc, np.log2(a / (1 - a)) - np.log2(r / (1 - r)), atol=1e-3)
        j = int(np.argmax(np.abs(alt_p[i] - ref_p[i])))
        assert s.max_abs_diff_index == j
        assert s.max_abs_diff_feature == response.features[j]
        assert s.max_abs_diff == pytest.approx(abs(alt_p[i][j] - ref_p[i][j]), abs=1e-5)


def test_token_and_agct_onehot_models_agree(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = random_variants(genome_seqs["chr1"], "1", 20, seed=9)  # '1' -> chr1 alias
    stub = stub_for(server)
    tok = stub.ScoreVariants(pb.ScoreVariantsRequest(model="tok", variants=variants))
    agct = stub.ScoreVariants(pb.ScoreVariantsRequest(model="agct", variants=variants))
    for a, b in zip(tok.scores, agct.scores, strict=True):
        assert a.status.code == b.status.code == pb.OK
        np.testing.assert_allclose(a.ref, b.ref, atol=1e-5)
        np.testing.assert_allclose(a.alt, b.alt, atol=1e-5)


def test_options_subset_kinds_and_reverse_complement(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    variants = random_variants(genome_seqs["chr1"], "chr1", 5, seed=11)
    stub = stub_for(server)
    full = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants))
    opts = pb.ScoreOptions(features=["feat3", "feat1"], scores=[pb.SCORE_KIND_DIFF])
    sub = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants, options=opts))
    assert list(sub.features) == ["feat3", "feat1"]
    for f, s in zip(full.scores, sub.scores, strict=True):
        assert len(s.ref) == len(s.alt) == len(s.log2fc) == 0
        np.testing.assert_allclose(s.diff, [f.diff[3], f.diff[1]], atol=1e-6)
    rc = stub.ScoreVariants(
        pb.ScoreVariantsRequest(variants=variants, options=pb.ScoreOptions(reverse_complement=True))
    )
    assert any(not np.allclose(a.ref, b.ref) for a, b in zip(rc.scores, full.scores, strict=True))
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(
            pb.ScoreVariantsRequest(variants=variants, options=pb.ScoreOptions(features=["nope"]))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nope" in err.value.details()


def test_malformed_requests(server: Any) -> None:
    stub = stub_for(server)
    v = pb.Variant(chrom="chr1", pos=10, ref="A", alt="C")
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(model="missing", variants=[v]))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "missing" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(variants=[v] * 10001))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10001" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreSequences(pb.ScoreSequencesRequest(pairs=[pb.SequencePair(id="p", ref="ACGT")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty alt" in err.value.details()


def test_score_sequences(server: Any, model_repo: Path) -> None:
    ref, alt = "ACGT" * 5, "ACGA" * 5
    resp = stub_for(server).ScoreSequences(
        pb.ScoreSequencesRequest(pairs=[pb.SequencePair(id="a", ref=ref, alt=alt)])
    )
    expected = ort_predict(model_repo / "tok" / "1" / "model.onnx", [ref, alt])
    np.testing.assert_allclose(resp.scores[0].ref, expected[0], atol=1e-5)
    np.testing.assert_allclose(resp.scores[0].alt, expected[1], atol=1e-5)


def test_per_variant_statuses_and_stream_order(server: Any, genome_seqs: dict[str, str]) -> None:
    seq = genome_seqs["chr1"]
    good = random_variants(seq, "chr1", 4, seed=2)
    bad = [
        pb.Variant(id="mm", chrom="chr1", pos=10, ref="ACGTACG", alt="A"),
        pb.Variant(id="chrom", chrom="chrUn", pos=10, ref="A", alt="C"),
        pb.Variant(id="sym", chrom="chr1", pos=10, ref=seq[9], alt="<INS>"),
    ]
    requests = [pb.ScoreVariantsRequest(variants=good[i : i + 2] + bad) for i in range(0, 4, 2)] * 5
    responses = list(stub_for(server).StreamScoreVariants(iter(requests)))
    assert len(responses) == len(requests)
    for req, resp in zip(requests, responses, strict=True):
        assert [s.variant.id for s in resp.scores] == [v.id for v in req.variants]
        codes = [s.status.code for s in resp.scores]
        assert codes[:2] == [pb.OK, pb.OK]
        assert codes[2] in (pb.REF_MISMATCH, pb.OK)  # 7-bp REF almost surely mismatches
        assert codes[3:] == [pb.UNKNOWN_CHROMOSOME, pb.SYMBOLIC_ALLELE]
        assert "chrUn" in resp.scores[3].status.message


def test_32_concurrent_callers_get_their_own_ordered_results(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    seq = genome_seqs["chr1"]
    stub = stub_for(server)
    expected = {}
    for k in range(32):
        vs = random_variants(seq, "chr1", 10 + k, seed=100 + k)
        expected[k] = (vs, stub.ScoreVariants(pb.ScoreVariantsRequest(variants=vs)))

    def call(k: int) -> pb.ScoreVariantsResponse:
        return stub.ScoreVariants(pb.ScoreVariantsRequest(variants=expected[k][0]))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(32)))
    for k, resp in enumerate(results):
        vs, alone = expected[k]
        assert [s.variant.id for s in resp.scores] == [v.id for v in vs]
        for a, b in zip(resp.scores, alone.scores, strict=True):
            np.testing.assert_allclose(a.diff, b.diff, atol=1e-6)


def test_metrics_move_by_expected_amounts(server: Any, genome_seqs: dict[str, str]) -> None:
    seq = genome_seqs["chr1"]
    before = scrape(server)
    variants = random_variants(seq, "chr1", 6, seed=3) + [
        pb.Variant(chrom="chrQ", pos=1, ref="A", alt="C")
    ]
    stub_for(server).ScoreVariants(pb.ScoreVariantsRequest(variants=variants))
    after = scrape(server)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('varfx_requests_total{code="OK",method="ScoreVariants"}') == 1
    assert delta('varfx_variants_total{model="tok",status="OK"}') == 6
    assert delta('varfx_variants_total{model="tok",status="UNKNOWN_CHROMOSOME"}') == 1
    assert 1 <= delta('varfx_sequences_total{model="tok"}') <= 12
    assert delta('varfx_request_duration_seconds_count{method="ScoreVariants"}') == 1
    assert after['varfx_queue_capacity{model="tok"}'] > 0
    assert after['varfx_queue_depth{model="tok"}'] == 0
    assert any(k.startswith("varfx_model_info{") for k in after)


def test_health_and_reflection(server: Any) -> None:
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "varfx.v1.VariantEffectService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "varfx.v1.VariantEffectService" in names
    models = pb_grpc.VariantEffectServiceStub(channel).ListModels(pb.ListModelsRequest()).models
    by_name = {m.name: m for m in models}
    assert by_name["agct"].input_kind == "onehot"
    assert by_name["agct"].alphabet == "AGCT"
    assert by_name["tok"].is_default
    assert by_name["tok"].sequence_length == L
    assert by_name["tok"].device == "cpu"


def test_real_eqtl_vcfs_through_the_server(tmp_path: Path) -> None:
    fasta = shared_path("data", "real", "hg38_chr1_1mb", "hg38_1m.fa.gz")
    repo = tmp_path / "repo"
    write_model(repo, name="m", length=1000, n_features=3)
    config = ServerConfig(
        model_repo=repo,
        genome=fasta,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        warmup_batch_sizes=(2,),
    )

    def read(name: str) -> list[pb.Variant]:
        lines = shared_path("data", "real", "hg38_chr1_1mb", name).read_text().splitlines()
        rows = [ln.split("\t") for ln in lines if ln and not ln.startswith("#")]
        return [pb.Variant(id=r[2], chrom=r[0], pos=int(r[1]), ref=r[3], alt=r[4]) for r in rows]

    with start_in_thread(config) as srv:
        stub = stub_for(srv)
        ok = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=read("snp_eqtl.vcf")))
        assert [s.status.code for s in ok.scores] == [pb.OK] * 8
        flip = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=read("snp_eqtl_flip.vcf")))
        assert [s.status.code for s in flip.scores] == [pb.REF_MISMATCH] * 8


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A heavy model (about 10 ms per window on this machine), two windows per run, a 16-window queue."""
    tmp = tmp_path_factory.mktemp("slow")
    write_model(
        tmp / "repo", name="slow", net=TinyCNN.random(2, channels=1024, kernel=31), length=4000
    )
    fasta = write_fasta(tmp / "g.fa", {"chr1": "ACGT" * 1000})
    config = ServerConfig(
        model_repo=tmp / "repo", genome=fasta, host="127.0.0.1", port=0, metrics_port=0,
        metrics_host="127.0.0.1", max_batch=2, max_queue=16, max_delay_ms=0, warmup_batch_sizes=(2,),
        intra_op_threads=1,
    )  # fmt: skip
    with start_in_thread(config) as srv:
        yield srv


def _snvs(n: int) -> list[pb.Variant]:
    return [
        pb.Variant(id=str(i), chrom="chr1", pos=2001 + 4 * i, ref="A", alt="C") for i in range(n)
    ]


def test_full_queue_answers_resource_exhausted_at_once(slow_server: Any) -> None:
    stub = stub_for(slow_server)
    first = stub.ScoreVariants.future(pb.ScoreVariantsRequest(variants=_snvs(8)))  # fills the queue
    deadline = time.time() + 10
    while scrape(slow_server)['varfx_queue_depth{model="slow"}'] < 8 and time.time() < deadline:
        time.sleep(0.002)
    t0 = time.perf_counter()
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(variants=_snvs(3)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full" in err.value.details()
    assert time.perf_counter() - t0 < 1.0
    assert len(first.result(timeout=60).scores) == 8  # the first caller is unharmed


def test_expired_deadline_leaves_the_queue(slow_server: Any) -> None:
    stub = stub_for(slow_server)
    before = scrape(slow_server)
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(variants=_snvs(8)), timeout=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.time() + 10
    while scrape(slow_server)['varfx_queue_depth{model="slow"}'] != 0 and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    after = scrape(slow_server)
    assert after['varfx_queue_depth{model="slow"}'] == 0
    ran = after['varfx_sequences_total{model="slow"}'] - before.get(
        'varfx_sequences_total{model="slow"}', 0
    )
    assert ran < 16  # the windows still queued at the deadline were never computed
    # and the server still answers
    assert (
        stub.ScoreVariants(pb.ScoreVariantsRequest(variants=_snvs(1))).scores[0].status.code
        == pb.OK
    )


def test_models_of_different_assemblies_use_their_own_genome(tmp_path: Path) -> None:
    from tests.onnx_models import TinyCNN

    net = TinyCNN.random(3, seed=4)
    write_model(tmp_path / "repo", name="a37", net=net, length=L, assembly="GRCh37")
    write_model(tmp_path / "repo", name="a38", net=net, length=L, assembly="GRCh38")
    g37 = write_fasta(tmp_path / "g37.fa", {"chr1": "ACGT" * 30})
    g38 = write_fasta(tmp_path / "g38.fa", {"chr1": "TTGCA" * 24})
    config = ServerConfig(
        model_repo=tmp_path / "repo", genome=g37, genomes={"GRCh38": g38}, host="127.0.0.1",
        port=0, metrics_port=-1, warmup_batch_sizes=(2,),
    )  # fmt: skip
    assert ("ACGT" * 30)[49] == "C"
    assert ("TTGCA" * 24)[49] == "A"
    v = pb.Variant(chrom="chr1", pos=50, ref="C", alt="G")
    with start_in_thread(config) as srv:
        stub = stub_for(srv)
        on37 = stub.ScoreVariants(pb.ScoreVariantsRequest(model="a37", variants=[v])).scores[0]
        on38 = stub.ScoreVariants(pb.ScoreVariantsRequest(model="a38", variants=[v])).scores[0]
    assert on37.status.code == pb.OK
    assert on38.status.code == pb.REF_MISMATCH
    assert "genome 'A'" in on38.status.message
