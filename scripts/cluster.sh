#!/usr/bin/env bash
# scripts/cluster.sh - build a real Kubernetes control plane (and kwok) without internet access.
#
# Prints, as the LAST line on stdout, a directory that holds kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd and kwok; its sibling ../stages holds kwok's stage files (node, pod, volume) from the kwok module.
# Everything else (progress, timings, errors) goes to stderr. tests/cluster.py starts a throwaway cluster from it.
#
# The binaries are built with plain `go` commands from modules published on the Go module proxy into
#   ${OPTIINFRA_CLUSTER_CACHE:-$HOME/.cache/optiinfra/cluster}/k8s-<v>_etcd-<v>_kwok-<v>/bin
# A complete cache is reused without any network access or `go` call.
#
# Environment:
#   OPTIINFRA_CLUSTER_CACHE     cache root (default $HOME/.cache/optiinfra/cluster)
#   OPTIINFRA_CLUSTER_REBUILD=1 rebuild even if the cache is complete
#
# Recipe (each binary gets a throwaway module under mktemp -d, because the upstream go.mod files carry `replace`
# lines with local paths, so `go install pkg@version` refuses them):
#   - k8s.io/kubernetes@K8S_VERSION replaces every k8s.io/* staging module with ./staging/src/...; the throwaway module
#     replaces each with its published version of the same release (STAGING_VERSION), except where the proxy here does
#     not serve that exact version (STAGING_NEAREST: the nearest served patch of the same minor) and the sample
#     modules no command imports (STAGING_UNUSED). One `go build` builds the four commands (shared packages once).
#   - go.etcd.io/etcd/server/v3@ETCD_VERSION replaces its sibling modules with ../api, ../pkg, ...; the throwaway
#     module pins each to the version the server's go.mod requires (the same release).
#   - sigs.k8s.io/kwok@KWOK_VERSION has no replace lines; its cmd/kwok is built the same way, and its stage files
#     (kustomize/stage/{node,pod,volume}) are copied from the module cache.
set -euo pipefail

# --------------------------------------------------------------------------------------------------------------------
# Pinned versions
# --------------------------------------------------------------------------------------------------------------------
# The manifests target Kubernetes 1.31 (K8S_VERSION in infra/backends/kubernetes.py); v1.31.14 is the newest 1.31
# patch the proxy serves (it serves v1.31.0 and v1.31.14 of k8s.io/kubernetes).
K8S_VERSION=v1.31.14
STAGING_VERSION=v0.31.14
# Staging modules whose v0.31.14 the proxy refuses (403), each pinned to the nearest served patch of 1.31. All four
# are type/config or helper libraries: k8s.io/kube-scheduler (scheduler config API), k8s.io/kube-controller-manager
# (controller-manager config API), k8s.io/endpointslice (the EndpointSlice reconciler library), k8s.io/kube-proxy
# (kube-proxy config API, imported by none of the four commands).
STAGING_NEAREST="k8s.io/endpointslice=v0.31.13 k8s.io/kube-controller-manager=v0.31.13 k8s.io/kube-scheduler=v0.31.13 k8s.io/kube-proxy=v0.31.11"
# Not served at any 1.31 version, and imported by none of the four commands: left unreplaced (tidy proves unused).
STAGING_UNUSED="k8s.io/sample-apiserver k8s.io/sample-cli-plugin k8s.io/sample-controller"
# etcd 3.5 is the series Kubernetes 1.31 supports; v3.5.35 is the newest 3.5 patch served (its go.mod says go 1.26.0).
ETCD_VERSION=v3.5.35
# kwok v0.8.0 is the first release whose module ships volume stages (kustomize/stage/volume); go 1.26.0.
KWOK_VERSION=v0.8.0
GO_MIN=1.26.0
# Bump when the build recipe below changes, so existing caches get rebuilt.
RECIPE_REV=2

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
	printf 'cluster.sh: ERROR: %s\n' "$*" >&2
	exit 1
}

