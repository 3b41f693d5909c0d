#!/usr/bin/env bash
# Set up a lent GPU machine (device tool) for varfx: install the wheels carried in .whl/
# (onnxruntime-gpu reassembled from parts in /tmp/parts, pysam, grpcio, protobuf, varfx itself)
# into /tmp/site. Source it: `. scripts/device/setup.sh` (exports PYTHONPATH).
set -euo pipefail
mkdir -p /tmp/parts /tmp/wheels
cp -f .whl/*.whl /tmp/wheels/ 2>/dev/null || true
cp -f .whl/ortgpu.part* /tmp/parts/ 2>/dev/null || true
W=/tmp/wheels/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [ ! -f "$W" ] && ls /tmp/parts/ortgpu.part* >/dev/null 2>&1; then
  # the wheel (255 MB) travels in parts across calls; keep it only once every part is here
  cat /tmp/parts/ortgpu.part* > "$W"
  python3 -c "import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)" "$W" \
    || { rm -f "$W"; echo "onnxruntime-gpu wheel incomplete: carry the remaining parts" >&2; }
fi
if [ ! -d /tmp/site/onnxruntime ] && [ -f /tmp/wheels/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/wheels/*.whl
fi

# varfx itself from this checkout, without installing: link the package folders into varfx/
# (this copy of the tree only; `python -c` and pytest put the checkout first on sys.path).
for pkg in client server training proto; do [ -e "varfx/$pkg" ] || ln -s "../$pkg" "varfx/$pkg"; done
export PYTHONPATH=/tmp/site:$PWD
# CUDA 13 / cuDNN 9 libraries of the nvidia-* wheels beside the machine's torch.
nv=$(python3 -c 'import nvidia, os; print(os.pathsep.join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true)
export LD_LIBRARY_PATH=${nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
