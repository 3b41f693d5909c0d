"""Helpers for the deploy tests: a real varfx server, a real Prometheus subprocess configured
from the shipped scrape config and rules, its HTTP API, and simple gRPC load."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
PROM_DIR = COMPOSE / "prometheus"
RULE_FILES = (PROM_DIR / "rules" / "recording.yml", PROM_DIR / "rules" / "alerts.yml")
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "varfx.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_repo: Path, genome: Path | None, **overrides: Any) -> Any:
    """A real varfx server on ephemeral loopback ports (gRPC and metrics), fresh registry."""
    from varfx.server import ServerConfig, start_in_thread

    settings: dict[str, Any] = {
        "model_repo": model_repo,
        "genome": genome,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "max_batch": 64,
        "max_delay_ms": 1.0,
        "default_model": "tok",
        "warmup_batch_sizes": (1, 64),
        **overrides,
    }
    return start_in_thread(ServerConfig(**settings))


def scrape(metrics_port: int) -> str:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def score_variants(target: str, variants: list[tuple[str, int, str, str]], model: str = "") -> Any:
    """One unary ScoreVariants call with the generated stub; returns the response."""
    from varfx.proto.v1 import varfx_pb2 as pb
    from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

    request = pb.ScoreVariantsRequest(
        model=model,
        variants=[
            pb.Variant(id=f"v{i}", chrom=c, pos=p, ref=r, alt=a)
            for i, (c, p, r, a) in enumerate(variants)
        ],
    )
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.VariantEffectServiceStub(channel).ScoreVariants(request, timeout=30)


def snvs(seq: str, chrom: str, positions: range, *, ref_mismatch: bool = False) -> list[Any]:
    """SNVs at 1-based ``positions`` of ``seq``: REF from the genome (or a wrong REF)."""
    out = []
    for pos in positions:
        base = seq[pos - 1]
        other = "ACGT"[("ACGT".index(base) + 1) % 4]
        out.append(
            (chrom, pos, other if ref_mismatch else base, "ACGT"[("ACGT".index(base) + 2) % 4])
        )
    return out


def derived_prometheus_config(metrics_ports: list[int], interval: str = "1s") -> dict[str, Any]:
    """The shipped prometheus.yml with its varfx job pointed at loopback metrics ports, short
    intervals, and the shipped rule files by absolute path."""
    shipped = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "varfx"]
    job = dict(job)
    job["scrape_interval"] = interval
    job["scrape_timeout"] = interval
    labels = job["static_configs"][0].get("labels", {})
    job["static_configs"] = [
        {"targets": [f"127.0.0.1:{p}" for p in metrics_ports], "labels": labels}
    ]
    global_ = dict(shipped["global"], scrape_interval=interval, evaluation_interval=interval)
    rule_files = [str((PROM_DIR / r).resolve()) for r in shipped["rule_files"]]
    assert sorted(rule_files) == sorted(str(p) for p in RULE_FILES)
    return {"global": global_, "rule_files": rule_files, "scrape_configs": [job]}


class Prometheus:
    """A Prometheus server subprocess; ``query`` runs instant queries over its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body["status"] != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return list(self.api("query", **params)["result"])

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single sample of ``expr`` (None when it has no result)."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(
        self, what: str, check: Callable[[], Any], timeout: float = 45.0, poll: float = 0.25
    ) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}")
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@contextmanager
def run_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[Prometheus]:
    """Start ``prometheus`` on a free loopback port with ``config``; skip if not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (CI installs Debian's package via .ci/run)")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        prom.wait_for("prometheus /-/ready", ready, timeout=30)
        yield prom
    except BaseException:
        log.flush()
        print((workdir / "prometheus.log").read_text()[-3000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
