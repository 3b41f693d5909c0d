"""deploy/docker: the Dockerfiles are parsed and checked (multi-stage, only existing files
copied, non-root USER, HEALTHCHECK via the gRPC health service, `varfx serve` entrypoint, no
torch, no build tools in the final stage), and install.sh, the images' install step, is run
here into a fresh venv, whose `varfx serve` then serves a tiny model and drains on SIGTERM."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.deploy._stack import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
FLAVORS = {"cpu": "server", "gpu": "gpu"}  # image -> varfx extra it installs
DEFAULT_MODEL = REPO / "models" / "sim-chromatin" / "1" / "model.onnx"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{path}: {keyword} before FROM"
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return global_args, stages


def _copy_sources(stage: Stage) -> list[str]:
    sources = []
    for arg in stage.args("COPY"):
        if arg.startswith("--from"):
            continue
        parts = shlex.split(arg)
        sources.extend(parts[:-1])
    return sources


@pytest.fixture(params=sorted(FLAVORS))
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_dockerfile_structure(flavor: str) -> None:
    _args, stages = parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")
    assert len(stages) == 2
    build, final = stages
    assert build.name == "build"
    assert final.name is None
    assert build.base == final.base  # the venv's interpreter is the same in both stages
    if flavor == "gpu":
        assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu\d+\.\d+", final.base)
    else:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", final.base)
    # The build stage installs varfx with the right extra through install.sh.
    runs = " ".join(build.args("RUN"))
    assert f"varfx-install /src /opt/varfx {FLAVORS[flavor]}" in runs
    # The final stage only takes the venv and the default model; no pip, no compilers.
    assert "--from=build /opt/varfx /opt/varfx" in final.args("COPY")
    final_runs = " ".join(final.args("RUN"))
    for forbidden in ("pip ", "gcc", "build-essential", "-dev", "varfx-install "):
        assert forbidden not in final_runs, forbidden
    text = (DOCKER / f"Dockerfile.{flavor}").read_text()
    assert "torch" not in text
    # Non-root user, entrypoint, healthcheck via the gRPC health service.
    (user,) = final.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert json.loads(final.args("ENTRYPOINT")[0]) == ["varfx", "serve"]
    (health,) = final.args("HEALTHCHECK")
    assert "varfx health --server 127.0.0.1:${VARFX_PORT}" in health
    env = " ".join(final.args("ENV"))
    settings = dict(re.findall(r"(VARFX_\w+)=(\S+)", env))
    assert settings["VARFX_MODEL_REPO"] == "/models"
    assert settings["VARFX_DEVICE"] == ("cuda" if flavor == "gpu" else "cpu")
    assert "VARFX_PORT" in settings
    from varfx.server.config import load_config

    load_config(environ=settings)  # every VARFX_* the image sets is a valid server setting
    assert "/models/sim-chromatin" in " ".join(final.args("COPY"))
    assert json.loads(final.args("VOLUME")[0]) == ["/models", "/genome"]


def test_dockerfile_copies_only_existing_files(flavor: str) -> None:
    _args, stages = parse_dockerfile(DOCKER / f"Dockerfile.{flavor}")
    ignore = [
        line
        for line in (DOCKER / f"Dockerfile.{flavor}.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    included = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    for stage in stages:
        for source in _copy_sources(stage):
            if source.startswith("models/") and not DEFAULT_MODEL.exists():
                continue  # trained by the training task; see test_default_model_present
            assert (REPO / source).exists(), f"Dockerfile.{flavor} copies missing {source}"
            # .dockerignore must let it into the build context.
            assert any(source == inc or fnmatch.fnmatch(source, inc) for inc in included), source


def test_default_model_present() -> None:
    if not DEFAULT_MODEL.exists():
        pytest.skip(f"default model not trained yet: {DEFAULT_MODEL.relative_to(REPO)}")
    assert DEFAULT_MODEL.stat().st_size > 0


def test_install_script_rejects_bad_arguments(tmp_path: Path) -> None:
    script = str(DOCKER / "install.sh")
    bad_extra = subprocess.run(
        ["bash", script, str(REPO), str(tmp_path / "v"), "train"], capture_output=True, text=True
    )
    assert bad_extra.returncode == 2
    assert "'train'" in bad_extra.stderr
    not_src = subprocess.run(
        ["bash", script, str(tmp_path), str(tmp_path / "v")], capture_output=True, text=True
    )
    assert not_src.returncode == 2
    assert "missing pyproject.toml" in not_src.stderr
    assert not (tmp_path / "v").exists()


def _health(target: str) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)
        except grpc.RpcError:
            return -1


@pytest.mark.slow
def test_install_script_builds_a_working_server_venv(tmp_path: Path) -> None:
    """The image recipe without Docker: install.sh into a fresh venv (CPU extra), then the
    entrypoint serves a tiny model, answers health, and exits 0 on SIGTERM."""
    from tests.onnx_models import write_model

    venv = tmp_path / "opt-varfx"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    # The interpreter the project venv was made from (a plain Python >= 3.11, no venv).
    env["PYTHON"] = str(Path(sys.base_prefix) / "bin" / "python3")
    install = subprocess.run(
        ["bash", str(DOCKER / "install.sh"), str(REPO), str(venv), "server"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file())
    assert size < 300 * 2**20, f"venv is {size / 2**20:.0f} MiB"
    assert not list(REPO.glob("build/lib*")), "install.sh wrote build/ into the source tree"
    py, varfx = str(venv / "bin" / "python"), str(venv / "bin" / "varfx")

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)

    assert run(varfx, "--help").returncode == 0
    serve_help = run(varfx, "serve", "--help")
    assert serve_help.returncode == 0
    assert "VARFX_MODEL_REPO" in serve_help.stdout
    probe = run(
        py,
        "-c",
        "import importlib.util as u, varfx.server, varfx.client, onnxruntime, onnx;"
        "print(varfx.server.__file__);"
        "print(*(u.find_spec(m) for m in ('torch', 'pip', 'setuptools', 'sklearn')))",
    )
    assert probe.returncode == 0, probe.stderr
    where, missing = probe.stdout.splitlines()
    assert where.startswith(str(venv))  # the installed copy, not the checkout
    # onnx is a server dependency (local recomputation reads the graph); the training extra's
    # torch and scikit-learn, and pip/setuptools, stay out of the image
    assert missing == "None None None None"

    # The image's ENTRYPOINT, configured by env vars as in the Dockerfile.
    repo = tmp_path / "models"
    write_model(repo, name="tiny", length=20)
    port, metrics_port = free_port(), free_port()
    serve_env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "VARFX_MODEL_REPO": str(repo),
        "VARFX_HOST": "127.0.0.1",
        "VARFX_PORT": str(port),
        "VARFX_METRICS_PORT": str(metrics_port),
        "VARFX_METRICS_HOST": "127.0.0.1",
        "VARFX_DEVICE": "cpu",
        "VARFX_GRACE_S": "5",
        "VARFX_WARMUP_BATCH_SIZES": "1,2",
    }
    proc = subprocess.Popen(
        [varfx, "serve"],
        env=serve_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while _health(f"127.0.0.1:{port}") != 1:  # 1 = SERVING
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "installed server never became SERVING"
            time.sleep(0.3)
        # The image's HEALTHCHECK command: exit 0 while SERVING ...
        healthcheck = (varfx, "health", "--server", f"127.0.0.1:{port}", "--timeout", "3")
        check = run(*healthcheck)
        assert check.returncode == 0, check.stdout + check.stderr
        # ... STOPSIGNAL SIGTERM drains and exits 0, and then the check fails.
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert run(*healthcheck).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
