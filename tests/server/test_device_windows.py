"""Windows built by the gather graph (server/device_windows.py) against the host-built windows of
server/windows.py, on ONNX Runtime's CPU provider: a simulated genome, a hand-made FASTA with
contig edges and N runs, and the real GRCh37 chr20 where present."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_seq, shared_path, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.core.tokens import reverse_complement
from varfx.core.variants import VariantBatch
from varfx.server.device_windows import DeviceWindows, DeviceWindowsError, gather_graph
from varfx.server.genome import Genome
from varfx.server.repository import scan_repository
from varfx.server.runtime import ModelRunner
from varfx.server.windows import build_windows

_BASES = np.array(list("ACGT"))


def _snvs(
    genome: Genome, contig: str, pos: np.ndarray, seed: int
) -> tuple[VariantBatch, np.ndarray]:
    """A batch of SNVs at ``pos`` with the genome's REF (positions on N dropped) and random ALTs."""
    refs = [genome.fetch(contig, int(p) - 1, int(p)).decode() for p in pos]
    keep = np.array([r in "ACGT" for r in refs])
    pos, refs = pos[keep], [r for r, k in zip(refs, keep, strict=True) if k]
    rng = np.random.default_rng(seed)
    alts = [str(_BASES[("ACGT".index(r) + rng.integers(1, 4)) % 4]) for r in refs]
    batch = VariantBatch.from_columns([contig] * len(pos), pos, refs, alts)
    return batch, np.array(["ACGT".index(a) for a in alts], dtype=np.uint8)


def _assert_same_as_host(genome: Genome, contig: str, pos: np.ndarray, length: int) -> int:
    dw = DeviceWindows(genome, length, contigs=[contig])
    batch, alt_tok = _snvs(genome, contig, pos, seed=len(pos))
    host = build_windows(genome, batch, length)
    assert (host.status == 0).all()  # every SNV on the fast path
    assert host.both is not None
    got = dw.windows(dw.snv_rows(contig, batch.pos, alt_tok))
    np.testing.assert_array_equal(got, host.both)
    rc = dw.windows(dw.snv_rows(contig, batch.pos, alt_tok, rc=True))
    np.testing.assert_array_equal(rc, reverse_complement(host.both))
    return len(batch)


def test_edges_and_n_runs_match_the_host(tmp_path: Path) -> None:
    seq = random_seq(900, 5)
    seq = seq[:300] + "N" * 40 + seq[340:]  # an assembly gap
    fasta = write_fasta(
        tmp_path / "g.fa", {"chrA": seq, "chrShort": random_seq(37, 6), "chrB": random_seq(500, 7)}
    )
    with Genome(fasta) as genome:
        edges = np.array([1, 2, 3, 49, 50, 51, 280, 299, 345, 850, 898, 899, 900])
        assert _assert_same_as_host(genome, "chrA", edges, 100) >= 10
        # a contig shorter than the window: N on both sides of every window
        assert _assert_same_as_host(genome, "chrShort", np.arange(1, 38), 100) == 37
        every = np.arange(1, 501)
        assert _assert_same_as_host(genome, "chrB", every, 64) == 500


def test_simulated_genome_matches_the_host(tmp_path: Path) -> None:
    from varfx.training.simulate import SIZES, simulate

    sim = simulate(
        tmp_path / "sim", seed=3, config=dataclasses.replace(SIZES["small"], n_variants=10)
    )
    with Genome(sim.paths.genome) as genome:
        rng = np.random.default_rng(0)
        total = 0
        for contig, size in genome.contigs.items():
            pos = np.concatenate([rng.integers(1, size + 1, 300), [1, size, size - 1]])
            total += _assert_same_as_host(genome, contig, pos, 600)
        assert total > 500


def test_real_chr20_matches_the_host() -> None:
    fasta = shared_path("data", "real", "hg19_ref_debian", "vt-examples.20.fa.gz")
    with Genome(fasta) as genome:
        size = genome.contigs["20"]
        rng = np.random.default_rng(20)
        pos = np.concatenate([rng.integers(1, size + 1, 2000), [1, 2, 500, size - 1, size]])
        assert _assert_same_as_host(genome, "20", pos, 1000) > 1000


def test_rows_keep_order_and_mix_strands(genome_fa: Path) -> None:
    with Genome(genome_fa) as genome:
        dw = DeviceWindows(genome, 20)
        starts = np.array([5, -10, 1990, 100])
        rows = dw.rows_for("chr1", starts, np.array([-1, 3, 0, 19]), np.array([0, 2, 1, 3]),
                           np.array([False, True, False, True]))  # fmt: skip
        got = dw.windows(rows)
        want = genome.fetch_windows("chr1", starts, 20, tokens=True)
        want[1, 3], want[2, 0], want[3, 19] = 2, 1, 3
        want[[1, 3]] = reverse_complement(want[[1, 3]])
        np.testing.assert_array_equal(got, want)
        assert dw.windows(dw.rows_for("chr2", np.zeros(0, np.int64))).shape == (0, 20)


def test_memory_is_bounded_and_contigs_checked(genome_fa: Path) -> None:
    with Genome(genome_fa) as genome:
        dw = DeviceWindows(genome, 20, contigs=["chr2"])
        assert dw.nbytes == 300 + 2 * 20  # only the contig asked for, one N run each side
        with pytest.raises(DeviceWindowsError, match="chr1"):
            dw.rows_for("chr1", np.array([0]))
        with pytest.raises(DeviceWindowsError, match="above the cap"):
            DeviceWindows(genome, 20, max_bytes=1000)
        with pytest.raises(DeviceWindowsError, match="chrZ"):
            DeviceWindows(genome, 20, contigs=["chrZ"])


def test_runner_predicts_device_rows_like_host_windows(tmp_path: Path, genome_fa: Path) -> None:
    write_model(tmp_path / "repo", name="m", net=TinyCNN.random(3, seed=2), length=40, n_features=3)
    runner = ModelRunner(scan_repository(tmp_path / "repo")[0], "cpu")
    with Genome(genome_fa) as genome:
        runner.attach_device_windows(genome, ["chr1"], 1 << 20)
        batch, alt_tok = _snvs(genome, "chr1", np.arange(1, 2001, 7), seed=1)
        host = build_windows(genome, batch, 40)
        dw = runner.device_windows
        got = runner.predict_rows(dw.snv_rows("chr1", batch.pos, alt_tok))
        np.testing.assert_allclose(got, runner.predict(host.both), atol=1e-6)


def test_gather_graph_is_small() -> None:
    assert len(gather_graph(1000)) < 20_000  # positions + reversed index: 2 x 8 kB
