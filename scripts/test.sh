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
echo "== actionlint"
# The workflows in .github/workflows, with the pinned actionlint (built once into a cache
# outside the repository by scripts/tools.sh; it needs Go the first time).
actionlint=$(scripts/tools.sh actionlint)
command -v shellcheck >/dev/null ||
  echo "note: shellcheck is not installed, so actionlint skips the workflows' run: scripts (apt-get install shellcheck)"
(shopt -s nullglob; "$actionlint" -no-color .github/workflows/*.yml .github/workflows/*.yaml)
echo "== pytest"
"$PY" -m pytest "$@"
