#!/usr/bin/env bash
# Deploy a stack with the real Pulumi engine:  scripts/deploy.sh STACK [--dry-run] [pulumi up flags...]
#   scripts/deploy.sh dev              # the whole platform on the local Docker engine
#   scripts/deploy.sh dev --dry-run    # every check, then `pulumi preview` instead of `pulumi up`
#   scripts/deploy.sh prod --yes       # without the confirmation prompt
# Every prerequisite is checked before anything is downloaded or created, and the first one
# missing stops the script with one line and the fix (exit 1; a bad config value: exit 2):
#   1. the target answers: the Docker engine (Docker stacks); kubectl and the cluster of the
#      stack's kubeconfig context (Kubernetes stacks, unless they render YAML to a directory)
#   2. a backend is chosen: PULUMI_BACKEND_URL, `pulumi login` or PULUMI_ACCESS_TOKEN; with
#      none, a Docker stack keeps its state on this machine (file://~/.pulumi-optiinfra, no
#      account) and a Kubernetes stack stops and asks for a shared one
#   3. a passphrase encrypts the stack's secrets: PULUMI_CONFIG_PASSPHRASE or
#      PULUMI_CONFIG_PASSPHRASE_FILE (not needed with Pulumi Cloud or a `secretsprovider:`)
#   4. the stack fits its budget (`./optiinfra capacity --stack STACK` exits 0)
#   5. the policy pack passes, and every credential only you can set (the OIDC client secret)
#      is in the stack file (`./optiinfra check --stack STACK --deploy` exits 0)
# Then it installs the pinned Pulumi CLI into ./.pulumi when none is on PATH, selects (or
# creates) the stack and runs `pulumi up` (or `pulumi preview` with --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
stacks=$(ls Pulumi.*.yaml 2>/dev/null | sed 's/Pulumi\.\(.*\)\.yaml/\1/' | tr '\n' ' ')
usage="usage: scripts/deploy.sh STACK [--dry-run] [pulumi up flags...]  (stacks: ${stacks% })"
[ $# -ge 1 ] && [[ $1 != -* ]] || { echo "$usage" >&2; exit 2; }
STACK=$1; shift
dry_run=false
pulumi_args=()
for a in "$@"; do
  if [ "$a" = --dry-run ]; then dry_run=true; else pulumi_args+=("$a"); fi
done
PULUMI_VERSION=$(sed -n 's/^pulumi==//p' requirements.txt)
die() { echo "error: $*" >&2; exit 1; }
offline_hint="Meanwhile you can review the stack offline: ./optiinfra plan --stack $STACK"
file="Pulumi.$STACK.yaml"
[ -f "$file" ] || die "there is no $file (stacks: ${stacks% })"

# A value of the stack file, without the virtualenv: `top KEY` reads `  optiinfra:KEY: v`,
# `nested SECTION KEY` reads `    KEY: v` inside `  optiinfra:SECTION:`. (The offline
# commands below validate the whole file with the real loader.)
unquote() { sed -e 's/[[:space:]]#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//"; }
top() { sed -n "s/^[[:space:]]*optiinfra:$1:[[:space:]]*\(.*\)/\1/p" "$file" | head -n1 | unquote; }
nested() {
  awk -v sec="optiinfra:$1:" -v key="$2:" '
    /^[^[:space:]#]/ || /^  [^[:space:]#]/ { inside = ($1 == sec) ; next }
    inside && /^    [^[:space:]#]/ && $1 == key { sub(/^[[:space:]]*[^:]+:[[:space:]]*/, ""); print; exit }
  ' "$file" | unquote
}
target=$(top target)
target=${target:-docker}

# 1. The target answers.
if [ "$target" = docker ]; then
  command -v docker >/dev/null ||
    die "the Docker CLI is not installed; install Docker Engine (https://docs.docker.com/engine/install/). $offline_hint"
  docker info >/dev/null 2>&1 ||
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}; start it (e.g. 'sudo systemctl start docker') or set DOCKER_HOST. $offline_hint"
elif [ -z "$(nested kubernetes renderYamlToDirectory)" ]; then
  context=$(nested kubernetes context)
  ctx_args=(); [ -z "$context" ] || ctx_args=(--context "$context")
  where="the current kubeconfig context"; [ -z "$context" ] || where="the kubeconfig context '$context'"
  command -v kubectl >/dev/null ||
    die "kubectl is not installed, so $where cannot be checked; install it (https://kubernetes.io/docs/tasks/tools/) and point your kubeconfig at the cluster. $offline_hint"
  kubectl "${ctx_args[@]}" version --request-timeout=5s >/dev/null 2>&1 ||
    die "no Kubernetes API server answers in $where ('kubectl ${ctx_args[*]}${ctx_args[*]:+ }version' fails); fix KUBECONFIG or the context ('kubectl config use-context NAME', or optiinfra:kubernetes.context in $file). $offline_hint"
fi

# 2. A backend is chosen. Read where `pulumi login` records it, so that no CLI is needed yet.
creds="${PULUMI_HOME:-$HOME/.pulumi}/credentials.json"
logged_in=$(sed -n 's/.*"current"[[:space:]]*:[[:space:]]*"\([^"]\{1,\}\)".*/\1/p' "$creds" 2>/dev/null | head -n1 || true)
if [ -z "${PULUMI_BACKEND_URL:-}" ] && [ -z "$logged_in" ] && [ -z "${PULUMI_ACCESS_TOKEN:-}" ]; then
  if [ "$target" = docker ]; then
    export PULUMI_BACKEND_URL="file://$HOME/.pulumi-optiinfra"
    echo "note: no Pulumi backend chosen; keeping stack $STACK's state in $PULUMI_BACKEND_URL (this machine only)" >&2
  else
    die "stack $STACK targets Kubernetes and needs a shared backend: run 'pulumi login <url>' (e.g. s3://bucket, or Pulumi Cloud) or set PULUMI_BACKEND_URL; see docs/delivery.md"
  fi
fi

# 3. A passphrase (or another secrets provider) encrypts the stack's secrets.
provider=$(sed -n 's/^secretsprovider:[[:space:]]*//p' "$file" | unquote)
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] &&
  [ -z "${PULUMI_ACCESS_TOKEN:-}" ] && { [ -z "$provider" ] || [ "$provider" = passphrase ]; }; then
  die "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets in the state; keep it somewhere safe"
fi

# 4. and 5. The stack fits and passes the policy pack (this sets up ./venv the first time).
offline() { # NAME [FLAGS]: run ./optiinfra NAME --stack STACK [FLAGS]; stop on exit 2 (a bad value) with its line
  local rc=0
  out=$(./optiinfra "$1" --stack "$STACK" "${@:2}" 2>&1) || rc=$?
  if [ "$rc" -ge 2 ]; then
    printf '%s\n' "$out" | grep -m1 '^error:' >&2 || printf '%s\n' "$out" | tail -n 5 >&2
    exit "$rc"
  fi
  return "$rc"
}
stopped="nothing was downloaded or created"
if ! offline capacity; then
  # capacity's own lines name the key and the fix: print them as they are, then what this did.
  if printf '%s\n' "$out" | grep '^error:' >&2; then
    echo "deploy.sh: stopped: stack $STACK does not fit its budget (above; the whole table: ./optiinfra capacity --stack $STACK); $stopped" >&2
    exit 1
  fi
  die "stack $STACK does not fit its budget. Fix: raise optiinfra:budget in $file or lower requests; details: ./optiinfra capacity --stack $STACK"
fi
if ! offline check --deploy; then
  why=$(printf '%s\n' "$out" | grep -m1 '^FAILED' || echo 'FAILED')
  die "stack $STACK fails the policy pack ($why). Fix each violation './optiinfra check --stack $STACK' lists, then rerun"
fi

# Everything is in place: only now download the CLI and create the stack.
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
case ${PULUMI_BACKEND_URL:-} in
  "file://$HOME/.pulumi-optiinfra") mkdir -p "$HOME/.pulumi-optiinfra" ;;
esac

"$PULUMI" stack select --create "$STACK" >/dev/null
if $dry_run; then
  "$PULUMI" preview --stack "$STACK" "${pulumi_args[@]}"
  echo "dry run: every check passed and the preview is above; nothing was deployed. Deploy: scripts/deploy.sh $STACK" >&2
  exit 0
fi
"$PULUMI" up --stack "$STACK" "${pulumi_args[@]}"
echo "Credentials (generated or set with 'pulumi config set --secret'): $PULUMI stack output --stack $STACK --show-secrets credentials" >&2
echo "  (with kubernetes.externalSecrets that output names each credential's store and remote key instead: read the value from the store)" >&2
