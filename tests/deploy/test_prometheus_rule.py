"""deploy/k8s/base/prometheusrule.yaml: generated from the Prometheus rule files (staleness
checked), promtool-checked and unit-tested as the Prometheus Operator would load it, absolute
runbook URLs with a configurable base (scripts/gen_prometheus_rule.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._stack import PROM_DIR, REPO, RULE_FILES

SCRIPT = REPO / "scripts" / "gen_prometheus_rule.py"
RULE = REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml"


def _generate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (CI installs Debian's prometheus package via .ci/run)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def _groups(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["groups"])


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_committed_rule_is_current() -> None:
    result = _generate("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    copy = tmp_path / "rule.yaml"
    copy.write_text(RULE.read_text().replace("for: 2m", "for: 3m"))
    result = _generate("--check", "-o", str(copy))
    assert result.returncode == 1
    assert "stale" in result.stderr


def test_rule_holds_the_rule_files_groups() -> None:
    doc = yaml.safe_load(RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["name"] == "varfx"
    assert set(doc["spec"]) == {"groups"}
    source = [g for path in RULE_FILES for g in _groups(path)]
    assert doc["spec"]["groups"] == source
    names = [g["name"] for g in source]
    assert len(names) == len(set(names))
    for rule in (r for g in source for r in g["rules"]):
        assert ("record" in rule) != ("alert" in rule)
        assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}


def test_runbook_urls_are_absolute() -> None:
    bases = set()
    for groups in (_groups(RULE_FILES[1]), yaml.safe_load(RULE.read_text())["spec"]["groups"]):
        for alert in _alerts(groups):
            url = alert["annotations"]["runbook_url"]
            base, anchor = url.split("#", 1)
            assert base.startswith("https://"), url
            assert anchor == alert["alert"].lower()
            bases.add(base)
    assert len(bases) == 1
    assert bases.pop().endswith("/docs/deploy.md")


def test_promtool_accepts_and_unit_tests_the_rule(tmp_path: Path) -> None:
    """The rules as the Operator hands them to Prometheus (the PrometheusRule's spec) pass
    promtool's checks and the same unit tests as the rule files."""
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = _promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((PROM_DIR / "tests" / "rules_test.yml").read_text())
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_runbook_base_is_configurable(tmp_path: Path) -> None:
    base = "https://wiki.example.org/ops/varfx"
    out, rules = tmp_path / "rule.yaml", tmp_path / "rules"
    result = _generate("--runbook-base", base, "-o", str(out), "--rules-out", str(rules))
    assert result.returncode == 0, result.stderr
    generated = yaml.safe_load(out.read_text())["spec"]["groups"]
    alerts = _alerts(generated)
    assert alerts
    assert all(a["annotations"]["runbook_url"] == f"{base}#{a['alert'].lower()}" for a in alerts)
    # everything but the runbook URLs is the committed rule
    committed = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    for a in _alerts(committed):
        a["annotations"]["runbook_url"] = f"{base}#{a['alert'].lower()}"
    assert generated == committed
    # re-based rule files for plain Prometheus: same base, valid for promtool
    assert _alerts(_groups(rules / "alerts.yml")) == alerts
    assert _groups(rules / "recording.yml") == _groups(RULE_FILES[0])
    result = _promtool("check", "rules", str(rules / "recording.yml"), str(rules / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_runbook_base_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "rule.yaml"
    result = _generate("-o", str(out), env={"VARFX_RUNBOOK_BASE": "https://runbooks.example/x"})
    assert result.returncode == 0, result.stderr
    urls = [
        a["annotations"]["runbook_url"]
        for a in _alerts(yaml.safe_load(out.read_text())["spec"]["groups"])
    ]
    assert all(u.startswith("https://runbooks.example/x#") for u in urls)


def test_bad_base_and_unsafe_targets_are_refused(tmp_path: Path) -> None:
    result = _generate("--runbook-base", "docs/deploy.md", "-o", str(tmp_path / "r.yaml"))
    assert result.returncode == 2
    assert "'docs/deploy.md' is not an absolute http(s) URL" in result.stderr
    assert not (tmp_path / "r.yaml").exists()
    real = tmp_path / "real.yaml"
    real.write_text("keep\n")
    (tmp_path / "link.yaml").symlink_to(real)
    result = _generate("-o", str(tmp_path / "link.yaml"))
    assert result.returncode == 2
    assert "not a regular file" in result.stderr
    assert real.read_text() == "keep\n"
