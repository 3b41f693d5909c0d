"""Typed values without a server: coercion, ScoreTable helpers, retry policy, channel options."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from varfx.client import RefPolicy, RetryPolicy, ScoreTable, SequencePair, Status, Variant
from varfx.client._channel import ChannelSettings, channel_options
from varfx.core.variants import VariantBatch


def table(status: list[int], diff: list[list[float]]) -> ScoreTable:
    d = np.array(diff, dtype=np.float32)
    ok = np.array(status) == 0
    mad = np.where(ok, np.abs(d).max(axis=1), np.nan).astype(np.float32)
    idx = np.where(ok, np.abs(d).argmax(axis=1), -1).astype(np.int32)
    return ScoreTable(
        model="m",
        model_version=1,
        features=("a", "b"),
        batch=VariantBatch.from_variants(
            Variant("chr1", i + 1, "A", "C", f"v{i}") for i in range(len(status))
        ),
        status=np.array(status, dtype=np.int8),
        messages=tuple("" for _ in status),
        max_abs_diff=mad,
        max_index=idx,
        diff=d,
    )


def test_variant_coercion() -> None:
    v = Variant("chr1", 5, "A", "C", "x")
    assert Variant.coerce(v) is v
    assert Variant.coerce(("chr1", "5", "A", "C", "x")) == v
    assert Variant.coerce({"chrom": "chr1", "pos": 5, "ref": "A", "alt": "C", "id": "x"}) == v
    assert Variant.coerce(["chr1", 5, "A", "C"]) == Variant("chr1", 5, "A", "C", "")
    with pytest.raises(ValueError, match="lacks keys \\['alt'\\]"):
        Variant.coerce({"chrom": "chr1", "pos": 5, "ref": "A"})
    with pytest.raises(ValueError, match="chrom, pos, ref, alt"):
        Variant.coerce(("chr1", 5))
    assert SequencePair.coerce(("AC", "AG")) == SequencePair("AC", "AG", "")
    with pytest.raises(TypeError):
        SequencePair.coerce("ACGT")  # type: ignore[arg-type]


def test_ref_policy_parse() -> None:
    assert RefPolicy.parse("FLIP") is RefPolicy.FLIP
    assert RefPolicy.parse(2) is RefPolicy.WARN
    with pytest.raises(ValueError, match="'sloppy'"):
        RefPolicy.parse("sloppy")


def test_score_table_helpers() -> None:
    t = table([0, 1, 0, 0], [[0.1, -0.5], [np.nan, np.nan], [0.3, 0.2], [-0.05, 0.01]])
    assert [r.variant.id for r in t.top(2)] == ["v0", "v2"]  # type: ignore[union-attr]
    assert t.top(10)[0].feature == "b"
    assert t.status_counts() == {"OK": 3, "REF_MISMATCH": 1}
    rec = t.to_records()
    assert rec[0]["diff_b"] == pytest.approx(-0.5)
    assert rec[1]["diff_a"] is None
    assert rec[1]["status"] == "REF_MISMATCH"
    assert t.row(1).diff is None
    assert t.row(1).status == Status.REF_MISMATCH
    with pytest.raises(KeyError, match="not requested"):
        t.array("log2fc")
    both = ScoreTable.concat([t, t])
    assert len(both) == 8
    assert both.diff is not None
    assert both.diff.shape == (8, 2)
    assert both.ref is None


def test_retry_policy() -> None:
    p = RetryPolicy(max_attempts=5, initial_backoff=0.1, max_backoff=0.3, multiplier=2)
    rng = random.Random(0)
    waits = [p.backoff(i, rng) for i in range(1, 6)]
    assert all(0.05 <= w <= 0.3 for w in waits)
    assert waits[-1] >= 0.15  # capped at max_backoff, jitter in [0.5, 1]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_channel_options_load_balancing() -> None:
    def opts(target: str, lb: str = "auto") -> dict[str, object]:
        return dict(channel_options(ChannelSettings(target=target, load_balancing=lb)))

    assert opts("dns:///svc:50051")["grpc.lb_policy_name"] == "round_robin"
    assert opts("ipv4:127.0.0.1:1,127.0.0.1:2")["grpc.lb_policy_name"] == "round_robin"
    assert opts("localhost:50051")["grpc.lb_policy_name"] == "pick_first"
    config = json.loads(str(opts("localhost:1", "round_robin")["grpc.service_config"]))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert opts("localhost:1")["grpc.keepalive_time_ms"] == 300000