cache_root=${OPTIINFRA_CLUSTER_CACHE:-$HOME/.cache/optiinfra/cluster}
cluster_dir="$cache_root/k8s-${K8S_VERSION#v}_etcd-${ETCD_VERSION#v}_kwok-${KWOK_VERSION#v}"
bin_dir="$cluster_dir/bin"
stages_dir="$cluster_dir/stages"
stamp="$cluster_dir/.complete"
want_stamp="recipe=$RECIPE_REV k8s=$K8S_VERSION staging=$STAGING_VERSION nearest=${STAGING_NEAREST// /,} etcd=$ETCD_VERSION kwok=$KWOK_VERSION"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)
# kwok's "fast" stages (kustomize/stage/<kind>/fast) plus the node lease heartbeat, as kwokctl uses them by default;
# pod/general has files of the same names that wait for init stages, so the paths are explicit.
stage_paths=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
	pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml
	volume/fast/storage-class.yaml volume/fast/pv-bind.yaml volume/fast/pv-delete.yaml
	volume/fast/pvc-provision.yaml volume/fast/pvc-delete.yaml)
stage_files=("${stage_paths[@]##*/}")

cache_ok() {
	[[ ${OPTIINFRA_CLUSTER_REBUILD:-} != 1 ]] || return 1
	[[ -f $stamp && "$(cat "$stamp")" == "$want_stamp" ]] || return 1
	local f
	for f in "${binaries[@]}"; do
		[[ -x $bin_dir/$f ]] || return 1
	done
	for f in "${stage_files[@]}"; do
		[[ -f $stages_dir/$f ]] || return 1
	done
}

if cache_ok; then
	log "cached control plane: $bin_dir"
	printf '%s\n' "$bin_dir"
	exit 0
fi

mkdir -p "$cache_root" || die "cannot create cache directory $cache_root"
# One builder at a time per cache root; others wait, then find the cache complete.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	log "another control-plane build holds $cache_root/.lock; waiting for it"
	flock 9
fi
if cache_ok; then
	log "cached control plane (built by a concurrent run): $bin_dir"
	printf '%s\n' "$bin_dir"
	exit 0
fi

# --------------------------------------------------------------------------------------------------------------------
# Toolchain
# --------------------------------------------------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		die "'go' was not found on PATH (nor /usr/local/go/bin/go). Building the control plane needs Go >= $GO_MIN and access to the Go module proxy."
	fi
