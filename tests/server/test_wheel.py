"""The built wheel installs into a fresh venv with only the base extra and the CLI works there.

Slow-ish (builds a wheel, creates a venv, installs the base dependencies through pip from the
configured package indexes), but part of the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the wheel is built from (pyproject's package-dir), copied so the build never writes into
# the shared checkout.
SOURCES = ("pyproject.toml", "README.md", "varfx", "proto", "client", "server", "training")


def source_files() -> list[str]:
    """Files the wheel is built from: git-tracked ones where this is a git checkout (so files
    that others are writing at this moment do not get in the way), else everything."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", *SOURCES],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = []
    if listed:
        return [f for f in listed if (REPO / f).is_file()]
    out = []
    for name in SOURCES:
        path = REPO / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        out += [
            str(f.relative_to(REPO))
            for f in files
            if f.is_file() and "__pycache__" not in f.parts and not f.name.endswith(".pyc")
        ]
    return out


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout (cwd), so that `import varfx` cannot pick up the source tree."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=cwd)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_with_base_extra_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel in source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    dist = tmp_path / "dist"
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(dist),
            str(src),
        ],
        tmp_path,
    )
    (wheel,) = dist.glob("varfx-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py, varfx = venv / "bin" / "python", venv / "bin" / "varfx"
    run([str(py), "-m", "pip", "install", "-q", str(wheel)], tmp_path)

    help_text = run([str(varfx), "--help"], tmp_path).stdout
    assert "serve" in help_text
    run([str(py), "-c", "import varfx.client, varfx.proto.v1.varfx_pb2"], tmp_path)
    run([str(py), "-c", "import varfx.proto.kserve_v2.grpc_service_pb2_grpc"], tmp_path)
    missing = run(
        [str(py), "-c", "import importlib.util as u; print([m for m in "
         "('onnxruntime', 'torch', 'prometheus_client') if u.find_spec(m)])"],
        tmp_path,
    ).stdout.strip()  # fmt: skip
    assert missing == "[]"  # the base install pulls none of the server/train extras
    # the server subcommand says which extra to install instead of a traceback
    serve = subprocess.run(
        [str(varfx), "serve", "--model-repo", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert serve.returncode == 2
    assert "pip install 'varfx[server]'" in serve.stderr
    # the proto source ships with the wheel
    listing = run([str(py), "-m", "zipfile", "-l", str(wheel)], tmp_path).stdout
    assert "varfx/proto/varfx/v1/varfx.proto" in listing
    assert "varfx/proto/kserve/v2/grpc_service.proto" in listing
    assert "varfx/proto/kserve/v2/model_config.proto" in listing
    assert "varfx/server/py.typed" in listing
