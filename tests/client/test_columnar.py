"""The client core against a real server: packed vs per-message requests, stream_batches with
parallel streams, sync/async parity, gRPC's service-config retries, the model-choice rule and
the ScoreTable conversions (pandas / anndata where installed)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest

from tests.client._proxy import FaultyProxy
from tests.client.test_client import snvs
from varfx.client import (
    AsyncClient,
    Client,
    ModelChoiceError,
    ModelInfo,
    RetryPolicy,
    ScoreTable,
    VarfxError,
    Variant,
    choose_model,
)
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
ARRAYS = ("status", "max_abs_diff", "max_index", "ref", "alt", "diff", "log2fc")


def mixed(seqs: dict[str, str]) -> list[Variant]:
    """SNVs, indels, and variants the server refuses (each with an id)."""
    seq = seqs["chr1"]
    out = snvs(seqs, 40)
    out += [
        Variant("chr1", 30, seq[29:32], seq[29], "del2"),
        Variant("chr1", 41, seq[40], seq[40] + "GT", "ins2"),
        Variant("chr1", 50, "N" if seq[49] != "N" else "A", "C", "mismatch"),
        Variant("chrUn", 5, "A", "C", "unknown"),
        Variant("chr1", 60, seq[59], "<DEL>", "symbolic"),
        Variant("2", 7, seqs["chr2"][6], "A" if seqs["chr2"][6] != "A" else "G", "alias"),
    ]
    return out


def assert_same(a: ScoreTable, b: ScoreTable) -> None:
    assert a.features == b.features
    assert a.items == b.items
    assert a.messages == b.messages
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


def server_decodes_packed(target: str) -> bool:
    """True when the server reads ScoreVariantsRequest.packed_variants (it answers one status
    for the one variant sent); older servers see no variants and answer none."""
    batch = VariantBatch.from_columns(["chr1"], [5], ["A"], ["C"], ["x"])
    from varfx.client._convert import packed_variants

    request = pb.ScoreVariantsRequest(options=pb.ScoreOptions(packed=True))
    request.packed_variants.CopyFrom(packed_variants(batch))
    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.VariantEffectServiceStub(channel).ScoreVariants(request, timeout=10)
    return len(response.packed.status) + len(response.scores) == 1


def test_packed_and_per_message_requests_give_identical_tables(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    if not server_decodes_packed(server.target):
        pytest.skip("this server does not decode ScoreVariantsRequest.packed_variants yet")
    variants = mixed(genome_seqs)
    with (
        Client(server.target, packed_variants=True) as packed,
        Client(server.target, packed_variants=False) as plain,
    ):
        for kwargs in ({}, {"features": ["feat3", "feat1"], "scores": "diff,ref"}):
            a = packed.score_variants(variants, **kwargs)
            b = plain.score_variants(variants, **kwargs)
            assert_same(a, b)
            assert a.ok.sum() >= 40
        streamed_a = list(packed.iter_chunks(variants, batch_size=7, parallel=2))
        streamed_b = list(plain.iter_chunks(variants, batch_size=7))
    for x, y in zip(streamed_a, streamed_b, strict=True):
        assert_same(x, y)


def test_request_forms(genome_seqs: dict[str, str]) -> None:
    """Packed requests carry whole arrays and no Variant messages; both forms hold the same
    variants."""
    from varfx.client._core import ScoreCall

    variants = mixed(genome_seqs)
    batch = VariantBatch.from_variants(variants)
    packed = ScoreCall.plan("tok", True).request(batch)
    plain = ScoreCall.plan("tok", False).request(batch)
    assert len(packed.variants) == 0
    assert len(plain.variants) == len(variants)
    pv = packed.packed_variants
    index = np.frombuffer(pv.contig_index, "<i4")
    assert [pv.contigs[i] for i in index] == [v.chrom for v in variants]
    assert np.frombuffer(pv.pos, "<i8").tolist() == [v.pos for v in variants]
    off = np.frombuffer(pv.allele_offsets, "<u4")
    assert len(off) == 2 * len(variants) + 1
    assert [pv.alleles[off[2 * i] : off[2 * i + 1]].decode() for i in range(len(variants))] == [
        v.ref for v in variants
    ]
    ids = np.frombuffer(pv.id_offsets, "<u4")
    assert pv.ids[ids[-2] : ids[-1]] == b"alias"
    assert [(m.chrom, m.pos, m.ref, m.alt, m.id) for m in plain.variants] == [
        (v.chrom, v.pos, v.ref, v.alt, v.id) for v in variants
    ]
    no_ids = VariantBatch.from_columns(["chr1"], [5], ["A"], ["C"], [""])
    assert ScoreCall.plan("", True).request(no_ids).packed_variants.id_offsets == b""
    with pytest.raises(TypeError, match="VariantBatch"):
        ScoreCall.plan("", True).request([("chr1", 5, "A", "C")])  # type: ignore[arg-type]


def test_stream_batches_parallel_equals_serial(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = snvs(genome_seqs, 300) + mixed(genome_seqs)
    whole = VariantBatch.from_variants(variants)
    sizes = [1, 17, 50, 3, 64, 29, 100, 2, 80]  # uneven batches, the caller's choice
    cuts = np.cumsum([0, *sizes])
    cuts[-1] = len(whole)
    chunks = [whole.take(int(a), int(b)) for a, b in itertools.pairwise(cuts)]
    with Client(server.target, retry=FAST) as client:
        reference = client.score_variants(whole)
        serial = list(client.stream_batches(chunks, max_in_flight=2))
        for n in (2, 3, 5, 12):  # 12: more streams than batches
            parallel = list(client.stream_batches(iter(chunks), parallel=n, max_in_flight=2))
            assert [len(t) for t in parallel] == [len(c) for c in chunks]
            for a, b in zip(parallel, serial, strict=True):
                assert_same(a, b)
    assert [len(t) for t in serial] == [len(c) for c in chunks]
    assert_same(ScoreTable.concat(serial), reference)
    assert ScoreTable.concat(serial).items == tuple(variants)


def test_parallel_streams_spread_and_resume(server: Any, genome_seqs: dict[str, str]) -> None:
    """Three streams through a proxy that breaks two of them midway: every table comes back
    once, in order, equal to a serial run; each break resends only unanswered chunks."""
    variants = snvs(genome_seqs, 240)
    with Client(server.target) as client:
        expected = client.score_variants(variants)
    proxy = FaultyProxy(server.target, break_stream_after=2, breaks=2, delay_s=0.005)
    try:
        with Client(proxy.target, retry=FAST) as client:
            tables = list(client.iter_chunks(variants, batch_size=10, max_in_flight=2, parallel=3))
        assert len(tables) == 24
        assert_same(ScoreTable.concat(tables), expected)
        assert proxy.streams == 5  # three streams, two of them resumed once
        assert 24 <= proxy.stream_requests <= 24 + 2 * 2
        assert proxy.max_unanswered <= 2
    finally:
        proxy.stop()


def test_async_parallel_streams_resume_and_keep_order(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    variants = snvs(genome_seqs, 160)
    with Client(server.target) as client:
        expected = client.score_variants(variants)
    proxy = FaultyProxy(server.target, break_stream_after=1, breaks=3)

    async def run() -> list[ScoreTable]:
        async with AsyncClient(proxy.target, retry=FAST) as ac:
            return [
                t async for t in ac.iter_chunks(variants, batch_size=8, max_in_flight=2, parallel=4)
            ]

    try:
        tables = asyncio.run(run())
        assert [len(t) for t in tables] == [8] * 20
        assert_same(ScoreTable.concat(tables), expected)
        assert proxy.streams == 7  # four streams, three of them resumed once
        assert proxy.max_unanswered <= 2
    finally:
        proxy.stop()


def test_parallel_bad_input_after_the_tables_before_it(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    good = snvs(genome_seqs, 45)

    def source() -> Any:
        yield from good
        yield ("chr1", "not-a-number", "A", "C")

    got: list[ScoreTable] = []

    def consume(client: Client) -> None:
        for table in client.iter_chunks(source(), batch_size=10, max_in_flight=1, parallel=3):
            got.append(table)

    with Client(server.target) as client, pytest.raises(ValueError, match="not-a-number"):
        consume(client)
    assert [len(t) for t in got] == [10, 10, 10, 10]  # the 5 good ones share the bad chunk
    assert ScoreTable.concat(got).items == tuple(good[:40])


def test_sync_async_parity(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = mixed(genome_seqs) + snvs(genome_seqs, 60)
    batch = VariantBatch.from_variants(variants)
    chunks = [batch.take(i, i + 13) for i in range(0, len(batch), 13)]
    pairs = [("ACGT" * 5, "ACGA" * 5, "p1"), ("AC", "AG")]
    kwargs: dict[str, Any] = {"features": ["feat2", "feat0"], "reverse_complement": True}
    with Client(server.target, retry=FAST) as client:
        sync = (
            client.list_models(),
            client.score_variants(variants, **kwargs),
            client.score_variants(batch, batch_size=16, **kwargs),
            list(client.stream_batches(chunks, parallel=3, **kwargs)),
            client.score_sequences(pairs, scores="diff"),
            client.choose_model(),
        )

    async def run() -> tuple[Any, ...]:
        async with AsyncClient(server.target, retry=FAST) as ac:

            async def agen() -> Any:
                for c in chunks:
                    await asyncio.sleep(0)
                    yield c

            return (
                await ac.list_models(),
                await ac.score_variants(variants, **kwargs),
                await ac.score_variants(batch, batch_size=16, **kwargs),
                [t async for t in ac.stream_batches(agen(), parallel=3, **kwargs)],
                await ac.score_sequences(pairs, scores="diff"),
                await ac.choose_model(),
            )

    asy = asyncio.run(run())
    assert sync[0] == asy[0]
    assert_same(sync[1], asy[1])
    assert_same(sync[2], asy[2])
    assert_same(sync[1], sync[2])
    assert len(sync[3]) == len(asy[3]) == len(chunks)
    for a, b in zip(sync[3], asy[3], strict=True):
        assert_same(a, b)
    assert_same(ScoreTable.concat(sync[3]), sync[1])
    assert_same(sync[4], asy[4])
    assert sync[4].items[0].id == "p1"
    assert sync[5] == asy[5]
    assert sync[5].name == "tok"


def test_model_info_and_manifest(server: Any, genome_seqs: dict[str, str]) -> None:
    with Client(server.target) as client:
        models = {m.name: m for m in client.list_models()}
        table = client.score_variants(snvs(genome_seqs, 3), "agct", reverse_complement=True)
        streamed = list(client.iter_chunks(snvs(genome_seqs, 6), batch_size=2))
    tok = models["tok"]
    assert len(tok.sha256) == 64
    int(tok.sha256, 16)
    assert tok.genome_mismatch_allowed is False
    assert tok.genome is not None
    lengths = {c.name: c.length for c in tok.genome.contigs}
    assert lengths == {name: len(seq) for name, seq in genome_seqs.items()}
    assert all(len(c.md5) == 32 for c in tok.genome.contigs)
    assert table.manifest is not None
    assert table.manifest.model == "agct"
    assert table.manifest.reverse_complement is True
    assert table.manifest.window_length == 20
    assert table.manifest.server_version
    assert table.manifest.indel_normalization == "left-align"
    assert table.manifest.model_sha256 == models["agct"].sha256
    assert table.manifest.genome_digest == tok.genome.digest
    assert all(t.manifest is not None and t.manifest.model == "tok" for t in streamed)
    assert ScoreTable.concat(streamed).manifest == streamed[0].manifest


def info(name: str, default: bool = False) -> ModelInfo:
    return ModelInfo(
        name, 1, (1,), ("f",), 20, "", "cpu", "tokens", "probabilities", "", default, 8
    )


def test_choose_model_rule() -> None:
    a, b, d = info("a"), info("b"), info("d", default=True)
    assert choose_model([a], "") is a
    assert choose_model([a, d, b], "") is d
    assert choose_model([a, b], "b") is b
    with pytest.raises(ModelChoiceError, match=r"several models and no default: \['a', 'b'\]"):
        choose_model([a, b], "")
    with pytest.raises(ModelChoiceError, match=r"'c' is not served; the server has \['a', 'b'\]"):
        choose_model([a, b], "c")
    with pytest.raises(ModelChoiceError, match="no models"):
        choose_model([], "")
    assert issubclass(ModelChoiceError, VarfxError)


# -- gRPC's own retries -----------------------------------------------------------------------


class FlakyServer(pb_grpc.VariantEffectServiceServicer):
    """A real gRPC server whose first ``fail`` unary calls end with ``code``; it records the
    ``grpc-previous-rpc-attempts`` header gRPC's retry adds to each retried attempt."""

    def __init__(self, fail: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.fail, self.code = fail, code
        self.calls = 0
        self.previous: list[str] = []
        self.lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(4))
        pb_grpc.add_VariantEffectServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def ListModels(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.calls += 1
            meta = dict(context.invocation_metadata())
            self.previous.append(str(meta.get("grpc-previous-rpc-attempts", "")))
            failing = self.calls <= self.fail
        if failing:
            context.abort(self.code, f"injected {self.code.name}")
        return pb.ListModelsResponse(models=[pb.ModelInfo(name="m", sha256="ab" * 32)])


def test_unary_retries_come_from_the_service_config() -> None:
    flaky = FlakyServer(fail=2)
    try:
        with Client(f"127.0.0.1:{flaky.port}", retry=FAST) as client:
            (model,) = client.list_models()
        assert model.sha256 == "ab" * 32
        assert flaky.calls == 3
        assert flaky.previous == ["", "1", "2"]  # gRPC's retry, not a new call from the client
        flaky.calls, flaky.fail, flaky.previous = 0, 10, []
        with (
            Client(f"127.0.0.1:{flaky.port}", retry=FAST) as client,
            pytest.raises(VarfxError) as err,
        ):
            client.list_models()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "after 4 attempts" in str(err.value)
        assert flaky.calls == FAST.max_attempts
        flaky.calls, flaky.fail = 0, 10
        once = RetryPolicy(max_attempts=1)
        with (
            Client(f"127.0.0.1:{flaky.port}", retry=once) as client,
            pytest.raises(VarfxError),
        ):
            client.list_models()
        assert flaky.calls == 1
        flaky.calls, flaky.fail = 0, 10
        many = RetryPolicy(max_attempts=9, initial_backoff=0.01, max_backoff=0.02)
        with (
            Client(f"127.0.0.1:{flaky.port}", retry=many) as client,
            pytest.raises(VarfxError),
        ):
            client.list_models()
        assert flaky.calls == many.unary_attempts == 5  # gRPC's cap on retryPolicy attempts
    finally:
        flaky.server.stop(0)


def test_async_unary_retries_come_from_the_service_config() -> None:
    flaky = FlakyServer(fail=2, code=grpc.StatusCode.CANCELLED)

    async def run() -> list[ModelInfo]:
        async with AsyncClient(f"127.0.0.1:{flaky.port}", retry=FAST) as ac:
            return await ac.list_models()

    try:
        assert [m.name for m in asyncio.run(run())] == ["m"]
        assert flaky.previous == ["", "1", "2"]
    finally:
        flaky.server.stop(0)


# -- pandas / anndata ---------------------------------------------------------------------


@pytest.fixture
def scored(server: Any, genome_seqs: dict[str, str]) -> ScoreTable:
    with Client(server.target) as client:
        return client.score_variants(mixed(genome_seqs), scores="diff,alt")


def test_to_pandas_wide_and_long(scored: ScoreTable) -> None:
    pd = pytest.importorskip("pandas")
    t = scored
    n, f = len(t), len(t.features)
    wide = t.to_pandas()
    assert isinstance(wide, pd.DataFrame)
    base = ["chrom", "pos", "ref", "alt", "id", "status", "message", "max_abs_diff"]
    assert list(wide.columns[:9]) == [*base, "max_feature"]
    assert list(wide.columns[9:]) == [f"{k}_{x}" for k in ("alt", "diff") for x in t.features]
    assert wide.shape == (n, 9 + 2 * f)
    assert [
        tuple(r) for r in wide[["chrom", "pos", "ref", "alt", "id"]].itertuples(index=False)
    ] == [
        (v.chrom, v.pos, v.ref, v.alt, v.id)
        for v in t.items  # type: ignore[union-attr]
    ]
    assert wide["status"].tolist() == [s.status.name for s in t]
    assert t.diff is not None
    np.testing.assert_array_equal(wide[f"diff_{t.features[2]}"].to_numpy(), t.diff[:, 2])
    ok = t.ok
    assert wide["max_feature"][ok].tolist() == [t.features[i] for i in t.max_index[ok]]
    assert (wide["max_feature"][~ok] == "").all()
    assert wide.loc[wide["id"] == "mismatch", "status"].item() == "REF_MISMATCH"

    long = t.to_pandas(long=True)
    assert list(long.columns) == [
        "chrom",
        "pos",
        "ref",
        "alt",
        "id",
        "status",
        "feature",
        "kind",
        "value",
    ]
    assert len(long) == n * 2 * f
    row = long[(long["id"] == "v3") & (long["kind"] == "diff") & (long["feature"] == t.features[1])]
    assert row["value"].item() == pytest.approx(float(t.diff[3, 1]))
    back = long.pivot_table(
        index="id", columns=["kind", "feature"], values="value", dropna=False, observed=False
    )
    np.testing.assert_array_equal(
        back[("alt", t.features[0])].loc[[v.id for v in t.items]].to_numpy(),  # type: ignore[union-attr]
        t.array("alt")[:, 0],
    )


def test_to_anndata(scored: ScoreTable) -> None:
    pytest.importorskip("anndata")
    adata = scored.to_anndata()
    assert adata.shape == (len(scored), len(scored.features))
    assert list(adata.var_names) == list(scored.features)
    assert set(adata.layers.keys()) == {"alt", "diff"}
    np.testing.assert_array_equal(adata.layers["alt"], scored.alt)
    np.testing.assert_array_equal(adata.X, scored.diff)
    assert adata.obs["id"].tolist() == [v.id for v in scored.items]  # type: ignore[union-attr]
    assert adata.obs["status"].tolist() == [r.status.name for r in scored]


def test_missing_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, scored: ScoreTable
) -> None:
    import builtins

    real = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in ("pandas", "anndata"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"pip install 'varfx\[pandas\]'"):
        scored.to_pandas()
    with pytest.raises(ImportError, match=r"pip install 'varfx\[anndata\]'"):
        scored.to_anndata()


