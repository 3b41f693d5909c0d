#!/usr/bin/env bash
# System Python for the GPU image (the CUDA base has none). Ubuntu 24.04's python3 is 3.12.
#   install-python.sh build    python3 + python3-venv (to create the venv)
#   install-python.sh runtime  python3 only (the venv's interpreter; no pip, no compilers)
set -euo pipefail
case "${1:-}" in
  build) packages=(python3 python3-venv) ;;
  runtime) packages=(python3) ;;
  *) echo "usage: $0 build|runtime" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
apt-get clean
rm -rf /var/lib/apt/lists/*
