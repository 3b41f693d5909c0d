"""deploy/compose: promtool checks of the shipped Prometheus files, promtool unit tests of the
rules, and consistency of the compose file with the Grafana provisioning and the dashboard."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy._stack import COMPOSE, DASHBOARD, PROM_DIR, RULE_FILES


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (CI installs Debian's prometheus package via .ci/run)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_config() -> None:
    result = _promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    """Every alert fires on the input that should fire it and stays quiet otherwise; recording
    rules give the exact expected values (deploy/compose/prometheus/tests/rules_test.yml)."""
    result = _promtool("test", "rules", str(PROM_DIR / "tests" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load((PROM_DIR / "tests" / "rules_test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    alerts = yaml.safe_load(RULE_FILES[1].read_text())
    defined = {r["alert"] for g in alerts["groups"] for r in g["rules"]}
    assert fired == defined  # every alert has a test where it fires


def test_alerts_have_runbooks_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text().lower()
    alerts = yaml.safe_load(RULE_FILES[1].read_text())
    for rule in (r for g in alerts["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert'].lower()}" in doc, f"docs/deploy.md lacks a section {anchor}"


def test_compose_wires_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"varfx", "prometheus", "grafana"}
    assert services["varfx"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.cpu"
    assert (COMPOSE / services["varfx"]["build"]["context"]).resolve() == PROM_DIR.parents[2]
    # The scrape target is the varfx service's metrics port.
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "varfx"]
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host == "varfx"
    assert port == services["varfx"]["environment"]["VARFX_METRICS_PORT"]
    # Mounted host paths exist; Prometheus reads its config dir, Grafana its provisioning.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            src = volume.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE / src).exists(), volume
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provider = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "dashboards" / "varfx.yml").read_text()
    )
    dash_dir = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == dash_dir
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dash_dir}/{DASHBOARD.name}"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    ds = yaml.safe_load(
        (COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"  # the compose service name and port
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("variants/s", "latency", "batch size", "queue depth", "queue wait", "status",
                  "inference", "cpu", "memory", "gpu memory"):  # fmt: skip
        assert topic in titles, topic
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == source["uid"]
