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

# small Basset (32/32 filters, L=300) for >= 1,000 variants/s on 2 CPU cores in ONNX Runtime.
# Trained in two legs, exactly as the committed model was: 12 epochs, then --resume up to 30
# (early stopping, patience 4, on validation mean auPRC).
TRAIN_ARGS=(
  --genome "$WORK/sim/genome.fa" --peaks "$WORK/sim/peaks" --out "$WORK/run"
  --arch basset --channels 32 32 --hidden 32 --kernel-size 19 --dropout 0
  --length 300 --stride 25 --negative-ratio 1 --rc-augment
  --valid-chroms chr4 --test-chroms chr5 --assembly varfx-sim-seed0
  --patience 4 --batch-size 64 --lr 0.005 --weight-decay 0
  --seed 0 --device "${DEVICE:-cpu}" --threads "${THREADS:-1}" --no-progress
)
"$VARFX" train "${TRAIN_ARGS[@]}" --epochs 12
"$VARFX" train "${TRAIN_ARGS[@]}" --epochs 30 --resume

"$VARFX" export --run "$WORK/run" --repo models --name sim-chromatin --version 1 --overwrite
