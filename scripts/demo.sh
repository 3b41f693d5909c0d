#!/usr/bin/env bash
# The README's first command: set up .venv/ with the server extra (no torch), then simulate a
# genome, serve the default model, score the simulated VCF and show the top variants.
# Extra arguments go to scripts/demo.py (e.g. --port 50051, --out demo-out).
. "$(dirname "$0")/_venv.sh"
echo "== installing varfx[server] into .venv"
python -m pip install -q -e ".[server]"
exec python scripts/demo.py "$@"
