# Sourced by the other scripts: make sure ./venv (the virtualenv Pulumi.yaml names)
# exists and holds the pinned requirements; sets $PY.
VENV=${OPTIINFRA_VENV:-venv}
if [ ! -x "$VENV/bin/python" ]; then
  command -v python3 >/dev/null || { echo "error: python3 (3.11 or newer) is required" >&2; exit 1; }
  python3 -m venv "$VENV"
fi
if ! cmp -s requirements-dev.txt "$VENV/.installed-requirements" 2>/dev/null || \
   ! cmp -s requirements.txt "$VENV/.installed-runtime" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt "$VENV/.installed-requirements"
  cp requirements.txt "$VENV/.installed-runtime"
fi
PY="$VENV/bin/python"
