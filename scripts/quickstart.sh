#!/usr/bin/env bash
# Set tracker up from a fresh clone and run the main job on the embedded default: execute
# notebooks/quickstart.ipynb headless in a real Jupyter kernel and print what it stored.
# TRACKER_HOME (default ~/.tracker) says where the SQLite file and artifacts go.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[notebook]"
exec .venv/bin/python scripts/quickstart.py "$@"
