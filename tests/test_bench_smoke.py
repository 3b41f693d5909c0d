"""Smoke test of the benchmark harness: ``bench.run`` end to end on a tiny model with tiny
windows. It checks the report's structure and the analytic FLOP count, never speeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from bench import run
from bench._flops import model_macs
from bench._load import stable_rate
from bench._nets import build_network, export_onnx


def test_macs_match_a_hand_count(tmp_path: Path) -> None:
    length, features = 200, 4
    module, _ = build_network("small", length, features)
    path = export_onnx(module, tmp_path, "tiny", length, features)
    # conv 4->64 k9 'same' over L, max-pool 4, conv 64->64 k9 'same' over L/4, linear 64->F
    expected = 64 * length * 4 * 9 + 64 * (length // 4) * 64 * 9 + 64 * features
    assert model_macs(path) == expected


def test_stable_rate_needs_three_windows_within_ten_percent() -> None:
    assert not stable_rate([100.0, 100.0])
    assert stable_rate([50.0, 100.0, 105.0, 109.0])
    assert not stable_rate([100.0, 105.0, 111.0])


def test_paired_rounds_interleave_and_pair_ratios() -> None:
    calls: list[str] = []
    speed = {"a": 100.0, "b": 50.0, "c": 25.0}
    drift = iter([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.5, 1.5, 1.5])  # the machine speeds up and down

    def measure(target: str) -> dict[str, float]:
        calls.append(target)
        return {"variants_per_s": speed[target] * next(drift)}

    out = run.paired_rounds(measure, {"A": "a", "B": "b", "C": "c"}, 3)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    # drift cancels within a round: every paired ratio is exact
    assert out["over_first"]["B"]["rounds"] == [0.5, 0.5, 0.5]
    assert out["over_first"]["C"]["median"] == 0.25
    assert out["median"]["A"]["variants_per_s"] == 150.0  # 100, 200, 150 -> median round


@pytest.mark.timeout(240)
def test_harness_runs_end_to_end(tmp_path: Path) -> None:
    out, docs = tmp_path / "out", tmp_path / "docs" / "benchmarks.md"
    argv = [
        "--device", "cpu", "--models", "tiny", "--quick", "--out", str(out), "--docs", str(docs),
        "--concurrency", "2", "--batch-sizes", "2,32", "--window-s", "0.1", "--cap-s", "0.3",
        "--score-variants", "300", "--genome-size", "60000", "--max-batch", "32",
    ]  # fmt: skip
    assert run.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["logical_cores"] >= 1
    assert results["machine"]["versions"]["onnxruntime"] != "absent"
    res = results["models"]["tiny"]
    assert (res["length"], res["features"], res["device"]) == (200, 4, "cpu")
    assert res["gflop_per_variant"] == pytest.approx(4 * res["macs_per_window"] / 1e9)
    assert set(res["bare_ort"]["sweep"]) == {"2", "32"}
    assert res["bare_ort"]["best_batch_windows"] in (2, 32)
    for mode in ("unary", "stream"):
        r = res["server"][mode]["2"]
        assert r["variants_per_s"] > 0
        assert r["errors"] == 0
        assert len(r["windows"]) >= 3
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    for key in ("batch1", "metrics_off"):
        assert res[key]["variants_per_s"] > 0
        assert len(res["ab"]["rounds"][key]) == 2  # --quick: two interleaved rounds
        assert res[key] in res["ab"]["rounds"][key]
    assert res["dedupe"]["multiallelic"]["variants_per_s"] > 0
    assert res["torch_peer"]["per_s"] > 0
    if res["score"] is not None:  # `varfx score` exists in this checkout
        assert res["score"]["rows_out"] == res["score"]["variants"]  # annotated VCF
        assert res["score"]["tsv"]["rows_out"] == res["score"]["variants"]
    ratios = res["ratios"]
    for key in ("server_over_bare_ort", "batching_gain", "p99_over_p50", "dedupe_gain"):
        assert ratios[key] > 0
    assert ratios["varfx_over_torch"] > 0
    # the same random network with 2-D and with 1-D conv layers, bare ORT in paired rounds
    assert {k: len(v) for k, v in res["conv_layout"]["rounds"].items()} == {
        "conv2d": 2,
        "conv1d": 2,
    }
    assert ratios["conv2d_gain"] > 0

    table = (out / "results.md").read_text()
    assert "| tiny | 200 / 4 |" in table
    assert "dynamic batching gain" in table
    assert "2-D / 1-D conv layers" in table
    for png in ("throughput.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (docs.parent / f"benchmarks_{png}").exists()
    assert json.loads((docs.parent / "benchmarks_results.json").read_text()) == results
    page = docs.read_text()
    assert "## Machine" in page
    assert results["machine"]["cpu"] in page
