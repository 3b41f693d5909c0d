"""Every metric the dashboard and the rule files use exists on a live varfx server's /metrics,
and every recording-rule name they use is defined."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy._stack import DASHBOARD, RULE_FILES, score_variants, scrape, snvs, start_server

_METRIC = re.compile(r"(?<![\w:])((?:varfx|process|python)_[a-z0-9_]+)(?![\w:(])")
_RECORDED = re.compile(r"(?<![\w:])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)(?![\w:])")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
}


def _expressions() -> dict[str, list[str]]:
    """PromQL expressions by source file."""
    out: dict[str, list[str]] = {}
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        out[path.name] = [r["expr"] for g in doc["groups"] for r in g["rules"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    out.setdefault(DASHBOARD.name, []).append(value)
                elif key == "query" and isinstance(value, dict | str):
                    walk({"expr": value["query"]} if isinstance(value, dict) else {"expr": value})
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return out


def _exposed_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def test_names_in_rules_and_dashboard_exist_on_the_server(
    model_repo: Path, genome_fa: Path, genome_seqs: dict[str, str]
) -> None:
    server = start_server(model_repo, genome_fa)
    try:
        # Traffic first, so every labelled series (variants, requests, histograms) has samples.
        resp = score_variants(server.target, snvs(genome_seqs["chr1"], "chr1", range(50, 54)))
        assert len(resp.scores) == 4
        exposed = _exposed_names(scrape(server.metrics_port))
    finally:
        server.stop()
    assert "varfx_variants_total" in exposed
    assert "varfx_gpu_memory_used_bytes" in exposed  # declared, no samples on CPU
    used: dict[str, set[str]] = {}
    recorded_used: set[str] = set()
    for source, exprs in _expressions().items():
        for expr in exprs:
            used.setdefault(source, set()).update(_METRIC.findall(expr))
            recorded_used.update(_RECORDED.findall(expr))
    assert len(used[DASHBOARD.name]) >= 8
    for source, names in used.items():
        missing = sorted(names - exposed)
        assert not missing, f"{source} uses metrics the server does not expose: {missing}"
    recording = yaml.safe_load(RULE_FILES[0].read_text())
    defined = {r["record"] for g in recording["groups"] for r in g["rules"]}
    assert recorded_used, "dashboard and alerts use recording rules"
    assert not sorted(recorded_used - defined), sorted(recorded_used - defined)


def test_name_extraction_catches_a_typo() -> None:
    """Guard for the check above: a misspelt metric is found, recorded names are not metrics."""
    expr = "sum(rate(varfx_variantz_total[1m])) / job_model:varfx_variants:rate1m"
    assert _METRIC.findall(expr) == ["varfx_variantz_total"]
    assert _RECORDED.findall(expr) == ["job_model:varfx_variants:rate1m"]
