"""Shared fixtures: real genomes written to tmp dirs, real ONNX models, a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL = SHARED / "data" / "real"


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def write_fasta(path: Path, contigs: dict[str, str], *, bgzip: bool = False) -> Path:
    """Write a FASTA (60 columns) and index it with pysam; bgzip it when asked."""
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), 60):
                fh.write(seq[i : i + 60] + "\n")
    if bgzip:
        pysam.tabix_compress(str(path), str(path) + ".gz", force=True)
        path = Path(str(path) + ".gz")
    pysam.faidx(str(path))
    return path


def random_seq(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), n))


@pytest.fixture(scope="session")
def genome_seqs() -> dict[str, str]:
    return {"chr1": random_seq(2000, 1), "chr2": random_seq(300, 2), "MT": random_seq(200, 3)}


@pytest.fixture(scope="session")
def genome_fa(tmp_path_factory: pytest.TempPathFactory, genome_seqs: dict[str, str]) -> Path:
    return write_fasta(tmp_path_factory.mktemp("genome") / "genome.fa", genome_seqs)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.onnx_models import TinyCNN, write_model

    repo = tmp_path_factory.mktemp("models")
    net = TinyCNN.random(4, seed=7)
    write_model(repo, name="tok", net=net, length=20)
    write_model(repo, name="agct", net=net, length=20, input_kind="onehot", alphabet="AGCT")
    return repo


@pytest.fixture(scope="session")
def server(model_repo: Path, genome_fa: Path) -> Iterator[object]:
    from varfx.server import ServerConfig, start_in_thread

    config = ServerConfig(
        model_repo=model_repo,
        genome=genome_fa,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        metrics_host="127.0.0.1",
        max_delay_ms=1.0,
        max_batch=64,
        default_model="tok",
        warmup_batch_sizes=(1, 64),
        # two full passes: tests here count windows the reference cache saves; with local
        # recomputation an SNV site runs its ref again (tests/server/test_local_recompute.py)
        local_recompute="off",
    )
    with start_in_thread(config) as running:
        yield running


def eventually(read: Any, want: Any, timeout: float = 5.0) -> Any:
    """``read()`` once it returns ``want`` (or the last value after ``timeout`` seconds).

    Call metrics are recorded when a call is done on the server, just after the client has its
    answer, so a test that reads them right away polls briefly."""
    import time

    deadline = time.monotonic() + timeout
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value
