"""scripts/demo.py end to end (without the install step) on a tiny model, small simulation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pysam
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path: Path) -> None:
    from tests.onnx_models import TinyCNN, write_model

    repo = tmp_path / "models"
    repo.mkdir()
    sim = {"assembly": "varfx-sim", "family": "varfx-sim"}  # served on any simulated genome
    write_model(repo, name="sim-chromatin", net=TinyCNN.random(10, seed=1), length=100, genome=sim)
    out = tmp_path / "demo-out"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out),
         "--model-repo", str(repo), "--size", "small", "--top", "5"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "server stopped" in run.stdout
    assert "auROC" in run.stdout
    table = run.stdout.split("truth    direction\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(table) == 5
    assert all(row.split()[-2] in ("break", "create", "neutral") for row in table)
    scored = out / "scored.vcf.gz"
    assert "VARFX_MAX_ABS_DIFF" in (out / "report.html").read_text()  # varfx report's page
    with pysam.VariantFile(str(scored)) as vf:
        n_out = sum(1 for _ in vf)
    with pysam.VariantFile(str(out / "sim" / "variants.vcf.gz")) as vf:
        assert n_out == sum(1 for _ in vf)
    # a busy port is a clear error, not a hang
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        run = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out),
             "--model-repo", str(repo), "--port", str(busy)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 1
    assert f"port {busy}" in run.stderr
