#!/usr/bin/env bash
# Set up a lent GPU machine (device tool) for varfx: install the wheels carried in .whl/
# (onnxruntime-gpu reassembled from parts in /tmp/parts, pysam, grpcio, protobuf, varfx itself)
# into /tmp/site. Source it: `. scripts/device/setup.sh` (exports PYTHONPATH).
set -euo pipefail
mkdir -p /tmp/parts /tmp/wheels
cp -f .whl/*.whl /tmp/wheels/ 2>/dev/null || true
cp -f .whl/ortgpu.part* /tmp/parts/ 2>/dev/null || true
if [ ! -f /tmp/wheels/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl ] && [ -f /tmp/parts/ortgpu.part04 ]; then
  cat /tmp/parts/ortgpu.part0* > /tmp/wheels/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
fi
if [ ! -d /tmp/site/onnxruntime ] && [ -f /tmp/wheels/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/wheels/*.whl
fi

# varfx itself from this checkout, without installing: a package tree of symlinks.
rm -rf /tmp/vfx && mkdir -p /tmp/vfx/varfx
for f in varfx/*.py varfx/py.typed; do ln -s "$PWD/$f" /tmp/vfx/varfx/; done
for pkg in client server training proto; do ln -s "$PWD/$pkg" "/tmp/vfx/varfx/$pkg"; done
export PYTHONPATH=/tmp/site:/tmp/vfx:$PWD
