"""ScoreOptions.packed: the same scores as whole little-endian arrays, on the real server."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from tests.server.test_service import random_variants
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

FIELDS = ("ref", "alt", "diff", "log2fc")


def stub_for(server: Any) -> pb_grpc.VariantEffectServiceStub:
    return pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))


def mixed_variants(seq: str) -> list[pb.Variant]:
    """OK variants with every kind of failure in between (statuses and messages)."""
    out = random_variants(seq, "chr1", 12, seed=11)
    bad_ref = "ACGT"[("ACGT".index(seq[99]) + 1) % 4]
    out[3:3] = [
        pb.Variant(id="nochrom", chrom="chr9", pos=5, ref="A", alt="C"),
        pb.Variant(id="mismatch", chrom="chr1", pos=100, ref=bad_ref, alt=seq[99]),
        pb.Variant(id="sym", chrom="chr1", pos=50, ref=seq[49], alt="<DEL>"),
    ]
    return out


def test_packed_equals_per_variant_messages(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = mixed_variants(genome_seqs["chr1"])
    stub = stub_for(server)
    plain = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants))
    packed = stub.ScoreVariants(
        pb.ScoreVariantsRequest(variants=variants, options=pb.ScoreOptions(packed=True))
    )
    n, f = len(variants), len(plain.features)
    assert len(packed.scores) == 0
    assert packed.HasField("packed")
    assert list(packed.features) == list(plain.features)
    p = packed.packed
    status = np.array(p.status)
    np.testing.assert_array_equal(status, [s.status.code for s in plain.scores])
    assert {0, 1, 2, 4} <= set(status.tolist())
    assert dict(p.messages) == {
        i: s.status.message for i, s in enumerate(plain.scores) if s.status.message
    }
    ok = status == 0
    for field in FIELDS:
        arr = np.frombuffer(getattr(p, field), dtype="<f4").reshape(n, f)
        assert np.isnan(arr[~ok]).all()
        want = np.array(
            [list(getattr(s, field)) for s, good in zip(plain.scores, ok, strict=True) if good]
        )
        np.testing.assert_array_equal(arr[ok], want)
    mad = np.frombuffer(p.max_abs_diff, dtype="<f4")
    idx = np.frombuffer(p.max_abs_diff_index, dtype="<i4")
    np.testing.assert_array_equal(
        mad[ok], [s.max_abs_diff for s in plain.scores if s.status.code == 0]
    )
    np.testing.assert_array_equal(
        idx[ok], [s.max_abs_diff_index for s in plain.scores if s.status.code == 0]
    )
    assert np.isnan(mad[~ok]).all()
    assert (idx[~ok] == -1).all()


def test_packed_sends_only_the_requested_kinds(server: Any, genome_seqs: dict[str, str]) -> None:
    variants = random_variants(genome_seqs["chr1"], "chr1", 5, seed=3)
    options = pb.ScoreOptions(packed=True, scores=[pb.SCORE_KIND_DIFF], features=["feat1"])
    resp = stub_for(server).ScoreVariants(
        pb.ScoreVariantsRequest(variants=variants, options=options)
    )
    assert list(resp.features) == ["feat1"]
    assert len(resp.packed.diff) == 5 * 1 * 4
    assert resp.packed.ref == resp.packed.alt == resp.packed.log2fc == b""


@pytest.mark.parametrize("packed", [False, True])
def test_packed_sequences_and_streams(
    server: Any, genome_seqs: dict[str, str], packed: bool
) -> None:
    stub = stub_for(server)
    options = pb.ScoreOptions(packed=packed)
    pairs = [
        pb.SequencePair(id="a", ref="ACGT" * 5, alt="ACGA" * 5),
        pb.SequencePair(id="b", ref="AC", alt="AX"),
    ]
    resp = stub.ScoreSequences(pb.ScoreSequencesRequest(pairs=pairs, options=options))
    statuses = list(resp.packed.status) if packed else [s.status.code for s in resp.scores]
    assert statuses == [pb.OK, pb.INVALID_ALLELE]
    variants = random_variants(genome_seqs["chr1"], "chr1", 9, seed=4)
    reqs = [
        pb.ScoreVariantsRequest(variants=variants[i : i + 3], options=options) for i in (0, 3, 6)
    ]
    out = list(stub.StreamScoreVariants(iter(reqs)))
    assert len(out) == 3
    for r in out:
        assert (len(r.packed.status) == 3) if packed else (len(r.scores) == 3)
        assert r.HasField("packed") == packed


def test_client_reads_both_layouts_the_same(server: Any, genome_seqs: dict[str, str]) -> None:
    """The client decodes packed responses and, from servers that ignore the option, messages."""
    from varfx.client._convert import table_from_response
    from varfx.client.types import Variant

    variants = mixed_variants(genome_seqs["chr1"])
    items = [Variant(v.chrom, v.pos, v.ref, v.alt, v.id) for v in variants]
    stub = stub_for(server)
    tables = [
        table_from_response(
            stub.ScoreVariants(
                pb.ScoreVariantsRequest(variants=variants, options=pb.ScoreOptions(packed=flag))
            ),
            items,
            FIELDS,
        )
        for flag in (False, True)
    ]
    plain, packed = tables
    np.testing.assert_array_equal(plain.status, packed.status)
    assert plain.messages == packed.messages
    assert any(plain.messages)
    for field in (*FIELDS, "max_abs_diff", "max_index"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(packed, field))
    packed.diff[0, 0] = 1.0  # arrays are the caller's own (writable copies)


def test_client_rejects_a_truncated_packed_array(server: Any, genome_seqs: dict[str, str]) -> None:
    from varfx.client._convert import table_from_response
    from varfx.client.types import Variant

    variants = random_variants(genome_seqs["chr1"], "chr1", 4, seed=8)
    resp = stub_for(server).ScoreVariants(
        pb.ScoreVariantsRequest(variants=variants, options=pb.ScoreOptions(packed=True))
    )
    resp.packed.diff = resp.packed.diff[:-4]
    items = [Variant(v.chrom, v.pos, v.ref, v.alt, v.id) for v in variants]
    with pytest.raises(ValueError, match=r"bytes of diff, expected 64"):
        table_from_response(resp, items, FIELDS)
