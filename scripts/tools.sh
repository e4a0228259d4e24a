#!/usr/bin/env bash
# scripts/tools.sh NAME - print the path of a pinned tool, building or installing it once when absent.
#
#   scripts/tools.sh actionlint              # -> ~/.cache/optiinfra/tools/actionlint-v1.7.12/actionlint
#   "$(scripts/tools.sh actionlint)" -version
#   scripts/tools.sh renovate-config-validator   # Renovate's own config validator (npm)
#
# The tool is built with `GOBIN=<dir> go install MODULE@VERSION` into
# ${OPTIINFRA_TOOLS_CACHE:-$HOME/.cache/optiinfra/tools}/<name>-<version>/ (outside the
# repository). A cached tool is printed without running `go` at all, so a second run needs
# no network. Only the path goes to stdout; progress and errors go to stderr.
#
# To add a tool, add one row to the table below: NAME MODULE VERSION. The binary is the
# last element of MODULE (a trailing major-version element such as /v2 skipped), which is
# what `go install` names it; a new VERSION gets a new cache directory.
#
# A MODULE of the form local:DIR is a main package of this repository (DIR, with its own
# go.mod requiring VERSION of the library it starts): `go build` there, cached like the
# others (tests/gotools/mockoidc: the OIDC provider the sign-in proxy's tests sign in at).
#
# A MODULE of the form npm:PACKAGE is an npm package instead: `npm install PACKAGE@VERSION`
# into <cache>/<name>-<version>/ (its own node_modules, outside the repository), and the
# path printed is its node_modules/.bin/NAME. Install scripts are not run (--ignore-scripts):
# the validator needs none, and the optional native modules fall back to plain JavaScript.
#
# Renovate is pinned to 39.264.1, the last release whose engines.node (^20.15.1 || ^22.11.0)
# admits the Node.js this machine and Debian's CI image have (20.x); Renovate 40 and later
# need Node 22.13+ (44.x: ^24.11.0). Move the pin when the CI's Node moves.
set -euo pipefail

TOOLS_TABLE='
# name         module                                          version
actionlint     github.com/rhysd/actionlint/cmd/actionlint      v1.7.12
kube-score     github.com/zegl/kube-score/cmd/kube-score       v1.20.0
promtool       github.com/prometheus/prometheus/cmd/promtool   v0.313.5
amtool         github.com/prometheus/alertmanager/cmd/amtool   v0.35.0
versitygw      github.com/versity/versitygw/cmd/versitygw      v1.8.0
blackbox_exporter  github.com/prometheus/blackbox_exporter         v0.25.0
kube-state-metrics  k8s.io/kube-state-metrics/v2                  v2.20.0
pushgateway    github.com/prometheus/pushgateway               v1.11.5
renovate-config-validator  npm:renovate                        39.264.1
oauth2-proxy   github.com/oauth2-proxy/oauth2-proxy/v7         v7.15.6
mockoidc       local:tests/gotools/mockoidc                    v0.0.0-20261103160011-e06ed0b7cb7f
'

die() {
	printf 'tools.sh: error: %s\n' "$*" >&2
	exit 1
}

known() { printf '%s\n' "$TOOLS_TABLE" | awk '$1 !~ /^#/ && NF { printf "%s%s", sep, $1; sep=", " }'; }

