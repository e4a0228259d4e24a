#!/usr/bin/env bash
# Rotate one client credential of PostgreSQL or Redis without an outage (docs/credentials.md):
#   printf %s "$NEW" | scripts/rotate.sh STACK KEY [pulumi up flags...]
#   e.g. openssl rand -base64 30 | tr -d '\n' | scripts/rotate.sh prod postgresOrchestratorPassword --yes
# The new value comes on stdin (never argv). Exactly two `pulumi up` runs (scripts/deploy.sh):
#   1. the new value beside the old one (PostgreSQL: on the client's other login role, slot a/b;
#      Redis: a second password of its ACL user), applied in the running store by the rotation Job,
#      then the consumers roll to it;
#   2. once every consumer runs it (the first run waited for their rollouts), the old value retired.
# If the first run fails, nothing is retired: fix the cause and run the script again with the same value.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: printf %s NEW | scripts/rotate.sh STACK KEY [pulumi up flags...]" >&2; exit 2; }
STACK=$1 KEY=$2; shift 2
case $KEY in
  postgres*Password) slotted=true ;;
  redis*Password) slotted=false ;;
  *) echo "rotate.sh: error: $KEY is not a client credential of PostgreSQL or Redis; fix: use a key from docs/settings.md (postgres<Client>Password, redis<Client>Password)" >&2; exit 2 ;;
esac
[ ! -t 0 ] || { echo "rotate.sh: error: no value on stdin; fix: printf %s \"\$NEW\" | scripts/rotate.sh $STACK $KEY" >&2; exit 2; }
value=$(cat)
[ ${#value} -ge 12 ] || { echo "rotate.sh: error: the value on stdin is shorter than 12 characters; fix: pipe a longer one" >&2; exit 2; }
PULUMI=${PULUMI:-pulumi}
command -v "$PULUMI" >/dev/null || PULUMI=./.pulumi/bin/pulumi
slot=$("$PULUMI" config get --stack "$STACK" --path "optiinfra:rotation.$KEY.slot" 2>/dev/null || echo a)
next=a
if $slotted; then [ "$slot" = a ] && next=b; fi
# ./optiinfra's checks refuse a bad key before anything changes.
./optiinfra diff --stack "$STACK" --set "rotation.$KEY={slot: $next, previous: keep}" >/dev/null
printf %s "$value" | "$PULUMI" config set --stack "$STACK" --secret "optiinfra:$KEY"
"$PULUMI" config set --stack "$STACK" --path "optiinfra:rotation.$KEY.slot" "$next"
"$PULUMI" config set --stack "$STACK" --path "optiinfra:rotation.$KEY.previous" keep
echo "rotate.sh: phase 1 of 2: the new value beside the old one, the consumers rolled" >&2
scripts/deploy.sh "$STACK" "$@"
"$PULUMI" config set --stack "$STACK" --path "optiinfra:rotation.$KEY.previous" retire
echo "rotate.sh: phase 2 of 2: every consumer runs the new value; the old one is retired" >&2
scripts/deploy.sh "$STACK" "$@"
