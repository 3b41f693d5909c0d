"""ExplainVariant and `varfx explain`: ISM equals mutant pairs scored by ScoreSequences, motif
calls find a planted site, bad requests are refused, the JSON and the plot are written."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import random_seq, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.cli import main as varfx_main
from varfx.client.explain import ExplainError, explain_variant, explanation_json, parse_variant
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server.background import calibrate_model
from varfx.training.motifs import load_motifs

L = 60
C = L // 2 - 1
W = 20
SITE = 1000  # 1-based start of the planted CEBPB consensus


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    from varfx.server import ServerConfig, start_in_thread

    tmp = tmp_path_factory.mktemp("explain")
    cebpb = next(m for m in load_motifs() if m.name == "CEBPB")
    seq = list(random_seq(3000, 21))
    seq[SITE - 1 : SITE - 1 + cebpb.width] = ["ACGT"[b] for b in cebpb.consensus]
    text = "".join(seq)
    genome = write_fasta(tmp / "g.fa", {"chr1": text})
    repo = tmp / "models"
    write_model(repo, name="m", net=TinyCNN.random(3, seed=5, kernel=7), length=L)
    calibrate_model(repo / "m" / "1", genome, n=300)
    config = ServerConfig(
        model_repo=repo, genome=genome, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, warmup_batch_sizes=(1,),
    )  # fmt: skip
    with start_in_thread(config) as server:
        yield server, text, tmp


def _window(seq: str, pos: int) -> str:
    start = pos - 1 - C
    return seq[start : start + L]


def _pairs_ism(stub: Any, background: str, positions: range, pos: int) -> np.ndarray:
    """ISM computed independently: every mutant window vs its background, via ScoreSequences."""
    pairs, where = [], []
    for i, p in enumerate(positions):
        idx = C + (p - pos)
        for b, base in enumerate("ACGT"):
            if base != background[idx]:
                mutant = background[:idx] + base + background[idx + 1 :]
                pairs.append(pb.SequencePair(id=f"{p}{base}", ref=background, alt=mutant))
                where.append((i, b))
    resp = stub.ScoreSequences(
        pb.ScoreSequencesRequest(
            pairs=pairs, options=pb.ScoreOptions(scores=[pb.SCORE_KIND_DIFF], packed=True)
        )
    )
    diff = np.frombuffer(resp.packed.diff, "<f4").reshape(len(pairs), -1)
    out = np.zeros((len(positions), 4, diff.shape[1]), dtype=np.float32)
    for row, (i, b) in enumerate(where):
        out[i, b] = diff[row]
    return out


def test_ism_equals_mutant_pairs_through_score_sequences(setup: tuple[Any, str, Path]) -> None:
    server, seq, _ = setup
    pos = SITE + 5
    ref = seq[pos - 1]
    alt = "A" if ref != "A" else "G"
    channel = grpc.insecure_channel(server.target)
    response = explain_variant(channel, parse_variant(f"chr1:{pos}:{ref}:{alt}"))
    assert response.status.code == pb.OK
    assert list(response.positions) == list(range(pos - W, pos + W + 1))
    assert response.bases == "ACGT"
    f = len(response.features)
    ref_ism = np.frombuffer(response.ref_ism, "<f4").reshape(2 * W + 1, 4, f)
    alt_ism = np.frombuffer(response.alt_ism, "<f4").reshape(2 * W + 1, 4, f)
    stub = pb_grpc.VariantEffectServiceStub(channel)
    ref_bg = _window(seq, pos)
    alt_bg = ref_bg[:C] + alt + ref_bg[C + 1 :]
    positions = range(pos - W, pos + W + 1)
    np.testing.assert_allclose(ref_ism, _pairs_ism(stub, ref_bg, positions, pos), atol=2e-7)
    np.testing.assert_allclose(alt_ism, _pairs_ism(stub, alt_bg, positions, pos), atol=2e-7)
    assert np.abs(ref_ism).max() > 1e-4  # a real signal, not zeros
    # the background base's own entry is 0; on the alt background the variant's ALT is it
    assert ref_ism[W, "ACGT".index(ref)].tolist() == [0.0] * f
    assert alt_ism[W, "ACGT".index(alt)].tolist() == [0.0] * f
    # ref_ism at the variant for the ALT base is the variant's own diff
    np.testing.assert_allclose(ref_ism[W, "ACGT".index(alt)], response.score.diff, atol=2e-7)
    assert len(response.score.quantile) == f
    assert response.manifest.calibration.startswith("300 random")
    # the backgrounds' own bases at the P positions, read from the genome independently
    assert response.ref_bases == seq[pos - 1 - W : pos + W]
    assert response.alt_bases == seq[pos - 1 - W : pos - 1] + alt + seq[pos : pos + W]
    doc = explanation_json(response)
    assert (doc["ref_bases"], doc["alt_bases"]) == (response.ref_bases, response.alt_bases)


def test_features_and_reverse_complement(setup: tuple[Any, str, Path]) -> None:
    server, seq, _ = setup
    pos = 700
    ref = seq[pos - 1]
    alt = "C" if ref != "C" else "T"
    channel = grpc.insecure_channel(server.target)
    v = parse_variant(f"chr1:{pos}:{ref}:{alt}")
    full = explain_variant(channel, v, window=5, reverse_complement=True)
    one = explain_variant(channel, v, window=5, reverse_complement=True, features=["feat2"])
    assert list(one.features) == ["feat2"]
    a = np.frombuffer(full.ref_ism, "<f4").reshape(11, 4, 3)[:, :, 2]
    b = np.frombuffer(one.ref_ism, "<f4").reshape(11, 4, 1)[:, :, 0]
    np.testing.assert_allclose(a, b, atol=1e-7)
    plain = explain_variant(channel, v, window=5)
    assert not np.allclose(np.frombuffer(plain.ref_ism, "<f4"), np.frombuffer(full.ref_ism, "<f4"))


def test_motif_call_names_the_planted_site(setup: tuple[Any, str, Path]) -> None:
    server, seq, _ = setup
    cebpb = next(m for m in load_motifs() if m.name == "CEBPB")
    # break the consensus at its most informative position
    j = int(cebpb.information.argmax())
    pos = SITE + j
    ref = seq[pos - 1]
    alt = next(b for b in "ACGT" if b != ref)
    response = explain_variant(
        grpc.insecure_channel(server.target), parse_variant(f"chr1:{pos}:{ref}:{alt}")
    )
    top = response.motifs[0]
    assert "CEBP" in top.name.upper()
    assert top.ref_score > top.alt_score + 3
    assert top.position <= pos < top.position + cebpb.width + 2
    # the width is the called matrix's own length, and the match it spans holds the variant
    called = {m.id: m for m in load_motifs()}.get(top.jaspar_id)
    if called is not None:  # the shipped database (no pyjaspar)
        assert top.width == called.width
    assert top.width >= 6
    assert top.position <= pos <= top.position + top.width - 1
    no = explain_variant(
        grpc.insecure_channel(server.target), parse_variant(f"chr1:{pos}:{ref}:{alt}"),
        no_motifs=True,
    )  # fmt: skip
    assert len(no.motifs) == 0


def test_motif_calls_are_weighted_by_the_ism_of_the_variants_top_feature(
    setup: tuple[Any, str, Path],
) -> None:
    """model_importance of each call recomputed from the response's own ISM, the calls in
    order of relative_change * model_importance, and the feature used is the max-quantile one."""
    server, seq, _ = setup
    cebpb = next(m for m in load_motifs() if m.name == "CEBPB")
    pos = SITE + int(cebpb.information.argmax())
    ref = seq[pos - 1]
    alt = next(b for b in "ACGT" if b != ref)
    response = explain_variant(
        grpc.insecure_channel(server.target), parse_variant(f"chr1:{pos}:{ref}:{alt}"),
        top_motifs=8,
    )  # fmt: skip
    assert response.motif_feature == response.score.max_quantile_feature
    f = list(response.features).index(response.motif_feature)
    shape = (len(response.positions), 4, len(response.features))
    ref_imp = np.abs(np.frombuffer(response.ref_ism, "<f4").reshape(shape)[:, :, f]).max(axis=1)
    alt_imp = np.abs(np.frombuffer(response.alt_ism, "<f4").reshape(shape)[:, :, f]).max(axis=1)
    top = max(ref_imp.max(), alt_imp.max())
    assert top > 0
    positions = np.array(response.positions)
    assert len(response.motifs) >= 2
    for m in response.motifs:
        imp = ref_imp if m.ref_score >= m.alt_score else alt_imp  # an SNV: same coordinates
        span = (positions >= m.position) & (positions < m.position + m.width)
        expect = imp[span].mean() / top if span.any() else 0.0
        assert m.model_importance == pytest.approx(expect, abs=1e-4)
        assert 0 <= m.model_importance <= 1
        assert 0 < m.relative_change <= 1
    keys = [m.relative_change * m.model_importance for m in response.motifs]
    assert keys == sorted(keys, reverse=True)
    doc = explanation_json(response)
    assert doc["motif_feature"] == response.motif_feature
    assert doc["motifs"][0]["model_importance"] == round(response.motifs[0].model_importance, 4)
    assert doc["motifs"][0]["relative_change"] == round(response.motifs[0].relative_change, 4)


def test_bad_requests(setup: tuple[Any, str, Path]) -> None:
    server, seq, _ = setup
    channel = grpc.insecure_channel(server.target)
    wrong = "A" if seq[499] != "A" else "C"
    mismatch = explain_variant(
        channel, parse_variant(f"chr1:500:{wrong}:G" if wrong != "G" else f"chr1:500:{wrong}:T")
    )
    assert mismatch.status.code == pb.REF_MISMATCH
    assert mismatch.ref_ism == b"\x00" * 0 or not np.frombuffer(mismatch.ref_ism, "<f4").any()
    with pytest.raises(ExplainError, match="INVALID_ARGUMENT.*window 40"):
        explain_variant(channel, parse_variant(f"chr1:500:{seq[499]}:N"), window=40)
    with pytest.raises(ExplainError, match="not CHROM:POS:REF:ALT"):
        parse_variant("chr1-500-A-G")


def test_cli_writes_json_the_report_reads_and_a_plot(setup: tuple[Any, str, Path]) -> None:
    from varfx.client._report_explain import load_explanation

    server, seq, tmp = setup
    pos = SITE + 3
    ref = seq[pos - 1]
    alt = "T" if ref != "T" else "G"
    out = tmp / "out.json"
    args = ["explain", "--server", server.target, "--variant", f"chr1:{pos}:{ref}:{alt}"]
    args += ["--window", "10", "-o", str(out)]
    has_plot = importlib.util.find_spec("logomaker") is not None
    if has_plot:
        args += ["--plot", str(tmp / "out.png")]
    assert varfx_main(args) == 0
    doc = json.loads(out.read_text())
    for key in ("variant", "positions", "bases", "features", "ref_ism", "alt_ism", "motifs"):
        assert key in doc
    assert doc["variant"] == f"chr1:{pos}:{ref}:{alt}"
    assert np.asarray(doc["ref_ism"]).shape == (21, 4, 3)
    assert doc["motifs"]
    assert all(m["width"] >= 6 for m in doc["motifs"])
    e = load_explanation(out)
    assert e.pos == pos
    assert e.alt_ism is not None
    if has_plot:
        png = (tmp / "out.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 5000


def test_explanation_json_shapes() -> None:
    response = pb.ExplainVariantResponse(
        variant=pb.Variant(chrom="c", pos=5, ref="A", alt="G"), positions=[4, 5, 6],
        bases="ACGT", features=["x", "y"],
        ref_ism=np.arange(24, dtype="<f4").tobytes(), alt_ism=np.zeros(24, "<f4").tobytes(),
    )  # fmt: skip
    doc = explanation_json(response)
    assert doc["ref_ism"][2][3][1] == 23.0
    response.ref_ism = np.zeros(5, "<f4").tobytes()
    with pytest.raises(ExplainError, match="ISM of 5 values"):
        explanation_json(response)


def test_deletion_maps_positions_after_it_onto_the_alt_window(setup: tuple[Any, str, Path]) -> None:
    server, seq, _ = setup
    pos = 1500
    ref, alt = seq[pos - 1 : pos + 2], seq[pos - 1]  # a 2-base deletion after the anchor
    channel = grpc.insecure_channel(server.target)
    response = explain_variant(channel, parse_variant(f"chr1:{pos}:{ref}:{alt}"), window=6)
    assert response.status.code == pb.OK
    alt_ism = np.frombuffer(response.alt_ism, "<f4").reshape(13, 4, 3)
    assert not alt_ism[7:9].any()  # the two deleted genome bases are not in the alt window
    assert response.ref_bases == seq[pos - 1 - 6 : pos + 6]
    assert response.alt_bases == seq[pos - 1 - 6 : pos] + "--" + seq[pos + 2 : pos + 6]
    # the alt window: shared left flank, then the genome after the deletion
    start = pos - 1 - C
    alt_bg = (seq[start:pos] + seq[pos + 2 :])[:L]
    stub = pb_grpc.VariantEffectServiceStub(channel)
    for offset in (-6, 0, 3, 6):  # genome pos + offset sits at window index C + offset (- 2 after)
        idx = C + offset - (2 if offset >= 3 else 0)
        base = next(b for b in "ACGT" if b != alt_bg[idx])
        mutant = alt_bg[:idx] + base + alt_bg[idx + 1 :]
        resp = stub.ScoreSequences(
            pb.ScoreSequencesRequest(pairs=[pb.SequencePair(ref=alt_bg, alt=mutant)])
        )
        np.testing.assert_allclose(
            alt_ism[6 + offset, "ACGT".index(base)], resp.scores[0].diff, atol=2e-7
        )
