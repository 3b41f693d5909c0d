"""``varfx serve`` as a real subprocess: start-up log, env/flag config, calls, SIGTERM drain."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import eventually, random_seq, write_fasta
from tests.onnx_models import TinyCNN, write_model
from varfx.proto.v1 import varfx_pb2 as pb
from varfx.proto.v1 import varfx_pb2_grpc as pb_grpc

VARFX = [sys.executable, "-m", "varfx"]
SEQ = random_seq(5000, 77)
READY = re.compile(r"serving \[.*\] on 127\.0\.0\.1:(\d+) \(metrics: 127\.0\.0\.1:(\d+)\)")


class Proc:
    """A running ``varfx serve``; stderr collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [*VARFX, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> tuple[int, int]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = READY.search(self.log)
            if match:
                return int(match.group(1)), int(match.group(2))
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"varfx serve did not start:\n{self.log}")

    def wait_serving(self, n: int, timeout: float = 90) -> None:
        """Wait (up to ``timeout`` s) until ``n`` processes have logged that they serve; the
        server exiting meanwhile fails the test."""
        deadline = time.time() + timeout
        while time.time() < deadline and len(re.findall(r"serving \[", self.log)) < n:
            assert self.popen.poll() is None, self.log
            time.sleep(0.1)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    repo = tmp / "repo"
    write_model(repo, name="fast", length=20, n_features=3)
    # heavy enough that a 100-variant call is still running when SIGTERM arrives
    write_model(repo, name="slow", net=TinyCNN.random(2, channels=256, kernel=31), length=2000)
    return repo, write_fasta(tmp / "g.fa", {"chr1": SEQ})


@pytest.fixture
def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VARFX_")}
    out["PYTHONUNBUFFERED"] = "1"
    return out


def snvs(n: int, start: int = 1500, step: int = 11) -> list[pb.Variant]:
    out = []
    for i in range(n):
        pos = start + step * i
        ref = SEQ[pos - 1]
        alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        out.append(pb.Variant(id=str(pos), chrom="chr1", pos=pos, ref=ref, alt=alt))
    return out


def test_serve_answers_then_drains_on_sigterm(
    files: tuple[Path, Path], env: dict[str, str]
) -> None:
    repo, fasta = files
    env["VARFX_MAX_BATCH"] = "32"  # from the environment
    env["VARFX_DEFAULT_MODEL"] = "fast"
    args = [
        "serve", "--model-repo", str(repo), "--genome", str(fasta), "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1",
        "--warmup-batch-sizes", "1,2", "--grace-s", "30", "--intra-op-threads", "1",
        "--log-requests",
    ]  # fmt: skip
    proc = Proc(args, env)
    try:
        port, metrics_port = proc.wait_ready()
        assert "model fast v1: 3 features, L=20, tokens input, on cpu" in proc.log
        assert "model slow v1" in proc.log
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="")).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        stub = pb_grpc.VariantEffectServiceStub(channel)
        models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert models["fast"].max_batch == 32
        assert models["fast"].is_default
        quick = stub.ScoreVariants(pb.ScoreVariantsRequest(variants=snvs(3)))
        assert [s.status.code for s in quick.scores] == [pb.OK] * 3
        line = b'varfx_requests_total{code="OK",method="ScoreVariants"} 1.0'
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        # recorded when the call is done on the server, just after the client has its answer
        assert eventually(lambda: line in urllib.request.urlopen(url).read(), True)
        assert re.search(r"ScoreVariants OK \d+\.\d ms", proc.log)  # --log-requests

        slow = stub.ScoreVariants.future(
            # 400 distinct sites: no cached reference, seconds of work on a quiet machine too
            pb.ScoreVariantsRequest(model="slow", variants=snvs(400, step=2)),
            timeout=120,
        )
        time.sleep(0.3)
        assert not slow.done(), "the call finished before SIGTERM: make the model heavier"
        proc.popen.send_signal(signal.SIGTERM)
        response = slow.result()  # the in-flight call is drained, not dropped
        assert [s.status.code for s in response.scores] == [pb.OK] * 400
        assert proc.popen.wait(60) == 0
        assert "draining" in proc.log
        with pytest.raises(grpc.RpcError):
            stub.ScoreVariants(pb.ScoreVariantsRequest(variants=snvs(1)), timeout=2)
    finally:
        proc.kill()


