#!/usr/bin/env bash
# The one test command: set up the virtualenv (if needed), then lint, type-check and test.
#   scripts/test.sh            # everything
#   scripts/test.sh -k docker  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OPTIINFRA_VENV:-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! cmp -s requirements-dev.txt "$VENV/.installed-requirements" 2>/dev/null || \
   ! cmp -s requirements.txt "$VENV/.installed-runtime" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt "$VENV/.installed-requirements"
  cp requirements.txt "$VENV/.installed-runtime"
fi
echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/python" -m pytest "$@"
