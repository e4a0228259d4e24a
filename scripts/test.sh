#!/usr/bin/env bash
# The one test command: set up the virtualenv (if needed), then lint, type-check and test.
#   scripts/test.sh            # everything
#   scripts/test.sh -k docker  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$PY" -m pytest "$@"
