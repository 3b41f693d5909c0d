"""The server pairs each model with the genome it was trained on, refuses contradictions at
start-up naming both sides, and tells callers (ListModels, manifest) what it serves.

Real FASTAs from ../shared/data/real where present: GRCh37 chr20, the GRCh38 chr1 fragment, and
a simulated genome (``varfx simulate``'s declaration: family varfx-sim)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import REAL, write_fasta
from tests.onnx_models import write_model
from varfx.core.fasta_identity import fasta_identity, write_declaration
from varfx.core.genomes import GenomeIdentity
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc
from varfx.server import ServerConfig, start_in_thread
from varfx.server.genome_identity import GenomePairingError, manifest_for

ROOT = Path(__file__).resolve().parents[2]
CHR20 = REAL / "hg19_ref_debian" / "vt-examples.20.fa.gz"
HG38 = REAL / "hg38_chr1_1mb" / "hg38_1m.fa.gz"
real = pytest.mark.skipif(
    not (CHR20.exists() and HG38.exists()), reason=f"shared data not present: {REAL}"
)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _grch37() -> dict[str, Any]:
    """The committed brain-hg19 model's training genome record (GRCh37, 1-22 X Y)."""
    side = json.loads((ROOT / "models" / "brain-hg19" / "2" / "model.json").read_text())
    return side["genome"]  # type: ignore[no-any-return]


def _model(
    repo: Path, name: str, *, assembly: str, genome: dict[str, Any] | None = None, **extra: Any
) -> Path:
    path = write_model(repo, name=name, length=20, assembly=assembly)
    side: dict[str, Any] = dict(extra)
    if genome is not None:
        side["genome"] = genome
    if side:
        (path.parent / "model.json").write_text(json.dumps(side))
    return path


def _config(repo: Path, **kw: Any) -> ServerConfig:
    return ServerConfig(
        model_repo=repo, host="127.0.0.1", port=0, metrics_port=-1, warmup_batch_sizes=(2,), **kw
    )


def _sim_genome(path: Path, seed: int, n: int = 3, length: int = 5000) -> Path:
    import random

    rng = random.Random(seed)
    fa = write_fasta(
        path, {f"chr{i + 1}": "".join(rng.choice("ACGT") for _ in range(length)) for i in range(n)}
    )
    write_declaration(fa, assembly=f"varfx-sim-seed{seed}", family="varfx-sim")
    return fa


def _list(srv: Any) -> dict[str, pb.ModelInfo]:
    stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
    return {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}


def _refused(config: ServerConfig) -> str:
    with pytest.raises(GenomePairingError) as err:
        start_in_thread(config)
    return str(err.value)


@real
def test_grch37_model_on_the_grch38_fragment_is_refused_naming_both_sides(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "b37", assembly="GRCh37", genome=_grch37())
    msg = _refused(_config(tmp_path / "repo", genomes={"GRCh37": HG38}))
    assert "contig 'chr1' (= '1')" in msg
    assert "1,000,000 bp in genome hg38_1m.fa.gz" in msg
    assert "249,250,621 bp in the training genome of model 'b37'" in msg
    assert "--allow-genome-mismatch" in msg
    # the same through --genome (the default genome): the only model refused it
    msg = _refused(_config(tmp_path / "repo", genome=HG38))
    assert "--genome" in msg
    assert "none of the served models" in msg
    assert "1,000,000 bp" in msg


@real
def test_grch37_model_on_grch37_chr20_is_served_with_its_identity(tmp_path: Path) -> None:
    onnx = _model(tmp_path / "repo", "b37", assembly="GRCh37", genome=_grch37())
    with start_in_thread(_config(tmp_path / "repo", genomes={"hg19": CHR20})) as srv:
        info = _list(srv)["b37"]
        model = srv.handle.models["b37"]  # type: ignore[union-attr]
        manifest = manifest_for(model, pb.ScoreOptions(reverse_complement=True))
    assert info.sha256 == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert info.genome.assembly == "GRCh37"
    assert [(c.name, c.length, c.md5) for c in info.genome.contigs] == [
        ("20", 63_025_520, "0dec9660ec1efaaf33281c0d5ea2560f")
    ]
    assert info.genome.digest == fasta_identity(CHR20).digest
    assert info.training_genome.assembly == "GRCh37"
    assert len(info.training_genome.contigs) == 24
    assert not info.genome_mismatch_allowed
    assert (manifest.model, manifest.model_sha256, manifest.assembly) == (
        "b37",
        info.sha256,
        "GRCh37",
    )
    assert manifest.genome_digest == info.genome.digest
    assert manifest.reverse_complement
    assert manifest.ref_policy == pb.REF_POLICY_STRICT
    assert manifest.window_length == 20
    assert manifest.indel_normalization == "left-align"
    assert not manifest.genome_mismatch_allowed


@real
def test_grch37_model_on_a_simulated_genome_is_refused(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "b37", assembly="GRCh37", genome=_grch37())
    sim = _sim_genome(tmp_path / "sim.fa", seed=2)
    msg = _refused(_config(tmp_path / "repo", genome=sim))
    assert "genome sim.fa is assembly 'varfx-sim-seed2'" in msg
    assert "the training genome of model 'b37' is 'GRCh37'" in msg
    # without a declaration, the contig lengths give it away
    plain = write_fasta(tmp_path / "plain.fa", {"chr1": "ACGT" * 100})
    assert "contig 'chr1' (= '1') is 400 bp" in _refused(
        _config(tmp_path / "repo", genomes={"GRCh37": plain})
    )


