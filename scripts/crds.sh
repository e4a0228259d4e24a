#!/usr/bin/env bash
# scripts/crds.sh NAME - print the directory of a pinned operator's CRDs, downloading them once.
#
#   scripts/crds.sh external-secrets    # -> ~/.cache/optiinfra/tools/crds/external-secrets-v1.3.2
#
# The CRDs come from the operator's Go module at the pinned version, through the Go module
# proxy (`go mod download -json MODULE@VERSION`): its config/crds/bases/<group>_*.yaml are
# copied into ${OPTIINFRA_TOOLS_CACHE:-$HOME/.cache/optiinfra/tools}/crds/<name>-<version>/
# (outside the repository). A cached copy is printed without running `go`, so a second run
# needs no network. Only the path goes to stdout; progress and errors go to stderr.
#
# To add an operator, add one row: NAME MODULE VERSION GROUP (the CRDs' API group).
set -euo pipefail

CRDS_TABLE='
# name             module                                          version  group
external-secrets   github.com/external-secrets/external-secrets    v1.3.2   external-secrets.io
'

die() {
	printf 'crds.sh: error: %s\n' "$*" >&2
	exit 1
}

known() { printf '%s\n' "$CRDS_TABLE" | awk '$1 !~ /^#/ && NF { printf "%s%s", sep, $1; sep=", " }'; }

[[ $# -eq 1 && -n $1 && $1 != -* ]] || die "usage: scripts/crds.sh NAME (one of: $(known))"
want=$1

module='' version='' group=''
while read -r name mod ver grp _; do
	[[ -z ${name:-} || $name == \#* ]] && continue
	if [[ $name == "$want" ]]; then
		module=$mod version=$ver group=$grp
		break
	fi
done <<<"$CRDS_TABLE"
[[ -n $module ]] || die "unknown operator '$want'; known: $(known). Add a row (NAME MODULE VERSION GROUP) to scripts/crds.sh"

cache=${OPTIINFRA_TOOLS_CACHE:-$HOME/.cache/optiinfra/tools}/crds
dir=$cache/$want-$version
if [[ -f $dir/.complete ]]; then
	printf '%s\n' "$dir"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "the $want $version CRDs are not in $dir and downloading them needs Go, but 'go' is not on PATH. Install Go (https://go.dev/dl/) and rerun"

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.$want-$version.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
printf 'crds.sh: downloading %s@%s (go mod download) for its CRDs into %s\n' "$module" "$version" "$dir" >&2
start=$SECONDS
src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') ||
	die "go mod download $module@$version failed; it needs the Go module proxy ($(go env GOPROXY)) or a warm module cache"
[[ -n $src && -d $src/config/crds/bases ]] || die "$module@$version has no config/crds/bases (looked in '${src:-nothing}')"
shopt -s nullglob
files=("$src"/config/crds/bases/"$group"_*.yaml)
[[ ${#files[@]} -gt 0 ]] || die "$module@$version has no $group CRDs in config/crds/bases"
cp "${files[@]}" "$tmp/"
chmod 644 "$tmp"/*.yaml
printf '%s %s\n' "$module" "$version" >"$tmp/.complete"
# Publish in one step: an interrupted download never looks cached; a concurrent run that finished first wins.
chmod 755 "$tmp"
if ! mv -T "$tmp" "$dir" 2>/dev/null && [[ ! -f $dir/.complete ]]; then
	die "could not move the CRDs into $dir"
fi
printf 'crds.sh: %d CRDs of %s %s in %ss\n' "${#files[@]}" "$want" "$version" "$((SECONDS - start))" >&2
printf '%s\n' "$dir"
