"""Client and AsyncClient end to end against a real server (tests/conftest.py `server`)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from tests.client._proxy import FaultyProxy
from varfx.client import (
    AsyncClient,
    Client,
    RetryPolicy,
    ScoreTable,
    Status,
    VarfxError,
    Variant,
)
from varfx.client.errors import stream_status_lost

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def snvs(seqs: dict[str, str], n: int, chrom: str = "chr1") -> list[Variant]:
    seq = seqs[chrom]
    out = []
    for i in range(n):
        pos = 3 + (i * 7) % (len(seq) - 6)
        ref = seq[pos - 1]
        alt = "ACGT"[("ACGT".index(ref) + 1 + i % 3) % 4]
        out.append(Variant(chrom, pos, ref, alt, f"v{i}"))
    return out


def check_formulas(t: ScoreTable) -> None:
    ok = t.ok
    assert t.ref is not None
    assert t.alt is not None
    assert t.diff is not None
    assert t.log2fc is not None
    np.testing.assert_allclose(t.diff[ok], t.alt[ok] - t.ref[ok], atol=1e-6)
    r = np.clip(t.ref[ok].astype(np.float64), 1e-6, 1 - 1e-6)
    a = np.clip(t.alt[ok].astype(np.float64), 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(t.log2fc[ok], np.log2(a / (1 - a)) - np.log2(r / (1 - r)), atol=1e-4)
    np.testing.assert_allclose(t.max_abs_diff[ok], np.abs(t.diff[ok]).max(axis=1), atol=1e-6)
    assert (t.max_index[ok] == np.abs(t.diff[ok]).argmax(axis=1)).all()
    assert np.isnan(t.diff[~ok]).all()


def test_unary_inputs_and_typed_results(server: Any, genome_seqs: dict[str, str]) -> None:
    seq = genome_seqs["chr1"]
    ref = seq[99]
    alt = "A" if ref != "A" else "C"
    inputs: list[Any] = [
        Variant("chr1", 100, ref, alt, "a"),
        ("chr1", 100, ref, alt),
        {"chrom": "1", "pos": 100, "ref": ref, "alt": alt, "id": "c"},  # chr alias
        ("chr1", 100, "N" if ref != "N" else "A", alt),  # REF mismatch
        ("chrUn", 5, "A", "C"),
        ("chr1", 100, ref, ref),
        ("chr1", 100, ref, "<DEL>"),
    ]
    with Client(server.target, retry=FAST) as client:
        models = {m.name: m for m in client.list_models()}
        assert set(models) == {"tok", "agct"}
        assert models["tok"].is_default
        assert models["tok"].sequence_length == 20
        assert len(models["tok"].features) == 4
        t = client.score_variants(inputs)
    assert t.model == "tok"
    assert t.features == models["tok"].features
    assert t.diff is not None
    assert t.diff.shape == (7, 4)
    assert t.diff.dtype == np.float32
    assert [Status(s).name for s in t.status] == [
        "OK", "OK", "OK", "REF_MISMATCH", "UNKNOWN_CHROMOSOME", "REF_EQUALS_ALT", "SYMBOLIC_ALLELE",
    ]  # fmt: skip
    np.testing.assert_array_equal(t.diff[0], t.diff[1])
    np.testing.assert_array_equal(t.diff[0], t.diff[2])
    assert t.items[2] == Variant("1", 100, ref, alt, "c")
    check_formulas(t)
    rows = list(t)
    assert rows[0].ok
    assert rows[0].feature == t.features[int(np.abs(t.diff[0]).argmax())]
    assert rows[3].status == Status.REF_MISMATCH
    assert "chr1" in rows[3].message
    assert rows[3].diff is None
    assert np.isnan(rows[3].max_abs_diff)
    recs = t.to_records()
    assert recs[0]["status"] == "OK"
    assert recs[0][f"diff_{t.features[1]}"] == pytest.approx(float(t.diff[0, 1]))
    assert recs[4]["max_abs_diff"] is None
    top = t.top(5)
    assert len(top) == 3
    assert top[0].max_abs_diff == pytest.approx(float(np.nanmax(t.max_abs_diff)))
    assert t.status_counts() == {
        "OK": 3, "REF_MISMATCH": 1, "UNKNOWN_CHROMOSOME": 1, "REF_EQUALS_ALT": 1,
        "SYMBOLIC_ALLELE": 1,
    }  # fmt: skip


def test_bad_inputs_name_the_value(server: Any) -> None:
    with Client(server.target) as client:
        with pytest.raises(ValueError, match="'x'"):
            client.score_variants([("chr1", "x", "A", "C")])
        with pytest.raises(TypeError, match="42"):
            client.score_variants([42])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="ref_policy"):
            client.score_variants([("chr1", 5, "A", "C")], ref_policy="lenient")
        with pytest.raises(ValueError, match="score kind"):
            client.score_variants([("chr1", 5, "A", "C")], scores="diff,foo")


def test_streaming_matches_unary_in_order(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 403)
    with Client(server.target, retry=FAST) as client:
        one = client.score_variants(variants, batch_size=1000)
        streamed = client.score_variants(variants, batch_size=37)  # 11 chunks through the stream
        rows = list(client.iter_scores(iter(variants), batch_size=50, max_in_flight=2))
    assert streamed.items == one.items == tuple(variants)
    for kind in ("ref", "alt", "diff", "log2fc"):
        np.testing.assert_array_equal(streamed.array(kind), one.array(kind))
    assert [r.variant for r in rows] == variants
    np.testing.assert_array_equal(np.stack([r.diff for r in rows]), one.diff)  # type: ignore[arg-type]


def test_options_features_scores_rc_and_sequences(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 20)
    with Client(server.target) as client:
        full = client.score_variants(variants)
        sub = client.score_variants(variants, features=["feat2", "feat0"], scores="diff")
        rc = client.score_variants(variants, reverse_complement=True)
        agct = client.score_variants(variants, model="agct")
        seqs = client.score_sequences(
            [("ACGTACGTACGTACGTACGT", "ACGTACGTATGTACGTACGT", "s1"), {"ref": "AC", "alt": "AG"}]
        )
    assert sub.features == ("feat2", "feat0")
    assert sub.ref is None
    assert sub.log2fc is None
    assert full.diff is not None
    assert sub.diff is not None
    np.testing.assert_allclose(sub.diff, full.diff[:, [2, 0]], atol=1e-7)
    assert not np.allclose(rc.diff, full.diff)  # type: ignore[arg-type]
    np.testing.assert_allclose(agct.diff, full.diff, atol=1e-5)  # same network, one-hot input
    assert seqs.status.tolist() == [0, 0]
    assert seqs.items[0].id == "s1"
    check_formulas(seqs)


def test_rpc_errors_become_varfx_error(server: Any) -> None:
    with Client(server.target) as client:
        with pytest.raises(VarfxError) as info:
            client.score_variants([("chr1", 5, "A", "C")], model="nope")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope" in info.value.details
        assert isinstance(info.value.__cause__, grpc.RpcError)
        with pytest.raises(VarfxError) as info:
            client.score_variants([("chr1", 5, "A", "C")], features=["no_such_feature"])
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(VarfxError) as info:
            list(client.iter_chunks([("chr1", 5, "A", "C")], model="nope"))
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    with Client("127.0.0.1:1", timeout=2, retry=FAST) as dead:
        with pytest.raises(VarfxError) as info:
            dead.list_models()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "after 4 attempts" in str(info.value)


def test_retry_on_resource_exhausted(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 5)
    proxy = FaultyProxy(server.target, fail_unary=2)
    try:
        with Client(proxy.target, retry=FAST) as client:
            t = client.score_variants(variants)
            assert t.ok.all()
            assert proxy.unary_calls == 3
            proxy.unary_calls, proxy.fail_unary = 0, 10
            with pytest.raises(VarfxError) as info:
                client.score_variants(variants)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert proxy.unary_calls == FAST.max_attempts
        # a replica cancelling in-flight calls at the end of its drain: resent
        proxy.unary_calls, proxy.fail_unary = 0, 1
        proxy.fail_code = grpc.StatusCode.CANCELLED
        with Client(proxy.target, retry=FAST) as client:
            assert client.score_variants(variants).ok.all()
        assert proxy.unary_calls == 2
        proxy.unary_calls, proxy.fail_unary = 0, 1
        proxy.fail_code = grpc.StatusCode.INVALID_ARGUMENT  # not retried
        with Client(proxy.target, retry=FAST) as client, pytest.raises(VarfxError):
            client.score_variants(variants)
        assert proxy.unary_calls == 1
    finally:
        proxy.stop()


def test_stream_resumes_after_break_and_bounds_in_flight(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    variants = snvs(genome_seqs, 300)
    with Client(server.target) as client:
        expected = client.score_variants(variants)
    proxy = FaultyProxy(server.target, break_stream_after=3, breaks=2, delay_s=0.01)
    try:
        with Client(proxy.target, retry=FAST) as client:
            tables = list(client.iter_chunks(variants, batch_size=10, max_in_flight=3))
        got = ScoreTable.concat(tables)
        assert got.items == tuple(variants)
        np.testing.assert_array_equal(got.diff, expected.diff)  # type: ignore[arg-type]
        assert proxy.streams == 3  # two broken streams, then one that finished
        # resent chunks are only those without a response: 30 chunks + at most 3 per break
        assert 30 <= proxy.stream_requests <= 30 + 2 * 3
        assert proxy.max_unanswered <= 3
    finally:
        proxy.stop()


def test_async_client(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 120)
    with Client(server.target) as client:
        expected = client.score_variants(variants)

    async def run() -> tuple[Any, ...]:
        async with AsyncClient(server.target, retry=FAST) as ac:
            models = await ac.list_models()
            health = await ac.health()
            await ac.wait_until_serving(5)
            unary = await ac.score_variants(variants)
            streamed = await ac.score_variants(variants, batch_size=16)
            chunks = [t async for t in ac.iter_chunks(variants, batch_size=16, max_in_flight=2)]

            async def source() -> Any:
                for v in variants[:5]:
                    await asyncio.sleep(0)
                    yield v

            rows = [r async for r in ac.iter_scores(source(), batch_size=2)]
            seqs = await ac.score_sequences([("ACGT" * 5, "ACGA" * 5)])
            both = await asyncio.gather(*(ac.score_variants(variants[i::4]) for i in range(4)))
            with pytest.raises(VarfxError) as info:
                await ac.score_variants(variants[:1], model="nope")
            return models, health, unary, streamed, chunks, rows, seqs, both, info.value

    models, health, unary, streamed, chunks, rows, seqs, both, err = asyncio.run(run())
    assert {m.name for m in models} == {"tok", "agct"}
    assert health == "SERVING"
    np.testing.assert_array_equal(unary.diff, expected.diff)
    assert len(chunks) == 8
    np.testing.assert_array_equal(streamed.diff, expected.diff)
    np.testing.assert_array_equal(ScoreTable.concat(chunks).diff, expected.diff)
    assert [r.variant for r in rows] == variants[:5]
    assert seqs.ok.all()
    for i, part in enumerate(both):
        np.testing.assert_array_equal(part.diff, expected.diff[i::4])  # type: ignore[index]
    assert err.code == grpc.StatusCode.NOT_FOUND


def test_async_stream_resumes(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 100)
    with Client(server.target) as client:
        expected = client.score_variants(variants)
    proxy = FaultyProxy(server.target, break_stream_after=2, breaks=1)

    async def run() -> list[ScoreTable]:
        async with AsyncClient(proxy.target, retry=FAST) as ac:
            return [t async for t in ac.iter_chunks(variants, batch_size=10, max_in_flight=2)]

    try:
        got = ScoreTable.concat(asyncio.run(run()))
        np.testing.assert_array_equal(got.diff, expected.diff)  # type: ignore[arg-type]
        assert proxy.streams == 2
        assert proxy.max_unanswered <= 2
    finally:
        proxy.stop()


def test_async_stream_resumes_when_aborts_race_writes(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    """The proxy aborts each of the first five streams on its first request while the client
    still has chunks to write. grpc.aio then often reports INTERNAL "Internal error from Core"
    in place of the proxy's UNAVAILABLE (grpc/grpc#36066); the client must resume anyway."""
    variants = snvs(genome_seqs, 100)
    with Client(server.target) as client:
        expected = client.score_variants(variants)
    proxy = FaultyProxy(server.target, break_stream_after=0, breaks=5)
    policy = RetryPolicy(max_attempts=7, initial_backoff=0.0, max_backoff=0.0)

    async def run() -> list[ScoreTable]:
        async with AsyncClient(proxy.target, retry=policy) as ac:
            return [t async for t in ac.iter_chunks(variants, batch_size=4, max_in_flight=8)]

    try:
        got = ScoreTable.concat(asyncio.run(run()))
        assert got.items == tuple(variants)
        np.testing.assert_array_equal(got.diff, expected.diff)  # type: ignore[arg-type]
        assert proxy.streams == 6
    finally:
        proxy.stop()


