#!/usr/bin/env bash
# Rebuild the default model models/sim-chromatin/1/model.onnx from scratch (CPU, deterministic
# data; seed 0): varfx simulate -> varfx train -> varfx export. Usage:
#   scripts/build_default_model.sh [WORK_DIR]    (default WORK_DIR: runs/sim-chromatin)
set -euo pipefail
cd "$(dirname "$0")/.."
VARFX=${VARFX:-.venv/bin/varfx}
WORK=${1:-runs/sim-chromatin}
mkdir -p "$WORK"

"$VARFX" simulate --out "$WORK/sim" --seed 0

"$VARFX" train \
  --genome "$WORK/sim/genome.fa" --peaks "$WORK/sim/peaks" --out "$WORK/run" \
  --arch dilated --channels 48 48 48 48 --kernel-size 19 --dropout 0.1 \
  --length 500 --stride 100 --negative-ratio inf --rc-augment \
  --valid-chroms chr4 --test-chroms chr5 --assembly varfx-sim-seed0 \
  --epochs 12 --patience 4 --batch-size 64 --lr 0.002 --weight-decay 0 \
  --seed 0 --device "${DEVICE:-cpu}" --threads "${THREADS:-1}" --no-progress

"$VARFX" export --run "$WORK/run" --repo models --name sim-chromatin --version 1 --overwrite
