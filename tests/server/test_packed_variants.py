"""ScoreVariantsRequest.packed_variants (columnar arrays) against the per-message form: the same
numbers and statuses for the same variants, and malformed arrays refused naming the field."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc


def packed(variants: list[pb.Variant], ids: bool = True) -> pb.PackedVariants:
    """The columnar form, written out with struct-free numpy (independent of varfx.core)."""
    names: list[str] = []
    index, pos, alleles, offsets, id_bytes, id_offsets = [], [], b"", [0], b"", [0]
    for v in variants:
        if v.chrom not in names:
            names.append(v.chrom)
        index.append(names.index(v.chrom))
        pos.append(v.pos)
        for allele in (v.ref, v.alt):
            alleles += allele.encode()
            offsets.append(len(alleles))
        id_bytes += v.id.encode()
        id_offsets.append(len(id_bytes))
    return pb.PackedVariants(
        contigs=names,
        contig_index=np.array(index, "<i4").tobytes(),
        pos=np.array(pos, "<i8").tobytes(),
        alleles=alleles,
        allele_offsets=np.array(offsets, "<u4").tobytes(),
        ids=id_bytes if ids else b"",
        id_offsets=np.array(id_offsets, "<u4").tobytes() if ids else b"",
    )


def mixed_variants(seqs: dict[str, str], n: int, seed: int) -> list[pb.Variant]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        chrom = ["chr1", "chr2", "MT"][i % 3]
        seq = seqs[chrom]
        pos = int(rng.integers(1, len(seq) - 6))
        ref = seq[pos - 1]
        kind = i % 7
        if kind == 0:
            alt = ref + "TTA"  # insertion
        elif kind == 1:
            ref, alt = seq[pos - 1 : pos + 3], ref  # deletion
        elif kind == 2:
            ref, alt = "ACGT"[(("ACGT".index(ref)) + 1) % 4], ref  # REF mismatch
        elif kind == 3:
            alt = "<DEL>"
        else:
            alt = "ACGT"[(("ACGT".index(ref)) + 1 + kind % 3) % 4]
        name = {"chr1": "1", "MT": "chrM"}.get(chrom, chrom) if i % 5 == 0 else chrom
        out.append(pb.Variant(id=f"v{i}", chrom=name, pos=pos, ref=ref, alt=alt))
    out.append(pb.Variant(id="unknown", chrom="chrZ", pos=5, ref="A", alt="C"))
    return out


@pytest.mark.parametrize("rc", [False, True])
def test_packed_and_per_message_give_identical_scores(
    server: Any, genome_seqs: dict[str, str], model_repo: Any, rc: bool
) -> None:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    variants = mixed_variants(genome_seqs, 300, seed=3)
    options = pb.ScoreOptions(packed=True, reverse_complement=rc)
    a = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=variants, options=options))
    b = stub.ScoreVariants(
        pb.ScoreVariantsRequest(packed_variants=packed(variants), options=options)
    )
    assert list(a.packed.status) == list(b.packed.status)
    assert set(a.packed.status) >= {
        pb.OK,
        pb.REF_MISMATCH,
        pb.SYMBOLIC_ALLELE,
        pb.UNKNOWN_CHROMOSOME,
    }
    assert dict(a.packed.messages) == dict(b.packed.messages)
    for field in ("ref", "alt", "diff", "log2fc", "max_abs_diff", "max_abs_diff_index"):
        assert getattr(a.packed, field) == getattr(b.packed, field), field  # byte for byte
    assert a.manifest == b.manifest
    assert a.manifest.model == "tok"
    assert a.manifest.window_length == 20
    assert a.manifest.indel_normalization == "left-align"
    import hashlib

    onnx_bytes = (model_repo / "tok" / "1" / "model.onnx").read_bytes()
    assert a.manifest.model_sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert len(a.manifest.genome_digest) == 64
    assert a.manifest.reverse_complement == rc
    # and the per-message response form holds the same numbers
    c = stub.ScoreVariants(
        pb.ScoreVariantsRequest(
            packed_variants=packed(variants, ids=False),
            options=pb.ScoreOptions(reverse_complement=rc),
        )
    )
    f = len(c.features)
    diff = np.frombuffer(b.packed.diff, "<f4").reshape(-1, f)
    for i, s in enumerate(c.scores):
        assert (s.variant.chrom, s.variant.pos, s.variant.alt) == (
            variants[i].chrom,
            variants[i].pos,
            variants[i].alt,
        )
        assert s.status.code == b.packed.status[i]
        if s.status.code == pb.OK:
            np.testing.assert_array_equal(np.array(s.diff, np.float32), diff[i])


def test_stream_of_packed_requests(server: Any, genome_seqs: dict[str, str]) -> None:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    chunks = [mixed_variants(genome_seqs, 50, seed=s) for s in range(4)]
    options = pb.ScoreOptions(packed=True)
    requests = [pb.ScoreVariantsRequest(packed_variants=packed(c), options=options) for c in chunks]
    replies = list(stub.StreamScoreVariants(iter(requests)))
    for chunk, reply in zip(chunks, replies, strict=True):
        alone = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=chunk, options=options))
        assert reply.packed.diff == alone.packed.diff
        assert list(reply.packed.status) == list(alone.packed.status)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: setattr(p, "pos", p.pos[:-3]), "packed_variants.pos: 21 bytes"),
        (lambda p: setattr(p, "contig_index", p.contig_index[:-4]), "need 3 contig_index"),
        (lambda p: setattr(p, "allele_offsets", p.allele_offsets[:-4]), "7 allele_offsets"),
        (
            lambda p: setattr(p, "contig_index", np.array([0, 9, 0], "<i4").tobytes()),
            "contig index outside",
        ),
        (
            lambda p: setattr(
                p, "allele_offsets", np.array([0, 1, 9, 3, 4, 5, 6], "<u4").tobytes()
            ),
            "allele offsets must rise",
        ),
        (lambda p: setattr(p, "id_offsets", p.id_offsets[:-4]), "need 4 id_offsets"),
    ],
)
def test_malformed_packed_arrays_are_refused(server: Any, mutate: Any, needle: str) -> None:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    variants = [
        pb.Variant(id=f"x{i}", chrom="chr1", pos=10 + i, ref="A", alt="C") for i in range(3)
    ]
    p = packed(variants)
    mutate(p)
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(packed_variants=p))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()


def test_both_forms_at_once_and_garbage_bytes(server: Any) -> None:
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.VariantEffectServiceStub(channel)
    v = [pb.Variant(chrom="chr1", pos=10, ref="A", alt="C")]
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreVariants(pb.ScoreVariantsRequest(variants=v, packed_variants=packed(v)))
    assert "not both" in err.value.details()
    raw = channel.unary_unary("/varfx.v1.VariantEffectService/ScoreVariants")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff garbage")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ScoreVariantsRequest" in err.value.details()


def test_a_site_runs_its_ref_window_once(server: Any, genome_seqs: dict[str, str]) -> None:
    """Three ALTs at one site: one ref window (or none, if the shared cache has it already) and
    three alt windows; the same request again takes the ref from the cache: three windows."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def sample(name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read()
        for family in text_string_to_metric_families(text.decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return 0.0

    def windows_run() -> float:
        return sample("varfx_sequences_total", model="tok")

    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    ref = genome_seqs["chr1"][1233]
    site = [pb.Variant(chrom="chr1", pos=1234, ref=ref, alt=a) for a in "ACGT" if a != ref]
    request = pb.ScoreVariantsRequest(packed_variants=packed(site))
    before = windows_run()
    first = stub.ScoreVariants(request)
    assert [s.status.code for s in first.scores] == [pb.OK] * 3
    assert windows_run() - before in (3, 4)  # three alts, and the site's ref at most once
    assert len({tuple(s.ref) for s in first.scores}) == 1  # one ref prediction for all three
    hits = sample("varfx_ref_cache_lookups_total", model="tok", result="hit")
    before = windows_run()
    again = stub.ScoreVariants(request)
    assert windows_run() - before == 3  # the ref came from the cache
    assert sample("varfx_ref_cache_lookups_total", model="tok", result="hit") == hits + 1
    assert [list(s.diff) for s in again.scores] == [list(s.diff) for s in first.scores]