@real
def test_allow_genome_mismatch_serves_and_says_so(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "b37", assembly="GRCh37", genome=_grch37())
    config = _config(tmp_path / "repo", genomes={"GRCh37": HG38}, allow_genome_mismatch=True)
    with start_in_thread(config) as srv:
        info = _list(srv)["b37"]
        manifest = manifest_for(srv.handle.models["b37"])  # type: ignore[union-attr]
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        r = stub.ScoreVariants(
            pb.ScoreVariantsRequest(
                variants=[pb.Variant(chrom="chr1", pos=20001, ref="N", alt="A")]
            )
        )
    assert info.genome_mismatch_allowed
    assert manifest.genome_mismatch_allowed
    assert info.genome.contigs[0].length == 1_000_000
    assert len(r.scores) == 1  # scored (or a status) on the genome it was told to use


def test_genomes_key_without_a_model_is_an_error(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "m38", assembly="GRCh38")
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50})
    msg = _refused(_config(tmp_path / "repo", genomes={"GRCh38": fa, "mm10": fa}))
    assert "--genomes key 'mm10' is the assembly of no served model" in msg
    assert "m38 (GRCh38)" in msg


def test_simulated_family_accepts_any_seed_and_demo_skips_the_grch37_model(tmp_path: Path) -> None:
    trained_on = fasta_identity(_sim_genome(tmp_path / "train.fa", seed=0, n=4, length=6000))
    family = GenomeIdentity("varfx-sim-large-seed0", trained_on.contigs, "varfx-sim").to_json()
    _model(tmp_path / "repo", "sim", assembly="varfx-sim-large-seed0", genome=family)
    _model(tmp_path / "repo", "b37", assembly="GRCh37", genome=_grch37())
    demo = _sim_genome(tmp_path / "demo.fa", seed=7)
    with start_in_thread(_config(tmp_path / "repo", genome=demo)) as srv:
        infos = _list(srv)
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(srv.target))
        ok = stub.ScoreVariants(
            pb.ScoreVariantsRequest(
                model="sim", variants=[pb.Variant(chrom="chr1", pos=30, ref="N", alt="A")]
            )
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.ScoreVariants(
                pb.ScoreVariantsRequest(
                    model="b37", variants=[pb.Variant(chrom="chr1", pos=30, ref="A", alt="G")]
                )
            )
    assert infos["sim"].genome.assembly == "varfx-sim-seed7"
    assert infos["sim"].genome.digest == fasta_identity(demo).digest != trained_on.digest
    assert not infos["sim"].genome_mismatch_allowed
    assert len(ok.scores) == 1
    assert not infos["b37"].genome.contigs
    assert infos["b37"].training_genome.assembly == "GRCh37"
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "GRCh37" in (err.value.details() or "")
    assert "varfx-sim-seed7" in (err.value.details() or "")


def test_third_party_model_without_assembly_takes_the_explicit_genome(tmp_path: Path) -> None:
    _model(tmp_path / "repo", "anon", assembly="")
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50})
    with start_in_thread(_config(tmp_path / "repo", genome=fa)) as srv:
        info = _list(srv)["anon"]
    assert info.genome.contigs[0].name == "chr1"
    assert not info.training_genome.assembly
    with start_in_thread(_config(tmp_path / "repo")) as srv:
        assert not _list(srv)["anon"].genome.contigs


_HOST_PATH = re.compile(r"""["'\s=](/|~/|\.\./)[^"'\s]*""")


def test_metadata_json_carries_no_host_path(tmp_path: Path) -> None:
    prov = {
        "varfx_version": "0.1.0",
        "git_commit": "abc",
        "train_command": "varfx train --genome /data/x.fa --out runs/a",
        "run_dir": "/home/me/runs/a",
        "data": {"genome": "/data/x.fa", "peaks": {"/data/p.bed": "sha"}},
    }
    _model(tmp_path / "repo", "m", assembly="test", provenance=prov, note="see /etc/passwd")
    repo_models = [p.name for p in (ROOT / "models").iterdir() if p.is_dir()]
    for repo in (tmp_path / "repo", ROOT / "models"):
        with start_in_thread(_config(repo)) as srv:
            infos = _list(srv)
        for info in infos.values():
            text = info.metadata_json
            assert not _HOST_PATH.search(text), (info.name, _HOST_PATH.search(text))
            assert "command" not in text
            assert "run_dir" not in text
            meta = json.loads(text)
            assert meta["features"] == list(info.features)
            assert "varfx_version" in meta.get("provenance", {}) or info.name != "m"
    assert set(infos) == set(repo_models)
    # the file keeps them
    assert "run_dir" in (tmp_path / "repo" / "m" / "1" / "model.json").read_text()


def test_varfx_serve_refuses_in_one_line_and_every_source_sets_the_override(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    from varfx.server.config import load_config

    _model(tmp_path / "repo", "m38", assembly="GRCh38")
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50})
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = subprocess.run(
        [sys.executable, "-m", "varfx", "serve", "--model-repo", str(tmp_path / "repo"),
         "--genomes", f"mm10={fa}", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode != 0
    assert "varfx serve: cannot start: --genomes key 'mm10'" in run.stderr
    assert "Traceback" not in run.stderr
    toml = tmp_path / "c.toml"
    toml.write_text("allow_genome_mismatch = true\n")
    assert load_config(config_file=toml, environ={}).allow_genome_mismatch
    assert load_config(environ={"VARFX_ALLOW_GENOME_MISMATCH": "1"}).allow_genome_mismatch
    assert load_config({"allow_genome_mismatch": True}, environ={}).allow_genome_mismatch
    assert not load_config(environ={}).allow_genome_mismatch