def test_stream_status_lost_matches_only_grpc_core_write_failures() -> None:
    def err(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert stream_status_lost(err(grpc.StatusCode.INTERNAL, "Internal error from Core"))
    # a server's own INTERNAL names what failed and is not retried
    assert not stream_status_lost(err(grpc.StatusCode.INTERNAL, "model 'tok' failed: oom"))
    assert not stream_status_lost(err(grpc.StatusCode.UNAVAILABLE, "Internal error from Core"))
    assert not stream_status_lost(ValueError("Internal error from Core"))


def test_health_and_channel_options(server: Any) -> None:
    with Client(server.target, token="secret", metadata={"x-team": "a"}) as client:
        assert client.health() == "SERVING"
        assert client.health("varfx.v1.VariantEffectService") == "SERVING"
        with pytest.raises(VarfxError) as info:
            client.health("no.such.Service")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    with Client(f"ipv4:127.0.0.1:{server.port}") as client:  # round_robin channel
        assert client.health() == "SERVING"
        client.wait_until_serving(5)
    with Client("127.0.0.1:1") as dead, pytest.raises(VarfxError, match="not SERVING") as info:
        dead.wait_until_serving(0.5)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(ValueError, match="load_balancing"):
        Client(server.target, load_balancing="random")
    with pytest.raises(ValueError, match="together"):
        Client(server.target, client_certificate=b"x")


def test_tls_and_token(server: Any, tmp_path: Any) -> None:
    """A real TLS server (self-signed localhost certificate made with openssl) and a bearer token."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    proxy = FaultyProxy(server.target, tls=(key.read_bytes(), cert.read_bytes()))
    try:
        target = f"localhost:{proxy.port}"
        with Client(target, root_certificates=cert, token="s3cret", metadata={"X-Team": "a"}) as c:
            assert {m.name for m in c.list_models()} == {"tok", "agct"}
            assert c.score_variants([("chr1", 100, "A", "C")]).status.shape == (1,)
        assert proxy.metadata[-1]["authorization"] == "Bearer s3cret"
        assert proxy.metadata[-1]["x-team"] == "a"
        with Client(target, timeout=2, retry=FAST) as plain, pytest.raises(VarfxError) as info:
            plain.list_models()  # plaintext against TLS fails at once, as one VarfxError
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "speaks TLS and this client plaintext" in str(info.value)
    finally:
        proxy.stop()


def test_bad_input_midway_through_a_stream(server: Any, genome_seqs: dict[str, str]) -> None:
    """Chunks before the bad variant are answered; then its ValueError reaches the caller."""
    good = snvs(genome_seqs, 30)
    got: list[ScoreTable] = []

    def source() -> Any:
        yield from good
        yield ("chr1", "not-a-number", "A", "C")

    def consume(client: Client) -> None:
        for table in client.iter_chunks(source(), batch_size=10, max_in_flight=1):
            got.append(table)

    with Client(server.target) as client, pytest.raises(ValueError, match="not-a-number"):
        consume(client)
    assert sum(len(t) for t in got) == 30
