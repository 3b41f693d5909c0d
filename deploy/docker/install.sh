#!/usr/bin/env bash
# The one install step of both varfx images (Dockerfile.cpu, Dockerfile.gpu RUN this script).
#
# Builds varfx from a source tree and installs it, with one extra, into a self-contained virtual
# environment that the final image stage copies. No build tools, no torch end up in that venv.
#
# Usage: install.sh SRC_DIR VENV_DIR [EXTRA]
#   SRC_DIR   a varfx source tree (pyproject.toml, varfx/, proto/, client/, server/, training/)
#   VENV_DIR  where the venv goes (created; must not exist yet)
#   EXTRA     server (CPU onnxruntime, the default) or gpu (onnxruntime-gpu)
# Environment: PYTHON (default python3); PIP_NO_CACHE_DIR defaults to 1 (no wheel cache kept).
# tests/deploy/test_docker_recipe.py runs this script in a temporary directory.
set -euo pipefail

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
  echo "usage: $0 SRC_DIR VENV_DIR [server|gpu]" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
venv=$2
extra=${3:-server}
python=${PYTHON:-python3}
export PIP_NO_CACHE_DIR="${PIP_NO_CACHE_DIR:-1}" PIP_DISABLE_PIP_VERSION_CHECK=1

case "$extra" in
  server | gpu) ;;
  *) echo "install.sh: EXTRA must be 'server' or 'gpu', got '$extra'" >&2; exit 2 ;;
esac
if [ -e "$venv" ]; then
  echo "install.sh: $venv already exists" >&2
  exit 2
fi
for path in pyproject.toml README.md varfx proto client server training; do
  if [ ! -e "$src/$path" ]; then
    echo "install.sh: $src is not a varfx source tree (missing $path)" >&2
    exit 2
  fi
done

# Build from a clean copy, so nothing (build/, *.egg-info) is written into the source tree and
# no local virtual environment or data file is packaged by accident.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$src" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
  -cf - pyproject.toml README.md varfx proto client server training | tar -C "$work" -xf -

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q "$work[$extra]"
if [ "$extra" = gpu ]; then
  # NVML bindings (pure Python, small): the server's varfx_gpu_memory_used_bytes metric.
  "$venv/bin/python" -m pip install -q nvidia-ml-py
fi

# The image must stay small and must never carry torch (the training extra's dependency).
if "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "install.sh: torch ended up in $venv; the image must not carry it" >&2
  exit 1
fi
# Check the install works before the image is shipped: the CLI and the server package import
# (from /, so that a source tree in the working directory cannot shadow the installed package).
cd /
"$venv/bin/varfx" --help >/dev/null
"$venv/bin/python" -c "import varfx.server, varfx.client"
# pip and setuptools are not needed at run time.
"$venv/bin/python" -m pip uninstall -q -y setuptools 2>/dev/null || true
"$venv/bin/python" -m pip uninstall -q -y pip
echo "install.sh: varfx[$extra] installed into $venv"