def test_a_call_cut_by_a_draining_replica_is_retried_on_the_other() -> None:
    """Two replicas behind one round-robin target; the one that takes the call stops (grace
    0.2 s) while the call is in flight. gRPC ends the call (UNAVAILABLE "Cancelling all calls")
    and its retryPolicy sends it to the other replica, marked as a retry."""

    taken = threading.Lock()  # the first call, on whichever replica, is the slow one

    class Slow(FlakyServer):
        def __init__(self) -> None:
            super().__init__(fail=0)
            self.entered = threading.Event()
            self.release = threading.Event()

        def ListModels(self, request: Any, context: Any) -> Any:
            first = taken.acquire(blocking=False)
            if first:
                self.entered.set()
            response = super().ListModels(request, context)
            if first:
                self.release.wait(5.0)  # still working when the grace period ends
            return response

    a, b = Slow(), Slow()
    result: dict[str, Any] = {}
    try:
        with Client(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", retry=FAST) as client:
            caller = threading.Thread(target=lambda: result.update(models=client.list_models()))
            caller.start()
            for _ in range(500):
                if a.entered.is_set() or b.entered.is_set():
                    break
                threading.Event().wait(0.01)
            busy, other = (a, b) if a.entered.is_set() else (b, a)
            busy.server.stop(0.2)
            caller.join(10)
        assert [m.name for m in result["models"]] == ["m"]
        assert busy.previous == [""]
        assert other.previous == ["1"]
    finally:
        for server in (a, b):
            server.release.set()
            server.server.stop(0)


class OldServer(pb_grpc.VariantEffectServiceServicer):
    """A real gRPC server that reads only per-message variants, as servers before
    PackedVariants did (a packed request looks empty to it)."""

    def ScoreVariants(self, request: Any, context: Any) -> Any:
        scores = [
            pb.VariantScore(variant=v, status=pb.Status(code=pb.OK), diff=[0.25], max_abs_diff=0.25)
            for v in request.variants
        ]
        return pb.ScoreVariantsResponse(model="old", features=["f"], scores=scores)


def test_a_server_without_packed_variants_is_named() -> None:
    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_VariantEffectServiceServicer_to_server(OldServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    variants = [("chr1", 5, "A", "C"), ("chr1", 6, "A", "G")]
    try:
        with Client(f"127.0.0.1:{port}") as client, pytest.raises(VarfxError, match="predates"):
            client.score_variants(variants)
        with Client(f"127.0.0.1:{port}", packed_variants=False) as client:
            table = client.score_variants(variants, scores="diff")
        assert table.model == "old"
        assert table.ok.tolist() == [True, True]
        assert table.diff is not None
        assert table.diff.tolist() == [[0.25], [0.25]]
        assert table.items[1] == Variant("chr1", 6, "A", "G")
    finally:
        server.stop(0)


def test_chunks_are_bounded_in_bytes() -> None:
    from varfx.client._chunks import batch_bytes, batches, chunked, split_batch

    long = [Variant("chr1", 10 + i, "A", "A" + "C" * (1000 * (i % 4)), f"id{i}") for i in range(40)]
    lists = list(chunked(long, 1000, max_bytes=5000))
    assert [v for c in lists for v in c] == long
    costs = [[4 + len(v.ref) + len(v.alt) + len(v.id) + 24 for v in c] for c in lists]
    assert all(sum(c) <= 5000 or len(c) == 1 for c in costs)
    assert all(sum(a) + b[0] > 5000 for a, b in itertools.pairwise(costs))  # cut only when full
    whole = VariantBatch.from_variants(long)
    assert batch_bytes(whole).tolist() == [x for c in costs for x in c]
    parts = list(split_batch(whole, 1000, max_bytes=5000))
    assert [len(p) for p in parts] == [len(c) for c in lists]
    assert [len(p) for p in split_batch(whole, 7, max_bytes=10**9)] == [7] * 5 + [5]
    huge = VariantBatch.from_variants([Variant("chr1", 5, "A", "A" * 9000)])
    assert [len(p) for p in split_batch(huge, 10, max_bytes=100)] == [1]  # alone, not dropped
    assert sum(len(b) for b in batches(iter(long), 3, max_bytes=5000)) == 40


def test_long_alleles_never_exceed_the_message_limit(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    """70 insertions of 1 MB each (70 MB of alleles, over the 64 MiB message limit) in one
    call: cut into requests under the byte bound, every variant answered."""
    seq = genome_seqs["chr1"]
    ins = [Variant("chr1", 100 + i, seq[99 + i], seq[99 + i] + "ACGT" * 250_000) for i in range(70)]
    with Client(server.target, packed_variants=True) as client:
        table = client.score_variants([*ins, *snvs(genome_seqs, 3)], scores="diff")
    assert len(table) == 73
    assert table.ok[-3:].all()
    assert not table.ok[:70].any()  # far longer than the window: refused with a status


def test_a_batch_over_the_message_limit_fails_at_once(
    server: Any, genome_seqs: dict[str, str]
) -> None:
    """A caller's batch larger than the message limit is not resumed again and again."""
    seq = genome_seqs["chr1"]
    big = VariantBatch.from_variants(
        [Variant("chr1", 100 + i, seq[99 + i], seq[99 + i] + "A" * 1_000_000) for i in range(70)]
    )
    many = RetryPolicy(max_attempts=50, initial_backoff=0.5, max_backoff=1.0)
    with Client(server.target, retry=many) as client, pytest.raises(VarfxError) as err:
        list(client.stream_batches([big]))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(err.value)
    assert "attempts" not in str(err.value)
