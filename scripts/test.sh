#!/usr/bin/env bash
# The README's test command: installs everything the tests need into .venv/ and runs the checks:
# ruff (lint + format), mypy, the stale-generated-code check, and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k windows).
. "$(dirname "$0")/_venv.sh"
# The CPU build of torch first, so that `varfx[train]` does not pull a CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[server,train,dev]"
echo "== ruff"
# (one command a line: under set -e a failure inside an && list would not stop the script)
ruff check .
ruff format --check .
echo "== mypy"; mypy varfx client server training
echo "== generated proto code"; python scripts/gen_proto.py --check
echo "== pytest"; python -m pytest -q "$@"
