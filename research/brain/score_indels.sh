#!/usr/bin/env bash
# Score the 194 real chr20 indels with brain-hg19 through the real service: `varfx serve` on the
# GRCh37 chr20 reference + `varfx score` (every record out), then compare with the direct ONNX
# Runtime scores of research/brain/score_indels.py.
#
#   research/brain/score_indels.sh [--data ../shared/data/real] [--repo models] [--out runs/brain/indels]
#                                 [--port 50761]
set -euo pipefail
cd "$(dirname "$0")/../.."
VARFX=${VARFX:-.venv/bin/varfx}
PY=${PYTHON:-.venv/bin/python}
DATA=../shared/data/real
REPO=models
OUT=runs/brain/indels
PORT=50761
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REF=$DATA/hg19_ref_debian/vt-examples.20.fa.gz
VCF=$DATA/hg19_ref_debian/vt-examples.normalize_IN.chr20_indels.vcf.gz
mkdir -p "$OUT"
"$VARFX" serve --model-repo "$REPO" --genome "$REF" --host 127.0.0.1 --port "$PORT" \
  --metrics-port -1 > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  "$VARFX" health --server "127.0.0.1:$PORT" > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/serve.log" >&2; exit 1; }
  sleep 1
done
"$VARFX" score --server "127.0.0.1:$PORT" --model brain-hg19 --no-progress \
  -o "$OUT/indels.varfx.tsv" "$VCF"
"$VARFX" score --server "127.0.0.1:$PORT" --model brain-hg19 --no-progress \
  -o "$OUT/indels.varfx.vcf" "$VCF"
"$PY" research/brain/score_indels.py --model "$REPO/brain-hg19/$(ls "$REPO/brain-hg19" | grep -E '^[0-9]+$' | sort -n | tail -1)/model.onnx" \
  --genome "$REF" --vcf "$VCF" --out "$OUT/indels.direct.tsv" --top 10
echo "records in: $(zcat -f "$VCF" | grep -vc '^#')  VCF records out: $(grep -vc '^#' "$OUT/indels.varfx.vcf")"