fi
go_ver=$(go env GOVERSION 2>/dev/null) || die "'go env GOVERSION' failed; is $(command -v go) a working Go toolchain?"
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }
go_num=${go_ver#go}
go_num=${go_num%%[-+ ]*}
version_ge "$go_num" "$GO_MIN" ||
	die "Go is too old: found $go_ver at $(command -v go), need >= go$GO_MIN (go.etcd.io/etcd/server/v3@$ETCD_VERSION and sigs.k8s.io/kwok@$KWOK_VERSION declare it)."
command -v flock >/dev/null || die "flock (util-linux) is required"

# Two cores here: at most two compile jobs; -p also bounds the linker jobs of a multi-command build.
jobs=${OPTIINFRA_BUILD_JOBS:-$(($(nproc) < 2 ? 1 : 2))}
export GOFLAGS="-mod=mod -buildvcs=false -p=$jobs"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export CGO_ENABLED=${CGO_ENABLED:-0}
log "building the control plane with $go_ver (GOPROXY=$(go env GOPROXY), -p=$jobs) into $bin_dir"

work=$(mktemp -d "${TMPDIR:-/tmp}/optiinfra-cluster-build.XXXXXX")
out=""
stages_out=""
cleanup() { rm -rf "$work" ${out:+"$out"} ${stages_out:+"$stages_out"}; }
trap cleanup EXIT

# module_info MODULE@VERSION -> prints the module's Dir; on failure stores the error and returns 1
module_info() {
	local res
	if res=$(cd "$work" && go mod download -json "$1" 2>&1); then
		local dir
		dir=$(printf '%s\n' "$res" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
		if [[ -n $dir && -d $dir ]]; then
			printf '%s\n' "$dir"
			return 0
		fi
	fi
	local err
	err=$(printf '%s\n' "$res" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' | head -n1 |
		sed -e 's/\\n\\t/ /g' -e 's/\\n/ /g' -e 's/\\"/"/g')
	[[ -n $err ]] || err=$res
	printf '%s\n' "$err" >"$work/last-error"
	return 1
}
classify_error() { # reads $work/last-error
	local e
	e=$(cat "$work/last-error" 2>/dev/null || true)
	if grep -qiE 'dial tcp|no such host|i/o timeout|connection refused|network is unreachable|TLS handshake|proxyconnect|unexpected EOF|disabled by GOPROXY=off' <<<"$e"; then
		echo "the Go module proxy is unreachable (GOPROXY=$(go env GOPROXY)): $e"
	else
		echo "$e"
	fi
}
need_module() { # MODULE@VERSION -> Dir, or die
	module_info "$1" || die "cannot download $1: $(classify_error)"
}

now() { date +%s; }
t_all=$(now)
timings=()
out="$cluster_dir/bin.new.$$"
stages_out="$cluster_dir/stages.new.$$"
rm -rf "$out" "$stages_out"
mkdir -p "$out" "$stages_out"

tidy_module() { # name dir
	local name=$1 dir=$2
	log "[$name] resolving dependencies (go mod tidy)"
	if ! (cd "$dir" && go mod tidy) >"$work/$name.tidy.log" 2>&1; then
		grep -v 'go: downloading' "$work/$name.tidy.log" | tail -n 30 | sed 's/^/    /' >&2
		grep -v 'go: downloading' "$work/$name.tidy.log" | tail -n 5 >"$work/last-error"
		die "[$name] go mod tidy failed: $(classify_error)"
	fi
}
build_into() { # name dir ldflags pkg...  (-o $out/ for several packages, -o $out/name for one)
	local name=$1 dir=$2 ldflags=$3 rc=0 target
	shift 3
	if [[ $# -gt 1 ]]; then target="$out/"; else target="$out/$name"; fi
	log "[$name] go build -trimpath $*"
	(cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$target" "$@") >"$work/$name.build.log" 2>&1 || rc=$?
	if [[ $rc -ne 0 ]]; then
		tail -n 40 "$work/$name.build.log" | sed 's/^/    /' >&2
		die "[$name] go build failed (exit $rc)"
	fi
}
tools_go() { # dir import...
	local dir=$1 p
	shift
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
		printf ')\n'
	} >"$dir/tools.go"
}

# --------------------------------------------------------------------------------------------------------------------
# 1. Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# --------------------------------------------------------------------------------------------------------------------
t0=$(now)
k8s_dir=$(need_module "k8s.io/kubernetes@$K8S_VERSION")
staging=$(sed -n '/^replace (/,/^)/p' "$k8s_dir/go.mod" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}')
[[ -n $staging ]] || die "no ./staging replace lines found in $k8s_dir/go.mod; the layout changed, update cluster.sh"
mkdir -p "$work/k8s"
{
	printf 'module optiinfra.local/cluster/kubernetes\n\n'
	# Kubernetes' own language version, so GODEBUG defaults match an upstream build of this release.
	printf '%s\n\n' "$(grep -m1 '^go ' "$k8s_dir/go.mod")"
	printf 'require k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
	printf '// k8s.io/kubernetes replaces these with ./staging/src/...; use the published module of the same release.\n'
} >"$work/k8s/go.mod"
staging_used=()
for m in $staging; do
	if [[ " $STAGING_UNUSED " == *" $m "* ]]; then
		continue
	fi
	v=$STAGING_VERSION
	for pair in $STAGING_NEAREST; do
		[[ ${pair%%=*} == "$m" ]] && v=${pair#*=}
	done
	if [[ $v != "$STAGING_VERSION" ]]; then
		log "[kubernetes] NOTE: $m@$STAGING_VERSION is not served here; using $m@$v (nearest served 1.31 patch)"
	fi
	printf 'replace %s => %s %s\n' "$m" "$m" "$v" >>"$work/k8s/go.mod"
	staging_used+=("$m@$v")
done
k8s_cmds=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
tools_go "$work/k8s" "${k8s_cmds[@]}"
tidy_module kubernetes "$work/k8s"
k8s_minor=${K8S_VERSION#v}
k8s_major=${k8s_minor%%.*}
k8s_minor=${k8s_minor#*.}
k8s_minor=${k8s_minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
build_into kubernetes "$work/k8s" "$k8s_ldflags" "${k8s_cmds[@]}"
timings+=("kubernetes=$(($(now) - t0))s")

# --------------------------------------------------------------------------------------------------------------------
# 2. etcd
# --------------------------------------------------------------------------------------------------------------------
t0=$(now)
etcd_dir=$(need_module "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
[[ -f $etcd_dir/main.go ]] || die "go.etcd.io/etcd/server/v3@$ETCD_VERSION has no main.go; the layout changed, update cluster.sh"
mkdir -p "$work/etcd"
{
	printf 'module optiinfra.local/cluster/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n\n' "$ETCD_VERSION"
	printf '// go.etcd.io/etcd/server/v3 replaces these with ../api, ../pkg, ...; pin the published module it requires.\n'
} >"$work/etcd/go.mod"
for m in $(awk '$2 == "=>" && $3 ~ /^\.\.\// {print $1}' "$etcd_dir/go.mod"); do
	v=$(awk -v m="$m" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$etcd_dir/go.mod")
	[[ -n $v ]] || die "go.etcd.io/etcd/server/v3@$ETCD_VERSION replaces $m but requires no version of it; update cluster.sh"
	printf 'replace %s => %s %s\n' "$m" "$m" "$v" >>"$work/etcd/go.mod"
done
tools_go "$work/etcd" go.etcd.io/etcd/server/v3
tidy_module etcd "$work/etcd"
build_into etcd "$work/etcd" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" go.etcd.io/etcd/server/v3
timings+=("etcd=$(($(now) - t0))s")

# --------------------------------------------------------------------------------------------------------------------
# 3. kwok and its stage files
# --------------------------------------------------------------------------------------------------------------------
t0=$(now)
kwok_dir=$(need_module "sigs.k8s.io/kwok@$KWOK_VERSION")
if grep -qE '=>' "$kwok_dir/go.mod"; then
	die "sigs.k8s.io/kwok@$KWOK_VERSION now has replace lines; repeat them in cluster.sh"
fi
mkdir -p "$work/kwok"
printf 'module optiinfra.local/cluster/kwok\n\ngo 1.26\n\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" >"$work/kwok/go.mod"
tools_go "$work/kwok" sigs.k8s.io/kwok/cmd/kwok
tidy_module kwok "$work/kwok"
build_into kwok "$work/kwok" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" sigs.k8s.io/kwok/cmd/kwok
for f in "${stage_paths[@]}"; do
	[[ -f $kwok_dir/kustomize/stage/$f ]] ||
		die "stage file kustomize/stage/$f not found in $kwok_dir; the module layout changed, update cluster.sh"
	install -m 0644 "$kwok_dir/kustomize/stage/$f" "$stages_out/${f##*/}"
done
timings+=("kwok=$(($(now) - t0))s")

# --------------------------------------------------------------------------------------------------------------------
# 4. Smoke test, manifest, swap into place
# --------------------------------------------------------------------------------------------------------------------
for b in "${binaries[@]}"; do
	[[ -x $out/$b ]] || die "$b was not built"
done
got_apiserver=$("$out/kube-apiserver" --version 2>&1) || die "built kube-apiserver does not run: $got_apiserver"
# Whole output first, then its first line: `| head -n1` under pipefail fails when the command gets SIGPIPE.
got_kubectl=$("$out/kubectl" version --client 2>&1) || die "built kubectl does not run: $got_kubectl"
got_kubectl=${got_kubectl%%$'\n'*}
got_etcd=$("$out/etcd" --version 2>&1) || die "built etcd does not run: $got_etcd"
got_etcd=${got_etcd%%$'\n'*}
"$out/kwok" --help >/dev/null 2>&1 || die "built kwok does not run ($out/kwok --help failed)"
got_kwok=$KWOK_VERSION
[[ $got_apiserver == *"$K8S_VERSION"* ]] || die "kube-apiserver reports '$got_apiserver', expected $K8S_VERSION"

cat >"$cluster_dir/manifest.txt" <<EOF
# Control plane built by scripts/cluster.sh on $build_date with $go_ver (-trimpath, CGO_ENABLED=$CGO_ENABLED)
kube-apiserver kube-controller-manager kube-scheduler kubectl  k8s.io/kubernetes@$K8S_VERSION (reports: $got_apiserver; $got_kubectl)
  staging modules: ${staging_used[*]}
etcd   go.etcd.io/etcd/server/v3@$ETCD_VERSION (reports: $got_etcd)
kwok   sigs.k8s.io/kwok@$KWOK_VERSION (reports: $got_kwok); stages from kustomize/stage: ${stage_paths[*]}
build seconds: total=$(($(now) - t_all)) ${timings[*]}
EOF
rm -rf "$bin_dir" "$stages_dir"
mv "$stages_out" "$stages_dir"
stages_out=""
mv "$out" "$bin_dir"
out=""
printf '%s\n' "$want_stamp" >"$stamp"

log "control plane ready in $(($(now) - t_all))s (${timings[*]}): $got_apiserver, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
printf '%s\n' "$bin_dir"
