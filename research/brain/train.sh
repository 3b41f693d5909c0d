#!/usr/bin/env bash
# Train the brain-hg19 model (issue 7): prepare the window index, train, export ONNX.
#
#   research/brain/train.sh [--device cuda|cpu|auto] [--data DIR] [--run DIR] [--export DIR] [--smoke]
#                          [-- extra train.py args]
#
# Defaults: --data ../shared/data/real, --run runs/brain/<device>, --export models/brain-hg19/2.
# --smoke: a small CPU check of the whole flow (a few Mb per split, 1 epoch, export to the run dir).
# On a 16-core + H100 machine the full run takes a few minutes (data is gathered on the GPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
DEVICE=auto
DATA=../shared/data/real
RUN=
EXPORT=models/brain-hg19/2
SMOKE=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --run) RUN=$2; shift 2 ;;
    --export) EXPORT=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REF=$DATA/hg19_ref_debian
GENOMES=(--genome "$REF/vt-examples.20.fa.gz" --genome "$REF/smalt-examples.hs37chrXtrunc.fa.gz")
if [ "$SMOKE" = 1 ]; then
  RUN=${RUN:-runs/brain/smoke}
  "$PY" research/brain/prepare.py "${GENOMES[@]}" --peaks "$DATA/hg19_nott_brain" \
    --out "$RUN/index.npz" --train-regions X:2700001-6000000 \
    --valid-regions 20:30000001-31000000 --test-regions 20:31000001-32500000
  "$PY" research/brain/train.py --index "$RUN/index.npz" --out "$RUN" --device "$DEVICE" \
    --epochs 1 --max-train 1500 --channels 32 32 32 --hidden 32 \
    --export "$RUN/repo/brain-hg19/1" "${EXTRA[@]}"
  exit 0
fi
RUN=${RUN:-runs/brain/$DEVICE}
# The brain-hg19 v2 recipe (best of the H100 sweep, docs/gpu/brain-hg19-v2/README.md): train on
# chrX + chr20:1-20M, validate on chr20:20M-29.5M, test on the chr20 q-arm; 2 negatives/positive.
"$PY" research/brain/prepare.py "${GENOMES[@]}" --peaks "$DATA/hg19_nott_brain" --out "$RUN/index.npz" \
  --neg-ratio 2 --train-regions X 20:1-20000000 --valid-regions 20:20000001-29500000 \
  --test-regions 20:29500001-63025520
"$PY" research/brain/train.py --index "$RUN/index.npz" --out "$RUN" --device "$DEVICE" \
  --lr 3e-4 --dropout 0.5 --weight-decay 1e-4 --patience 8 --epochs 60 \
  --export "$EXPORT" "${EXTRA[@]}"
echo "run dir: $RUN  model: $EXPORT/model.onnx"
