"""The CPU image, built and run with Debian's podman and no container registry: deploy/podman/
build.sh makes the Dockerfile's base with debootstrap, imports it under the FROM name and builds
deploy/docker/Dockerfile.cpu; the container then runs read-only as uid 10001, turns SERVING, its
HEALTHCHECK passes, `varfx score` through it writes the same bytes as through a server on the
host, a real Prometheus scrapes its metrics, and SIGTERM (`podman stop`) drains it to exit 0.

Skips where podman or debootstrap is missing, where the test is not root (rootful podman), or
where podman cannot start a container on this machine (build.sh's exit status 3 and reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy._stack import derived_prometheus_config, free_port, run_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "podman" / "build.sh"
TAG = "localhost/varfx:podman-test"
VARFX = [sys.executable, "-m", "varfx"]
CANNOT_RUN = 3  # build.sh: podman cannot run a container here


def _podman(env: dict[str, str], *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """Builds the image; the environment (CONTAINERS_CONF) every podman call here runs with."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (.ci/run installs Debian's podman and debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("the podman route is rootful: run as root")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["nice", "-n", "10", "bash", str(BUILD), TAG],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode == CANNOT_RUN:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "exit 3"
        pytest.skip(f"podman cannot build/run here: {reason}")
    assert proc.returncode == 0, f"build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("CONTAINERS_CONF="), proc.stdout
    conf = last.split("=", 1)[1]
    if conf:
        env["CONTAINERS_CONF"] = conf
    return env


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated genome and VCF (seed 3, small) for the image's default model."""
    from varfx.cli import main as varfx_main

    out = tmp_path_factory.mktemp("podman") / "sim"
    args = ["simulate", "--out", str(out), "--seed", "3", "--size", "small", "--variants", "150"]
    assert varfx_main([*args, "-q"]) == 0
    return out


def _health(target: str) -> int:
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)
    except grpc.RpcError:
        return -1


def _score(target: str, vcf: Path, out: Path) -> None:
    cmd = [*VARFX, "score", str(vcf), "--server", target, "-o", str(out), "-q"]
    cmd += ["--features", "CTCF,SPI1", "--batch-size", "1000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def container(podman_env: dict[str, str], sim: Path) -> Iterator[tuple[str, int, int]]:
    """The image run read-only (no tmpfs either) with the genome mounted; (id, grpc, metrics)."""
    grpc_port, metrics_port = free_port(), free_port()
    cid = _podman(
        podman_env,
        "run", "-d", "--read-only", "--read-only-tmpfs=false", "--cap-drop=all",
        "--security-opt=no-new-privileges",
        # no systemd here to run the HEALTHCHECK on a timer; `podman healthcheck run` runs it
        "--health-interval=disable",
        "-p", f"127.0.0.1:{grpc_port}:50051", "-p", f"127.0.0.1:{metrics_port}:9090",
        "-v", f"{sim}:/genome:ro", "-e", "VARFX_GENOME=/genome/genome.fa",
        TAG,
    )  # fmt: skip
    try:
        yield cid, grpc_port, metrics_port
    finally:
        logs = subprocess.run(
            ["podman", "logs", cid], env=podman_env, capture_output=True, text=True, check=False
        )
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        _podman(podman_env, "rm", "-f", "-t", "0", cid, check=False)


def test_image_serves_scores_like_the_host_and_drains(
    podman_env: dict[str, str],
    container: tuple[str, int, int],
    sim: Path,
    tmp_path: Path,
) -> None:
    from varfx.server import ServerConfig, start_in_thread

    cid, grpc_port, metrics_port = container
    target = f"127.0.0.1:{grpc_port}"
    # Read-only root, the image's non-root user, the process as uid 10001.
    assert _podman(podman_env, "inspect", "--format", "{{.Config.User}}", cid) == "10001:10001"
    assert _podman(podman_env, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", cid) == (
        "true"
    )
    deadline = time.monotonic() + 120
    while _health(target) != health_pb2.HealthCheckResponse.SERVING:
        state = _podman(podman_env, "inspect", "--format", "{{.State.Status}}", cid)
        assert state == "running", f"container {state} before SERVING"
        assert time.monotonic() < deadline, "no SERVING within 120 s"
        time.sleep(0.5)
    assert _podman(podman_env, "exec", cid, "id", "-u") == "10001"
    write = subprocess.run(
        ["podman", "exec", cid, "sh", "-c", "touch /probe"],
        env=podman_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    # The image's HEALTHCHECK (varfx health against the gRPC health service) passes.
    health = subprocess.run(
        ["podman", "healthcheck", "run", cid], env=podman_env, capture_output=True, text=True
    )
    assert health.returncode == 0, health.stdout + health.stderr
    assert _podman(podman_env, "inspect", "--format", "{{.State.Health.Status}}", cid) == (
        "healthy"
    )

    # The same VCF through the container and through a server on the host with the image's
    # settings (its baked-in model = models/sim-chromatin, the same genome): the same bytes.
    vcf = sim / "variants.vcf.gz"
    n_records = sum(
        1 for line in subprocess.run(
            ["bcftools", "view", "-H", str(vcf)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    ) if shutil.which("bcftools") else None  # fmt: skip
    in_image = tmp_path / "image.tsv"
    _score(target, vcf, in_image)
    repo = tmp_path / "models"  # the image's /models: sim-chromatin only
    repo.mkdir()
    (repo / "sim-chromatin").symlink_to(REPO / "models" / "sim-chromatin")
    config = ServerConfig(
        model_repo=repo, genome=sim / "genome.fa", host="127.0.0.1", port=0,
        metrics_port=-1, device="cpu",
    )  # fmt: skip
    on_host = tmp_path / "host.tsv"
    with start_in_thread(config) as running:
        _score(running.target, vcf, on_host)
    rows = in_image.read_text().splitlines()
    assert len(rows) > 100
    assert in_image.read_bytes() == on_host.read_bytes()

    # A real Prometheus, from the shipped scrape config, scrapes the container's metrics port.
    scored = len(rows) - 1  # one row per variant-ALT under the header
    prom_config = derived_prometheus_config([metrics_port])
    with run_prometheus(prom_config, tmp_path) as prom:
        prom.wait_for("up", lambda: prom.value('up{job="varfx"}') == 1)
        total = prom.wait_for(
            "the scored variants",
            lambda: prom.value('sum(varfx_variants_total{job="varfx"})'),
        )
        assert total == scored
        info = prom.query('varfx_model_info{job="varfx"}')
        assert [r["metric"]["model"] for r in info] == ["sim-chromatin"]
    if n_records is not None:
        assert scored >= n_records

    # SIGTERM (the image's STOPSIGNAL, sent by `podman stop`) drains the server to exit 0, well
    # within the stop timeout (a SIGKILL would read 137).
    t0 = time.monotonic()
    _podman(podman_env, "stop", "-t", "60", cid)
    assert time.monotonic() - t0 < 45
    assert _podman(podman_env, "inspect", "--format", "{{.State.ExitCode}}", cid) == "0"
    logs = subprocess.run(
        ["podman", "logs", cid], env=podman_env, capture_output=True, text=True, check=True
    )
    out = logs.stdout + logs.stderr
    assert "Traceback" not in out
    assert "telemetry" not in out  # no ONNX Runtime warning about an unwritable HOME