def test_serve_reads_a_config_file(
    files: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    repo, fasta = files
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nmodel_repo = "{repo}"\ngenome = "{fasta}"\nhost = "127.0.0.1"\nport = 0\n'
        'metrics_port = 0\nmetrics_host = "127.0.0.1"\nmax_batch = 16\nwarmup_batch_sizes = [1]\n'
        'default_model = "fast"\n'
    )
    proc = Proc(["serve", "--config", str(config), "--max-batch", "8"], env)
    try:
        port, _ = proc.wait_ready()
        stub = pb_grpc.VariantEffectServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert models["fast"].max_batch == 8  # the flag beats the file
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(60) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--max-batch", "1"], "max_batch=1"),
        (["--model-repo", "/nonexistent/models"], "'/nonexistent/models' is not a directory"),
        (["--genome", "/nonexistent/hg38.fa"], "genome FASTA not found: /nonexistent/hg38.fa"),
    ],
)
def test_serve_startup_errors_are_one_clear_line(
    files: tuple[Path, Path], env: dict[str, str], args: list[str], text: str
) -> None:
    repo, _ = files
    base = ["serve", "--model-repo", str(repo), "--port", "0", "--metrics-port", "-1"]
    done = subprocess.run(
        [*VARFX, *base, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert text in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_help_lists_flags(env: dict[str, str]) -> None:
    done = subprocess.run(
        [*VARFX, "serve", "--help"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    for flag in ("--model-repo", "--genome", "--port", "--metrics-port", "--device",
                 "--max-batch", "--max-delay-ms", "--max-queue", "--config", "VARFX_MODEL_REPO"):  # fmt: skip
        assert flag in done.stdout


def test_workers_share_one_port_and_one_metrics_endpoint(
    files: tuple[Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """``--workers 2``: two server processes on one port; every call, whichever worker took
    its connection, counted on the parent's one metrics endpoint; SIGTERM drains all, exit 0."""
    import socket

    repo, fasta = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    args = [
        "serve", "--model-repo", str(repo), "--genome", str(fasta), "--host", "127.0.0.1",
        "--port", "0", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--default-model", "fast", "--workers", "2", "--warmup-batch-sizes", "1",
    ]  # fmt: skip
    proc = Proc(args, env)
    try:
        proc.wait_serving(2)
        ports = {int(p) for p in re.findall(r"serving \[.*\] on 127\.0\.0\.1:(\d+)", proc.log)}
        assert len(ports) == 1, proc.log  # both workers on the one port
        port = ports.pop()
        pids = set(re.findall(r"worker \d \(pid (\d+)\) starting", proc.log))
        assert len(pids) == 2, proc.log
        for _ in range(8):  # a new connection each time: the kernel spreads them
            channel = grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            reply = pb_grpc.VariantEffectServiceStub(channel).ScoreVariants(
                pb.ScoreVariantsRequest(variants=snvs(2))
            )
            assert [s.status.code for s in reply.scores] == [pb.OK, pb.OK]
            channel.close()
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        line = 'varfx_requests_total{code="OK",method="ScoreVariants"} 8.0'
        text = eventually(
            lambda: line if line in urllib.request.urlopen(url).read().decode() else "", line
        )
        assert text == line
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(60) == 0, proc.log
    finally:
        proc.kill()


def test_workers_die_with_a_killed_parent(files: tuple[Path, Path], env: dict[str, str]) -> None:
    """SIGKILL to the parent (no chance to stop them): the workers go too, no orphans."""
    repo, fasta = files
    args = [
        "serve", "--model-repo", str(repo), "--genome", str(fasta), "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "-1", "--default-model", "fast", "--workers", "2",
        "--warmup-batch-sizes", "1",
    ]  # fmt: skip
    proc = Proc(args, env)
    try:
        proc.wait_serving(2)
        pids = [int(p) for p in re.findall(r"worker \d \(pid (\d+)\) starting", proc.log)]
        assert len(pids) == 2, proc.log
    finally:
        proc.kill()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    for p in alive:  # our own children: do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their parent"