[[ $# -eq 1 && -n $1 && $1 != -* ]] || die "usage: scripts/tools.sh NAME (one of: $(known))"
want=$1

module='' version=''
while read -r name mod ver _; do
	[[ -z ${name:-} || $name == \#* ]] && continue
	if [[ $name == "$want" ]]; then
		module=$mod version=$ver
		break
	fi
done <<<"$TOOLS_TABLE"
[[ -n $module ]] || die "unknown tool '$want'; known tools: $(known). Add a row (NAME MODULE VERSION) to the table in scripts/tools.sh"

cache=${OPTIINFRA_TOOLS_CACHE:-$HOME/.cache/optiinfra/tools}
dir=$cache/$want-$version

if [[ $module == npm:* ]]; then
	package=${module#npm:}
	bin=$dir/node_modules/.bin/$want
	if [[ -x $bin ]]; then
		printf '%s\n' "$bin"
		exit 0
	fi
	command -v npm >/dev/null 2>&1 ||
		die "$want ($package $version) is not in $dir and installing it needs npm and Node.js, but 'npm' is not on PATH. Install Node.js 20.15+ (Debian: apt-get install nodejs npm) and rerun"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.$want-$version.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	printf 'tools.sh: installing %s %s (npm install %s@%s) into %s\n' "$want" "$version" "$package" "$version" "$dir" >&2
	start=$SECONDS
	printf '{"private": true}\n' >"$tmp/package.json"
	(cd "$tmp" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error --save-exact "$package@$version") >&2 ||
		die "npm install $package@$version failed (see above); it needs the npm registry ($(npm config get registry)) or a warm npm cache"
	[[ -x $tmp/node_modules/.bin/$want ]] || die "npm install $package@$version installed no $want in $tmp/node_modules/.bin"
	chmod 755 "$tmp"
	if ! mv -T "$tmp" "$dir" 2>/dev/null && [[ ! -x $bin ]]; then
		die "could not move the install into $dir"
	fi
	printf 'tools.sh: installed %s %s in %ss\n' "$want" "$version" "$((SECONDS - start))" >&2
	printf '%s\n' "$bin"
	exit 0
fi

# A Go build's two ends, shared by the local and the module builds: the cached binary $1
# under $dir printed (and done), else Go checked ($2: more of the fix) and a fresh temporary
# directory beside the cache made for the build ...
reuse_or_start() {
	if [[ -x $dir/$1 ]]; then
		printf '%s\n' "$dir/$1"
		exit 0
	fi
	command -v go >/dev/null 2>&1 ||
		die "$want $version is not in $dir and building it needs Go, but 'go' is not on PATH. Install Go (https://go.dev/dl/) and rerun$2"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.$want-$version.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	start=$SECONDS
}
# ... and the finished build published in one step: an interrupted build never looks cached,
# and a concurrent run that finished first simply wins.
publish() {
	chmod 755 "$tmp"
	if ! mv -T "$tmp" "$dir" 2>/dev/null && [[ ! -x $dir/$1 ]]; then
		die "could not move the build into $dir"
	fi
	printf 'tools.sh: built %s %s in %ss\n' "$want" "$version" "$((SECONDS - start))" >&2
	printf '%s\n' "$dir/$1"
	exit 0
}

if [[ $module == local:* ]]; then
	src=$(cd "$(dirname "$0")/.." && pwd)/${module#local:}
	reuse_or_start "$want" ""
	printf 'tools.sh: building %s %s (go build in %s) into %s\n' "$want" "$version" "$src" "$dir" >&2
	(cd "$src" && GOFLAGS=-mod=readonly go build -o "$tmp/$want" .) >&2 ||
		die "go build in $src failed (see above); it needs the Go module proxy ($(go env GOPROXY)) or a warm module cache"
	publish "$want"
fi

binary=${module##*/}
if [[ $binary =~ ^v[0-9]+$ ]]; then
	binary=${module%/*}
	binary=${binary##*/}
fi

reuse_or_start "$binary" ", or put a prebuilt $binary $version at $dir/$binary"
printf 'tools.sh: building %s %s (go install %s@%s) into %s\n' "$want" "$version" "$module" "$version" "$dir" >&2
# `go install MODULE@VERSION` refuses a module whose go.mod has replace directives
# (Prometheus' does). Such a tool is built inside its own module, downloaded to the module
# cache, where those directives apply as its authors intended.
# The same fallback serves a proxy that answers the module's version list with 403 (go install
# looks up the latest version for its deprecation notice; `go mod download MODULE@VERSION`
# does not need the list): the module may then be MODULE itself, so MODULE is tried first.
build_in_module() {
	local root=$module src='' rel
	while :; do
		src=$(go mod download -json "$root@$version" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || src=''
		[[ -n $src || $root != */*/* ]] && break
		root=${root%/*}
	done
	[[ -n $src ]] || die "no module of $module at $version could be downloaded"
	rel=.
	[[ $root != "$module" ]] && rel=./${module#"$root"/}
	printf 'tools.sh: building %s inside module %s@%s\n' "$rel" "$root" "$version" >&2
	(cd "$src" && GOWORK=off GOFLAGS=-mod=readonly go build -o "$tmp/$binary" "$rel") >&2
}
if ! GOBIN=$tmp go install "$module@$version" 2>"$tmp/.install.log"; then
	cat "$tmp/.install.log" >&2
	if grep -q -e 'replace directives' -e '@v/list: 403' "$tmp/.install.log"; then
		build_in_module || die "building $module@$version inside its module failed (see above)"
	else
		die "go install $module@$version failed (see above); it needs the Go module proxy ($(go env GOPROXY)) or a warm module cache"
	fi
fi
rm -f "$tmp/.install.log"
[[ -x $tmp/$binary ]] || die "go install $module@$version produced no $binary in $tmp (found: $(cd "$tmp" && printf '%s ' *))"
publish "$binary"
