# Sourced by the other scripts: make sure ./venv (the virtualenv Pulumi.yaml and the policy
# pack name) exists and holds the pinned requirements; sets $VENV and $PY.
VENV=${OPTIINFRA_VENV:-venv}
if [ ! -x "$VENV/bin/python" ]; then
  command -v python3 >/dev/null || { echo "error: python3 (3.11 or newer) is required" >&2; exit 1; }
  python3 -m venv "$VENV"
fi
# Reinstall when any requirements file changed since the last install.
want=$(cat requirements.txt requirements-dev.txt policies/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$VENV/.installed"
fi
PY="$VENV/bin/python"
