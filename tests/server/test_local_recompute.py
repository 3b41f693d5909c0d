"""Local recomputation (server/local_compute.py): alts recomputed on the reference's feature maps
give the full pass's numbers within 1e-5 for the three varfx architectures (exported by
``varfx export``) and the committed models, for SNVs at the window edges and centre, on both
strands, MNVs and ISM mutants; indels and third-party graphs run in full; the real gRPC server
gives the same scores and ISM with it on and off, and says which in ListModels."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.conftest import random_seq, write_fasta
from tests.onnx_models import write_model
from varfx.core.tokens import reverse_complement
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server.local_compute import LocalRecompute, load_local
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = [ROOT / "models/brain-hg19/2/model.onnx", ROOT / "models/sim-chromatin/1/model.onnx"]
# small versions of the three architectures (same layer kinds as the published sizes)
ARCHS = {
    "deepsea": dict(sequence_length=400, channels=(16, 24, 32), hidden=16),
    "basset": dict(sequence_length=300, channels=(16, 16, 16), hidden=16),
    "dilated": dict(sequence_length=400, channels=(16, 16, 16, 16)),
}


def export_arch(repo: Path, arch: str, tmp: Path) -> Path:
    """A random-weight network of ``arch`` (BatchNorm statistics not trivial) written by
    ``varfx export`` into ``repo/arch/1/model.onnx``."""
    from varfx.training.export import export_run
    from varfx.training.models import ModelConfig, build_model

    torch.manual_seed(3)
    cfg = ModelConfig(arch=arch, n_features=4, **ARCHS[arch])  # type: ignore[arg-type]
    net = build_model(cfg).eval()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    run = tmp / f"run-{arch}"
    run.mkdir(parents=True)
    torch.save(
        {"model_config": cfg.to_json(), "model": net.state_dict(), "features": list("abcd")},
        run / "best.pt",
    )
    (run / "summary.json").write_text(json.dumps({"assembly": "test"}))
    return export_run(run, repo, arch, command="test").path


def _runner(path: Path) -> ModelRunner:
    entry = next(e for e in scan_repository(path.parents[2], {}) if e.path == path)
    return ModelRunner(entry, "cpu", intra_op_threads=1)


def _local(runner: ModelRunner) -> LocalRecompute:
    local = load_local(
        runner.spec.path, runner.predict, name=runner.spec.name, logits=False, max_batch=16
    )
    assert local is not None, "the load check refused the local path"
    assert local.cost < 0.75
    return local


def _rows(length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference rows (N included) then SNVs at both edges, next to them and the centre, on
    both strands, MNVs of 2-5 bases and an ISM series; int64 pairs (-1: a reference row)."""
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 4, size=(4, length), dtype=np.uint8)
    refs[2, :7] = 4  # a window reaching off the contig
    refs[3] = reverse_complement(refs[0][None])[0]  # the other strand of ref 0
    rows: list[np.ndarray] = [refs]
    pairs: list[int] = [-1] * 4
    for r in range(4):
        for p in (0, 1, 2, length // 2 - 1, length // 2, length - 3, length - 2, length - 1):
            alt = refs[r].copy()
            alt[p] = (alt[p] + 1 + rng.integers(3)) % 4
            rows.append(alt[None])
            pairs.append(r)
    for w in (2, 3, 5):
        for p in (0, length // 2 - 2, length - w):
            alt = refs[1].copy()
            alt[p : p + w] = (alt[p : p + w] + 1) % 4
            rows.append(alt[None])
            pairs.append(1)
    for p in range(length // 2 - 10, length // 2 + 10):  # ISM: every base at 20 positions
        for base in range(4):
            if base != refs[0, p]:
                alt = refs[0].copy()
                alt[p] = base
                rows.append(alt[None])
                pairs.append(0)
    return np.concatenate(rows), np.array(pairs, dtype=np.int64)


def _check_equal(runner: ModelRunner, local: LocalRecompute) -> None:
    tokens, pairs = _rows(runner.spec.sequence_length, 5)
    before = local.local_rows
    got = local.predict_pairs(tokens, pairs)
    want = runner.predict(tokens)
    assert local.local_rows - before == int((pairs >= 0).sum())  # every alt was local
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # a real effect: the alts do not all predict what their references do
    assert np.abs(want[pairs >= 0] - want[pairs[pairs >= 0]]).max() > 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("local")
    return {arch: export_arch(tmp / "repo", arch, tmp) for arch in ARCHS}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_local_equals_full_for_each_architecture(exported: dict[str, Path], arch: str) -> None:
    runner = _runner(exported[arch])
    _check_equal(runner, _local(runner))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parts[-3])
def test_local_equals_full_for_the_committed_models(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    runner = _runner(path)
    _check_equal(runner, _local(runner))


def test_indels_and_unpaired_rows_run_in_full(exported: dict[str, Path]) -> None:
    runner = _runner(exported["basset"])
    local = _local(runner)
    length = runner.spec.sequence_length
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 4, size=(1, length), dtype=np.uint8)
    deletion = np.concatenate([ref[:, : length // 2], ref[:, length // 2 + 1 :], ref[:, :1]], 1)
    far = ref.copy()
    far[0, [3, length - 4]] = (far[0, [3, length - 4]] + 1) % 4  # two SNVs far apart
    tokens = np.concatenate([ref, deletion, far, far])
    pairs = np.array([-1, 0, 0, -1])
    before = (local.local_rows, local.full_rows)
    np.testing.assert_allclose(
        local.predict_pairs(tokens, pairs), runner.predict(tokens), atol=1e-6
    )
    assert (local.local_rows, local.full_rows) == (before[0], before[1] + 4)


def test_third_party_graphs_have_no_local_path(tmp_path: Path) -> None:
    onehot = write_model(tmp_path, name="onehot", input_kind="onehot", alphabet="AGCT", length=40)
    runner = _runner(onehot)
    assert load_local(onehot, runner.predict, name="onehot", logits=False, tokens=False) is None
    # a token graph whose only conv is grouped (group=2): the trunk has nothing to recompute
    import onnx
    from onnx import numpy_helper

    tok = write_model(tmp_path, name="tok", length=40)
    model = onnx.load(str(tok))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(onnx.helper.make_attribute("group", 2))
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, :2], init.name))
    path = tmp_path / "grouped" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    grouped = _runner(path)
    assert grouped.predict(np.zeros((2, 40), dtype=np.uint8)).shape == (2, 3)  # a valid graph
    assert load_local(path, grouped.predict, name="grouped", logits=False) is None


# -- through the real gRPC server -------------------------------------------------------------

L_SERVER = ARCHS["deepsea"]["sequence_length"]


@pytest.fixture(scope="module")
def servers(
    exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any, str]]:
    from varfx.server import ServerConfig, start_in_thread

    tmp = tmp_path_factory.mktemp("local-server")
    seq = random_seq(3000, 9)
    genome = write_fasta(tmp / "g.fa", {"chr1": seq})
    repo = exported["deepsea"].parents[2]
    write_model(repo, name="onehot", input_kind="onehot", alphabet="AGCT", length=40)
    base = dict(
        model_repo=repo, genome=genome, host="127.0.0.1", port=0, metrics_port=-1,
        max_delay_ms=1.0, max_batch=64, default_model="deepsea",
    )  # fmt: skip
    with (
        start_in_thread(ServerConfig(**base)) as on,  # type: ignore[arg-type]
        start_in_thread(ServerConfig(**base, local_recompute="off", ref_cache_mb=0)) as off,  # type: ignore[arg-type]
    ):
        yield on, off, seq


def _variants(seq: str) -> list[pb.Variant]:
    rng = np.random.default_rng(4)
    out = []
    for pos in [1, 2, 150, 199, 200, 201, 1500, 2999, 3000, *rng.integers(1, 3001, 30).tolist()]:
        ref = seq[pos - 1]
        out.append(
            pb.Variant(chrom="chr1", pos=pos, ref=ref, alt="ACGT"[("ACGT".index(ref) + 1) % 4])
        )
    mnv = "".join("ACGT"[("ACGT".index(b) + 1) % 4] for b in seq[999:1002])
    out.append(pb.Variant(chrom="chr1", pos=1000, ref=seq[999:1002], alt=mnv))
    out.append(pb.Variant(chrom="chr1", pos=1200, ref=seq[1199:1202], alt=seq[1199]))  # deletion
    out.append(pb.Variant(chrom="chr1", pos=1300, ref=seq[1299], alt=seq[1299] + "GT"))  # insertion
    return out


def _scores(server: Any, variants: list[pb.Variant], rc: bool) -> np.ndarray:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
    resp = stub.ScoreVariants(
        pb.ScoreVariantsRequest(
            model="deepsea", variants=variants,
            options=pb.ScoreOptions(reverse_complement=rc, scores=[pb.SCORE_KIND_REF, pb.SCORE_KIND_ALT]),
        )
    )  # fmt: skip
    assert all(s.status.code == pb.OK for s in resp.scores)
    return np.array([list(s.ref) + list(s.alt) for s in resp.scores], dtype=np.float32)


@pytest.mark.parametrize("rc", [False, True])
def test_server_scores_equal_with_local_recompute_on_and_off(
    servers: tuple[Any, Any, str], rc: bool
) -> None:
    on, off, seq = servers
    variants = _variants(seq)
    local = on.handle.models["deepsea"].local
    assert local is not None
    assert off.handle.models["deepsea"].local is None
    before = local.local_rows
    got, want = _scores(on, variants, rc), _scores(off, variants, rc)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(got[:, :4] - got[:, 4:]).max() > 1e-4
    # every SNV and the MNV were recomputed locally (both strands with rc); the indels not
    assert local.local_rows - before == (len(variants) - 2) * (2 if rc else 1)


def test_a_rescored_request_gives_the_same_bytes_with_the_reference_cache(
    servers: tuple[Any, Any, str],
) -> None:
    """The second time, every ref is in the cache; SNV/MNV sites run their ref again (the alt
    needs its feature maps), so the alts are computed the same way and the bytes are equal."""
    on, _, seq = servers
    variants = _variants(seq)[10:]
    cache = on.handle.models["deepsea"].ref_cache
    assert cache is not None
    first = _scores(on, variants, False)
    hits = cache.hits
    second = _scores(on, variants, False)
    assert first.tobytes() == second.tobytes()
    assert cache.hits > hits  # the indel sites came from the cache


def test_server_ism_equal_with_local_recompute_on_and_off(servers: tuple[Any, Any, str]) -> None:
    on, off, seq = servers
    out = []
    for server in (on, off):
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        ref = seq[1499]
        v = pb.Variant(chrom="chr1", pos=1500, ref=ref, alt="ACGT"[("ACGT".index(ref) + 2) % 4])
        resp = stub.ExplainVariant(
            pb.ExplainVariantRequest(model="deepsea", variant=v, window=50, no_motifs=True)
        )
        assert resp.status.code == pb.OK
        out.append(np.frombuffer(resp.ref_ism + resp.alt_ism, "<f4"))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5, rtol=0)
    assert np.abs(out[1]).max() > 1e-4


def test_list_models_says_which_models_recompute_locally(servers: tuple[Any, Any, str]) -> None:
    on, off, _ = servers
    for server, want in ((on, True), (off, False)):
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(server.target))
        models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert models["deepsea"].local_recompute is want
        assert models["onehot"].local_recompute is False
