"""ScoreVariants with device windows (``--device-windows on``: SNV windows built by the gather
graph where the model runs, here ONNX Runtime's CPU provider) against host-built windows
(``off``): responses byte for byte, on a hand-made FASTA (contig ends, an N run, a contig shorter
than the window), a simulated genome and the real GRCh37 chr20 where present; the plan's split
into host tokens and described rows; two concurrent callers; a one-hot model stays on the host."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import random_seq, shared_path, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server.device_windows import DeviceWindows
from varfx.server.genome import Genome
from varfx.server.scoring import ScoringOptions, plan_variants
from varfx.server.windows import build_windows

L = 100
_OTHER = {b: [a for a in "ACGT" if a != b] for b in "ACGT"}
_KINDS = [pb.SCORE_KIND_REF, pb.SCORE_KIND_ALT, pb.SCORE_KIND_DIFF, pb.SCORE_KIND_LOG2FC]


def _repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    write_model(repo, name="tok", net=TinyCNN.random(4, seed=11), length=L, n_features=4)
    write_model(repo, name="logit", net=TinyCNN.random(3, seed=12), length=L, output="logits")
    write_model(repo, name="oh", net=TinyCNN.random(3, seed=13), length=L,
                input_kind="onehot", alphabet="AGCT")  # fmt: skip
    return repo


@dataclasses.dataclass
class Pair:
    on: Any
    off: Any
    genome: Path


def _servers(repo: Path, genome: Path, **extra: Any) -> Iterator[Pair]:
    from varfx.server import ServerConfig, start_in_thread

    base = dict(
        model_repo=repo, genome=genome, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, default_model="tok", warmup_batch_sizes=(1, 64),
        local_recompute="off", **extra,
    )  # fmt: skip
    with (
        start_in_thread(ServerConfig(**base, device_windows="on")) as on,  # type: ignore[arg-type]
        start_in_thread(ServerConfig(**base, device_windows="off")) as off,  # type: ignore[arg-type]
    ):
        yield Pair(on, off, genome)


def _snvs(seq: str, chrom: str, pos: np.ndarray, rng: np.random.Generator) -> list[pb.Variant]:
    out = []
    for p in pos.tolist():
        ref = seq[p - 1].upper()
        if ref in "ACGT":
            out.append(pb.Variant(chrom=chrom, pos=p, ref=ref, alt=str(rng.choice(_OTHER[ref]))))
    return out


def _mix(contigs: dict[str, str], seed: int, n: int = 120) -> list[pb.Variant]:
    """SNVs (contig ends, random, multi-allelic sites), indels, an MNV and bad records."""
    rng = np.random.default_rng(seed)
    out: list[pb.Variant] = []
    for chrom, seq in contigs.items():
        size = len(seq)
        pos = np.concatenate([[1, 2, size - 1, size], rng.integers(1, size + 1, n)])
        out += _snvs(seq, chrom, np.minimum(pos, size), rng)
        site = int(rng.integers(1, size + 1))
        ref = seq[site - 1].upper()
        if ref in "ACGT":  # a multi-allelic site: every other base
            out += [
                pb.Variant(chrom=chrom, pos=site, ref=ref, alt=a, id=f"m{a}") for a in _OTHER[ref]
            ]
        if size > 40:
            p = int(rng.integers(5, size - 20))
            out.append(pb.Variant(chrom=chrom, pos=p, ref=seq[p - 1 : p + 2], alt=seq[p - 1]))
            out.append(pb.Variant(chrom=chrom, pos=p + 5, ref=seq[p + 4], alt=seq[p + 4] + "GA"))
            mnv = "".join(_OTHER[b][0] if b in "ACGT" else "A" for b in seq[p + 9 : p + 11])
            out.append(pb.Variant(chrom=chrom, pos=p + 10, ref=seq[p + 9 : p + 11], alt=mnv))
    chrom, seq = next(iter(contigs.items()))
    ref = seq[9].upper()
    wrong = _OTHER[ref][0] if ref in "ACGT" else "A"
    out += [
        pb.Variant(chrom=chrom, pos=10, ref=wrong, alt=ref if ref in "ACGT" else "C"),  # mismatch
        pb.Variant(chrom="chrNope", pos=5, ref="A", alt="C"),
        pb.Variant(chrom=chrom, pos=len(seq) + 5, ref="A", alt="C"),
        pb.Variant(chrom=chrom, pos=12, ref=seq[11], alt="<DEL>"),
        pb.Variant(chrom=chrom, pos=12, ref=seq[11], alt=seq[11]),
        pb.Variant(chrom=chrom, pos=13, ref="X", alt="A"),
        pb.Variant(chrom=chrom, pos=14, ref=seq[13].lower(), alt="a" if seq[13] != "A" else "c"),
    ]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _call(server: Any, method: str, request: Any) -> Any:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    return getattr(stub, method)(request)


def _score(server: Any, variants: list[pb.Variant], model: str = "tok", **options: Any) -> bytes:
    request = pb.ScoreVariantsRequest(
        model=model, variants=variants, options=pb.ScoreOptions(scores=_KINDS, **options)
    )
    return bytes(_call(server, "ScoreVariants", request).SerializeToString())


def _rows_sent(server: Any, model: str = "tok") -> float:
    metric = server.handle.metrics.runner_input_bytes.labels(model=model, kind="rows")
    return float(metric._value.get())


def _assert_same(pair: Pair, variants: list[pb.Variant], **options: Any) -> None:
    before = _rows_sent(pair.on)
    got, want = _score(pair.on, variants, **options), _score(pair.off, variants, **options)
    assert got == want
    assert _rows_sent(pair.on) > before  # the SNVs went as row descriptions
    if options.get("packed"):  # the same bytes; the statuses are checked unpacked
        return
    resp = pb.ScoreVariantsResponse.FromString(want)
    codes = {s.status.code for s in resp.scores}
    assert pb.OK in codes  # scored and refused records both there
    assert len(codes) > 2
    assert any(s.status.message.startswith("window has") for s in resp.scores)


def _contigs(path: Path) -> dict[str, str]:
    with Genome(path) as genome:
        return {c: genome.fetch(c, 0, n).decode() for c, n in genome.contigs.items()}


# -- a hand-made FASTA ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("dw-hand")
    seq = random_seq(3000, 21)
    seq = seq[:1200] + "N" * 60 + seq[1260:]  # an assembly gap
    fasta = write_fasta(
        tmp / "g.fa", {"chrA": seq, "chrShort": random_seq(37, 22), "chrB": random_seq(900, 23)}
    )
    yield from _servers(_repo(tmp), fasta)


@pytest.mark.parametrize("rc", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_responses_are_byte_identical(hand: Pair, rc: bool, packed: bool) -> None:
    contigs = _contigs(hand.genome)
    variants = _mix(contigs, seed=1)
    rng = np.random.default_rng(2)  # SNVs around the gap: N bases in their windows
    variants += _snvs(contigs["chrA"], "chrA", np.arange(1140, 1330, 7), rng)
    _assert_same(hand, variants, reverse_complement=rc, packed=packed)


@pytest.mark.parametrize("policy", [pb.REF_POLICY_WARN, pb.REF_POLICY_FLIP])
def test_ref_policies_give_the_same_bytes(hand: Pair, policy: int) -> None:
    contigs = _contigs(hand.genome)
    variants = _mix(contigs, seed=3)
    seq = contigs["chrB"]
    for p in (100, 200, 300):  # REF and ALT swapped: ALT matches the genome
        other = _OTHER[seq[p - 1]][1]
        variants.append(pb.Variant(chrom="chrB", pos=p, ref=other, alt=seq[p - 1]))
    _assert_same(hand, variants, ref_policy=policy)


def test_logits_model_and_a_large_request_in_parts(hand: Pair) -> None:
    contigs = _contigs(hand.genome)
    rng = np.random.default_rng(5)
    variants = _snvs(contigs["chrA"], "chrA", rng.integers(1, 3001, 3000), rng)
    variants += _mix(contigs, seed=6)
    for model in ("logit", "tok"):
        assert _score(hand.on, variants, model) == _score(hand.off, variants, model)


def test_stream_and_rescored_requests_are_identical(hand: Pair) -> None:
    contigs = _contigs(hand.genome)
    requests = [
        pb.ScoreVariantsRequest(variants=_mix(contigs, seed=s, n=40), options=pb.ScoreOptions(
            scores=_KINDS, reverse_complement=bool(s % 2)))
        for s in range(6)
    ]  # fmt: skip
    requests += requests[:2]  # again: their ref windows come from the reference cache

    def stream(server: Any) -> list[bytes]:
        responses = _call(server, "StreamScoreVariants", iter(requests))
        return [bytes(r.SerializeToString()) for r in responses]

    assert stream(hand.on) == stream(hand.off)
    assert hand.on.handle.models["tok"].ref_cache.hits > 0


def test_two_concurrent_callers(hand: Pair) -> None:
    contigs = _contigs(hand.genome)
    work = [_mix(contigs, seed=10 + i, n=300) for i in range(2)]
    want = [_score(hand.off, v) for v in work]
    got: list[list[bytes]] = [[], []]
    start = threading.Barrier(2)

    def caller(i: int) -> None:
        start.wait()
        for _ in range(4):
            got[i].append(_score(hand.on, work[i]))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [[want[0]] * 4, [want[1]] * 4]


def test_list_models_and_the_one_hot_model_stays_on_the_host(hand: Pair) -> None:
    for server, want in ((hand.on, True), (hand.off, False)):
        models = {m.name: m for m in _call(server, "ListModels", pb.ListModelsRequest()).models}
        assert models["tok"].device_windows is want
        assert models["logit"].device_windows is want
        assert models["oh"].device_windows is False
        assert not server.handle.models["oh"].batcher.accepts_rows
    variants = _mix(_contigs(hand.genome), seed=8)
    assert _score(hand.on, variants, "oh") == _score(hand.off, variants, "oh")
    assert _rows_sent(hand.on, "oh") == 0


# -- windows and plans -------------------------------------------------------------------------


def _batch(variants: list[pb.Variant]) -> VariantBatch:
    return VariantBatch.from_columns(
        [v.chrom for v in variants], np.array([v.pos for v in variants]),
        [v.ref for v in variants], [v.alt for v in variants],
    )  # fmt: skip


def test_described_windows_and_statuses_equal_the_host(hand: Pair) -> None:
    contigs = _contigs(hand.genome)
    batch = _batch(_mix(contigs, seed=4))
    with Genome(hand.genome) as genome:
        device = DeviceWindows(genome, L, contigs=["chrA", "chrShort"])  # chrB: host windows
        host = build_windows(genome, batch, L)
        dev = build_windows(genome, batch, L, device=device)
        assert dev.described is not None
        mask = dev.described.mask
        assert mask.any()
        assert (host.status[mask] == pb.OK).all()
        np.testing.assert_array_equal(dev.status, host.status)
        assert (dev.messages, dev.noted) == (host.messages, host.noted)
        np.testing.assert_array_equal(dev.site, host.site)
        chrom = np.array([batch.chrom(i) for i in range(len(batch))])
        assert not mask[chrom == "chrB"].any()
        np.testing.assert_array_equal(dev.ref[~mask], host.ref[~mask])  # the rest built here
        np.testing.assert_array_equal(dev.alt[~mask], host.alt[~mask])
        for rc in (False, True):
            options = ScoringOptions(reverse_complement=rc)
            kw = dict(length=L, features=("a",), model="m", options=options)
            want = plan_variants(genome, batch, **kw)  # type: ignore[arg-type]
            plan = plan_variants(genome, batch, device=device, **kw)  # type: ignore[arg-type]
            assert plan.rows is not None
            assert plan.described is not None
            assert plan.n_rows == len(want.tokens) == len(plan.tokens) + len(plan.rows)
            built = np.empty_like(want.tokens)
            built[plan.described] = device.windows(plan.rows)
            built[~plan.described] = plan.tokens
            np.testing.assert_array_equal(built, want.tokens)
            probs = np.arange(plan.n_rows, dtype=np.float32)[:, None]
            joined = plan.assemble(probs[~plan.described], probs[plan.described])
            np.testing.assert_array_equal(joined, probs)


# -- a simulated genome and the real chr20 -----------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    from varfx.training.simulate import SIZES, simulate

    tmp = tmp_path_factory.mktemp("dw-sim")
    sim = simulate(tmp / "sim", seed=5, config=dataclasses.replace(SIZES["small"], n_variants=10))
    yield from _servers(_repo(tmp), sim.paths.genome, allow_genome_mismatch=True)


@pytest.mark.parametrize("rc", [False, True])
def test_simulated_genome_is_byte_identical(simulated: Pair, rc: bool) -> None:
    contigs = _contigs(simulated.genome)
    _assert_same(simulated, _mix(contigs, seed=7, n=400), reverse_complement=rc)


def test_real_chr20_is_byte_identical(tmp_path: Path) -> None:
    fasta = shared_path("data", "real", "hg19_ref_debian", "vt-examples.20.fa.gz")
    with Genome(fasta) as genome:
        size = genome.contigs["20"]
        rng = np.random.default_rng(20)
        pos = np.sort(rng.integers(1, size + 1, 400))
        pos = np.concatenate([[1, 60_001, 60_020, size - 10, size], pos])
        seqs = {int(p): genome.fetch("20", int(p) - 40, int(p) + 40).decode() for p in pos}
    variants = []
    for p, around in seqs.items():
        ref = around[39]
        if ref in "ACGT":
            variants.append(pb.Variant(chrom="chr20", pos=p, ref=ref, alt=_OTHER[ref][p % 3]))
        if p % 7 == 0:  # a deletion and an insertion near it
            variants.append(pb.Variant(chrom="20", pos=p + 1, ref=around[40:43], alt=around[40]))
            variants.append(pb.Variant(chrom="20", pos=p + 2, ref=around[41], alt=around[41] + "T"))
    variants.append(pb.Variant(chrom="20", pos=30, ref="A", alt="C"))  # the genome is N there
    for pair in _servers(_repo(tmp_path), fasta, allow_genome_mismatch=True):
        for rc in (False, True):
            got = _score(pair.on, variants, reverse_complement=rc)
            assert got == _score(pair.off, variants, reverse_complement=rc)
        resp = pb.ScoreVariantsResponse.FromString(got)
        assert sum(s.status.code == pb.OK for s in resp.scores) > 300
        assert any("N bases" in s.status.message for s in resp.scores)
        assert _rows_sent(pair.on) > 0
