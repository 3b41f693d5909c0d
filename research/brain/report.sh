#!/usr/bin/env bash
# After a brain-hg19 model exists: k-mer baseline (if not done), CNN vs baseline table + ROC/PR
# plots, motif analysis, and the 194 real chr20 indels scored; outputs go to docs/brain/.
#
#   research/brain/report.sh [--run runs/brain/v2] [--model models/brain-hg19/2/model.onnx]
#                           [--data ../shared/data/real] [--docs docs/brain/v2]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
RUN=runs/brain/v2
MODEL=models/brain-hg19/2/model.onnx
DATA=../shared/data/real
DOCS=docs/brain/v2
while [ $# -gt 0 ]; do
  case "$1" in
    --run) RUN=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --docs) DOCS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
INDEX=$RUN/index.npz
REF=$DATA/hg19_ref_debian
# prepare.py is deterministic (seed 0): rebuilding the index gives train.sh's windows exactly
[ -f "$INDEX" ] || "$PY" research/brain/prepare.py --genome "$REF/vt-examples.20.fa.gz" \
  --genome "$REF/smalt-examples.hs37chrXtrunc.fa.gz" --peaks "$DATA/hg19_nott_brain" --out "$INDEX" \
  --neg-ratio 2 --train-regions X 20:1-20000000 --valid-regions 20:20000001-29500000 \
  --test-regions 20:29500001-63025520
mkdir -p "$DOCS"
[ -f "$RUN/kmer/summary.json" ] || "$PY" research/brain/baseline.py --index "$INDEX" --out "$RUN/kmer" \
  --C 0.01 --max-train 50000 --max-valid 2000
"$PY" research/brain/evaluate.py --index "$INDEX" --model "$MODEL" --baseline "$RUN/kmer" --out "$DOCS"
"$PY" research/brain/motifs.py --index "$INDEX" --model "$MODEL" --out "$DOCS"
"$PY" research/brain/score_indels.py --model "$MODEL" \
  --genome "$DATA/hg19_ref_debian/vt-examples.20.fa.gz" \
  --vcf "$DATA/hg19_ref_debian/vt-examples.normalize_IN.chr20_indels.vcf.gz" \
  --out "$RUN/indels.tsv" --top 10 | tee "$DOCS/indels_top.md"
