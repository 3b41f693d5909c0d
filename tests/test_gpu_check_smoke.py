"""Smoke test of bench/gpu_check.py on the CPU (--device cpu --quick, the tiny model): the GPU
session's script runs end to end here, and its correctness columns hold (windows built by the
gather graph equal the host's, the fp16 graph's check passes, both precisions are served)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")  # bench/_nets.py builds the net in torch


def test_gpu_check_runs_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import gpu_check

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert (
        gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--model", "tiny"])
        == 0
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["fp16_check"]["within_bound"] is True
    assert {r["precision"] for r in report["bare_ort"].values()} == {"fp32", "fp16"}
    assert report["bare_ort"]["fp16"]["max_abs_diff_vs_cpu_fp32"] > 0
    for row in report["device_windows"].values():
        assert row["windows_equal"] is True
        assert row["max_abs_diff_device_vs_host"] == 0
    assert all(r["variants_per_s"] > 0 for r in report["varfx_score"].values())
    scored = report["varfx_score"]
    assert set(scored) == {"fp32", "auto", "auto+device_windows"}
    # the device-window run really ran on descriptions, and wrote the host run's records
    assert scored["auto+device_windows"]["genome_on_device"] is True
    assert scored["auto"]["genome_on_device"] is False
    assert scored["auto+device_windows"]["same_records_as_host_windows"] is True
    assert "fraction_of_fp16_roofline" not in report  # CPU: no roofline
