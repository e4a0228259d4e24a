#!/usr/bin/env bash
# Make sure ./venv (the virtualenv Pulumi.yaml and the policy pack name) exists and holds the
# pinned requirements, the test tools too; reinstalls when a requirements file changed.
#   . scripts/venv.sh     # sourced by the other scripts (from the repository root): sets $VENV and $PY
#   scripts/venv.sh       # run on its own: the same, then says where the virtualenv is
# OPTIINFRA_VENV picks another directory. Sourced, it reads no arguments (a sourcing script's own
# are its business) and returns instead of exiting, so it never ends the shell that sourced it.
_venv_sourced=0
(return 0 2>/dev/null) && _venv_sourced=1

_venv_main() {
  local want
  VENV=${OPTIINFRA_VENV:-venv}
  if [ ! -x "$VENV/bin/python" ]; then
    command -v python3 >/dev/null || { echo "error: python3 (3.11 or newer) is required; install it and rerun" >&2; return 1; }
    echo "venv.sh: creating the virtualenv $VENV" >&2
    python3 -m venv "$VENV" || { echo "error: 'python3 -m venv $VENV' failed; install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv) and rerun" >&2; return 1; }
  fi
  # Reinstall when any requirements file changed since the last install.
  want=$(cat requirements.txt requirements-dev.txt policies/requirements.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
    echo "venv.sh: installing the pinned requirements and test tools into $VENV (a few minutes the first time)" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt ||
      { echo "error: pip could not install requirements-dev.txt into $VENV (above); PyPI must be reachable (or set PIP_INDEX_URL), then rerun" >&2; return 1; }
    echo "$want" > "$VENV/.installed"
  fi
  PY="$VENV/bin/python"
}

if [ "$_venv_sourced" = 1 ]; then
  unset _venv_sourced
  _venv_main || return 1
else
  set -euo pipefail
  usage="usage: scripts/venv.sh  (no arguments: creates or updates ./venv, or \$OPTIINFRA_VENV; the other scripts source it)"
  case $# in
    0) ;;
    *) if [ "$1" = -h ] || [ "$1" = --help ]; then echo "$usage"; exit 0; fi
       echo "error: scripts/venv.sh takes no arguments (got: $*). $usage" >&2; exit 2 ;;
  esac
  cd "$(dirname "$0")/.."
  _venv_main || exit 1
  echo "venv.sh: ready: $PWD/$PY (from the repository root: ${PY} -m infra --help)"
fi
