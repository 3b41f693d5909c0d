"""deploy/k8s: render the kustomize overlays, validate every manifest against the Kubernetes
schemas offline (kubernetes-validate), check the ServiceMonitor CRD by hand, and check that the
pieces fit together (selectors, ports, probes, grace periods, config keys)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._kustomize import KustomizeError, render, strategic_merge

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.30.0"  # native gRPC probes are GA since 1.27

kv = pytest.importorskip("kubernetes_validate")


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    return request.param, _by_kind(render(K8S / "overlays" / request.param))


def _pod_spec(res: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return res["Deployment", "varfx"]["spec"]["template"]["spec"]


def _container(res: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod_spec(res)["containers"]
    return container


def test_overlays_render_expected_resources(overlay: Any) -> None:
    _name, res = overlay
    kinds = sorted(kind for kind, _ in res)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    assert all(d["metadata"]["namespace"] == "varfx" for d in res.values())
    assert all(
        d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "varfx" for d in res.values()
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the in-test renderer is used alone")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / name)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = _by_kind([d for d in yaml.safe_load_all(out) if d])
    ours = _by_kind(render(K8S / "overlays" / name))
    assert ours.keys() == theirs.keys()
    for key, doc in ours.items():
        assert doc == theirs[key], key


def test_every_builtin_manifest_is_schema_valid(overlay: Any) -> None:
    _name, res = overlay
    checked = 0
    for (_kind, _), doc in res.items():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: no schema in kubernetes-validate; see test_service_monitor and
            # tests/deploy/test_prometheus_rule.py
        kv.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked == len(res) - 2  # all but the ServiceMonitor and the PrometheusRule


def test_schema_validation_rejects_a_broken_manifest(overlay: Any) -> None:
    """Guard: the validator really validates (strict mode rejects an unknown field, and a probe
    with a string port)."""
    _name, res = overlay
    bad = strategic_merge(res["Deployment", "varfx"], {"spec": {"replicaz": 3}})
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)
    bad = strategic_merge(
        res["Deployment", "varfx"],
        {"spec": {"template": {"spec": {"containers": [{"name": "varfx", "ports": "grpc"}]}}}},
    )
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_service_monitor(overlay: Any) -> None:
    """ServiceMonitor is a CRD: check its structure and that it selects exactly the ClusterIP
    Service (not the headless one, which would scrape every pod twice) on a port it has."""
    _name, res = overlay
    sm = res["ServiceMonitor", "varfx"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    match = sm["spec"]["selector"]["matchLabels"]
    selected = [
        d
        for (kind, _), d in res.items()
        if kind == "Service" and match.items() <= d["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["varfx"]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert sm["spec"]["endpoints"]
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", ep["interval"])
        assert int(ep["scrapeTimeout"][:-1]) < int(ep["interval"][:-1])
    # The alert rules match job="varfx": the job label comes from the Service's name label.
    assert selected[0]["metadata"]["labels"][sm["spec"]["jobLabel"]] == "varfx"


def test_selectors_and_references_fit(overlay: Any) -> None:
    _name, res = overlay
    dep = res["Deployment", "varfx"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for name in ("varfx", "varfx-headless"):
        assert res["Service", name]["spec"]["selector"].items() <= pod_labels.items()
    assert res["Service", "varfx-headless"]["spec"]["clusterIP"] == "None"
    assert res["Service", "varfx"]["spec"]["type"] == "ClusterIP"
    pdb = res["PodDisruptionBudget", "varfx"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = res["HorizontalPodAutoscaler", "varfx"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "varfx")
    hpa = res["HorizontalPodAutoscaler", "varfx"]["spec"]
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # PDB must leave room to evict with the HPA's minimum replica count.
    assert pdb["spec"]["maxUnavailable"] >= 1
    spec = _pod_spec(res)
    container = _container(res)
    (cm_ref,) = container["envFrom"]
    assert ("ConfigMap", cm_ref["configMapRef"]["name"]) in res
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims
    assert all(("PersistentVolumeClaim", c) in res for c in claims)
    volume_names = {v["name"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(m["name"] in volume_names for m in mounts.values())
    assert mounts["/models"]["readOnly"]
    assert mounts["/genome"]["readOnly"]


def test_config_ports_probes_and_drain(overlay: Any) -> None:
    from varfx.server.config import load_config

    name, res = overlay
    data = res["ConfigMap", "varfx-config"]["data"]
    config = load_config(environ=data)  # every key is a real setting with a valid value
    assert all(k.startswith("VARFX_") for k in data)
    container = _container(res)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": config.port,
        "metrics": config.metrics_port,
        "health": config.health_port,
    }
    assert str(config.model_repo) == "/models"
    assert config.genome is not None
    assert config.genome.parent == Path("/genome")
    # kubelet gRPC probes cannot speak TLS: they use the plaintext health-only port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == config.health_port, probe
    from varfx.server.app import SERVICE_NAME  # the name the server reports health for

    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert container["startupProbe"]["grpc"]["service"] == SERVICE_NAME
    # Drain: preStop delay + the server's own grace period fit in the pod's grace period.
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = _pod_spec(res)["terminationGracePeriodSeconds"]
    assert grace > int(sleep[1]) + config.grace_s, (grace, sleep, config.grace_s)
    assert config.max_connection_age_s > 0  # round-robin clients reach new pods
    # Non-root, matching the image's USER.
    dockerfile = (REPO / "deploy" / "docker" / f"Dockerfile.{name}").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    sec = _pod_spec(res)["securityContext"]
    assert sec["runAsNonRoot"] is True
    assert (str(sec["runAsUser"]), str(sec["runAsGroup"])) == user
    assert container["image"] == f"varfx:{name}"


def test_gpu_overlay_requests_a_gpu_and_cpu_does_not() -> None:
    cpu = _by_kind(render(K8S / "overlays" / "cpu"))
    gpu = _by_kind(render(K8S / "overlays" / "gpu"))
    gpu_res = _container(gpu)["resources"]
    assert gpu_res["limits"]["nvidia.com/gpu"] == 1
    assert gpu_res["requests"]["nvidia.com/gpu"] == 1
    assert gpu["ConfigMap", "varfx-config"]["data"]["VARFX_DEVICE"] == "cuda"
    assert "nvidia.com/gpu" not in str(_container(cpu)["resources"])
    assert cpu["ConfigMap", "varfx-config"]["data"]["VARFX_DEVICE"] == "cpu"
    # The patch replaced the HPA metrics list (no merge key) and kept the base behavior.
    metrics = gpu["HorizontalPodAutoscaler", "varfx"]["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods", "Resource"]
    assert "behavior" in gpu["HorizontalPodAutoscaler", "varfx"]["spec"]
    # Patching merged the container by name instead of replacing the list.
    assert "livenessProbe" in _container(gpu)


def test_renderer_rejects_unsupported_fields(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)


def test_tls_and_tokens_come_from_secrets(overlay: Any) -> None:
    """The gRPC port speaks TLS and wants a token; the files come from Secrets mounted
    read-only and not world-readable; the probes do not need either."""
    from varfx.server.config import load_config
    from varfx.server.tls import security_warnings

    _name, res = overlay
    config = load_config(environ=res["ConfigMap", "varfx-config"]["data"])
    assert config.tls_cert is not None
    assert config.tls_key is not None
    assert config.auth_tokens_file is not None
    assert config.health_port > 0
    assert config.health_port not in (config.port, config.metrics_port)
    assert security_warnings(config) == []  # TLS and tokens on a non-loopback bind
    spec = _pod_spec(res)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = _container(res)["volumeMounts"]
    for path in (config.tls_cert, config.tls_key, config.auth_tokens_file):
        (mount,) = [m for m in mounts if path.parent == Path(m["mountPath"])]
        assert mount["readOnly"] is True
        assert "subPath" not in mount  # a subPath mount never sees a Secret update
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] in ("varfx-tls", "varfx-auth")
        assert secret["defaultMode"] & 0o007 == 0, oct(secret["defaultMode"])
    # the Secret mode lets the pod's group (fsGroup) read the files
    assert all(volumes[n]["secret"]["defaultMode"] & 0o040 for n in ("tls", "auth"))
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
