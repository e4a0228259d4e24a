#!/usr/bin/env bash
# Deploy a stack with the real Pulumi engine:  scripts/deploy.sh STACK [pulumi up flags...]
#   scripts/deploy.sh dev            # the whole platform on the local Docker engine
#   scripts/deploy.sh dev --yes      # without the confirmation prompt
# Backend: PULUMI_BACKEND_URL or `pulumi login` if you chose one; otherwise a stack that
# targets Docker keeps its state on this machine (file://~/.pulumi-optiinfra, no account),
# and a Kubernetes stack stops and asks for a shared backend. Secrets are encrypted with
# PULUMI_CONFIG_PASSPHRASE (or the stack's secrets provider). Installs the pinned Pulumi
# CLI into ./.pulumi when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
stacks=$(ls Pulumi.*.yaml 2>/dev/null | sed 's/Pulumi\.\(.*\)\.yaml/\1/' | tr '\n' ' ')
[ $# -ge 1 ] || { echo "usage: scripts/deploy.sh STACK [pulumi up flags...]  (stacks: $stacks)" >&2; exit 2; }
STACK=$1; shift
PULUMI_VERSION=$(sed -n 's/^pulumi==//p' requirements.txt)
die() { echo "error: $*" >&2; exit 1; }
offline_hint="Without it you can still review the stack offline: venv/bin/python -m infra plan --stack $STACK"

[ -f "Pulumi.$STACK.yaml" ] || die "there is no Pulumi.$STACK.yaml (stacks: $stacks)"
. scripts/venv.sh
# Validate the stack's config first: a bad value stops here with one clear message.
"$PY" -m infra plan --stack "$STACK" >/dev/null

target=$("$PY" -c "import yaml,sys; print((yaml.safe_load(open('Pulumi.$STACK.yaml'))['config'] or {}).get('optiinfra:target','docker'))")
if [ "$target" = docker ]; then
  command -v docker >/dev/null || die "the Docker CLI is not installed; install Docker Engine (https://docs.docker.com/engine/install/). $offline_hint"
  docker info >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; start it (e.g. 'sudo systemctl start docker') or set DOCKER_HOST. $offline_hint"
else
  command -v kubectl >/dev/null && ! kubectl version --request-timeout=5s >/dev/null 2>&1 && \
    echo "warning: kubectl cannot reach the current cluster context; pulumi will use the same kubeconfig" >&2
fi

if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] && [ -z "${PULUMI_ACCESS_TOKEN:-}" ]; then
  die "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets in the local state; keep it somewhere safe"
fi

if command -v pulumi >/dev/null; then
  PULUMI=$(command -v pulumi)
elif [ -x .pulumi/bin/pulumi ]; then
  PULUMI=.pulumi/bin/pulumi
else
  echo "Pulumi CLI not found; installing v$PULUMI_VERSION into ./.pulumi" >&2
  command -v curl >/dev/null || die "the Pulumi CLI is missing and curl is not installed to fetch it; install Pulumi $PULUMI_VERSION (https://www.pulumi.com/docs/install/). $offline_hint"
  if ! curl -fsSL https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" --install-root "$PWD/.pulumi" --no-edit-path >&2; then
    die "could not download the Pulumi CLI $PULUMI_VERSION (no internet access?); install it by hand (https://www.pulumi.com/docs/install/). $offline_hint"
  fi
  PULUMI=.pulumi/bin/pulumi
fi
have=$("$PULUMI" version 2>/dev/null | sed 's/^v//')
[ "$have" = "$PULUMI_VERSION" ] || echo "note: using Pulumi CLI $have; the project pins $PULUMI_VERSION" >&2

if [ -z "${PULUMI_BACKEND_URL:-}" ] && ! "$PULUMI" whoami >/dev/null 2>&1; then
  if [ "$target" = docker ]; then
    export PULUMI_BACKEND_URL="file://$HOME/.pulumi-optiinfra"
    echo "note: no Pulumi backend chosen; keeping stack $STACK's state in $PULUMI_BACKEND_URL (this machine only)" >&2
  else
    die "stack $STACK targets Kubernetes and needs a shared backend: run 'pulumi login <url>' (e.g. s3://bucket, or Pulumi Cloud) or set PULUMI_BACKEND_URL; see docs/delivery.md"
  fi
fi

"$PULUMI" stack select --create "$STACK" >/dev/null
"$PULUMI" up --stack "$STACK" "$@"
echo "Credentials (generated or set with 'pulumi config set --secret'): $PULUMI stack output --stack $STACK --show-secrets credentials" >&2
echo "  (with kubernetes.externalSecrets that output names each credential's store and remote key instead: read the value from the store)" >&2
