"""The shared reference-window cache: bounded in bytes, least recently used out, and scores with
it equal to scores without it, number for number."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.core.variants import VariantBatch
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.server.genome import Genome
from varfx.server.refcache import RefCache
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner
from varfx.server.scoring import ScoringOptions, plan_variants


def test_bounded_in_bytes_least_recently_used_first() -> None:
    cache = RefCache(max_bytes=10 * (4 * 4 + 160))  # room for 10 entries of 4 features
    rows = np.arange(15 * 4, dtype=np.float32).reshape(15, 4)
    cache.store([("k", i) for i in range(10)], rows[:10])
    found, _ = cache.lookup([("k", 0)], 4)  # touch 0: it is now the most recent
    assert found.tolist() == [True]
    cache.store([("k", i) for i in range(10, 15)], rows[10:])
    assert len(cache) == 10
    assert cache.bytes <= cache.max_bytes
    found, values = cache.lookup([("k", i) for i in range(15)], 4)
    assert found.tolist() == [True] + [False] * 5 + [True] * 9  # 1..5 evicted, 0 kept
    np.testing.assert_array_equal(values[found], rows[found])
    off = RefCache(0)
    off.store([("k", 1)], rows[:1])
    assert len(off) == 0
    assert not off.lookup([("k", 1)], 4)[0].any()


def _score(runner: ModelRunner, genome: Genome, batch: VariantBatch, **kw: object) -> object:
    spec = runner.spec
    plan = plan_variants(
        genome, batch, length=spec.sequence_length, features=spec.features, model=spec.name,
        options=ScoringOptions(reverse_complement=True), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return plan, plan.finish(runner.predict(plan.tokens) if len(plan.tokens) else np.zeros((0, 4)))


def test_scores_with_the_cache_equal_scores_without(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    seq = "".join(rng.choice(list("ACGT"), 3000))
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": seq}))
    write_model(tmp_path / "repo", name="m", net=TinyCNN.random(4, seed=2), length=40)
    runner = ModelRunner(scan_repository(tmp_path / "repo")[0], "cpu")
    pos = rng.integers(50, 2900, size=200)
    refs = [seq[p - 1] for p in pos]
    alts = ["ACGT"[("ACGT".index(r) + 1 + i % 3) % 4] for i, r in enumerate(refs)]
    batch = VariantBatch.from_columns(["chr1"] * 200, pos, refs, alts)
    _, plain = _score(runner, genome, batch)
    cache = RefCache(1 << 20)
    first_plan, first = _score(runner, genome, batch, cache=cache, scope="m")
    second_plan, second = _score(runner, genome, batch, cache=cache, scope="m")
    assert first_plan.cache_hits == 0
    assert second_plan.cache_hits == len(set(pos.tolist()))  # every site found
    assert len(second_plan.tokens) == 2 * 200  # only alt windows (and their strands) run
    other_plan, _ = _score(runner, genome, batch, cache=cache, scope="another model")
    assert other_plan.cache_hits == 0  # another scope shares nothing
    for result in (first, second):
        for kind in (
            pb.SCORE_KIND_REF,
            pb.SCORE_KIND_ALT,
            pb.SCORE_KIND_DIFF,
            pb.SCORE_KIND_LOG2FC,
        ):
            np.testing.assert_array_equal(result.array(kind), plain.array(kind))
