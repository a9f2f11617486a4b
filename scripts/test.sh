#!/usr/bin/env bash
# The test command: lint (ruff), types (mypy), then the whole pytest suite against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
echo "== ruff"; "$PY" -m ruff check .
echo "== mypy"; "$PY" -m mypy edge_node control_plane bench
echo "== pytest"; "$PY" -m pytest -q -ra "$@"
