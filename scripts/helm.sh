#!/usr/bin/env bash
# Helm, built from source through the Go module proxy (no other download site is
# needed), for the chart tests and for humans.
#
#   helm.sh build     build into the cache if missing; print the path of the binary
#   helm.sh path      the same (an alias, for scripts that only want the path)
#   helm.sh ARGS...   anything else runs the cached helm with ARGS (building it first)
#
# Environment:
#   GUESTRESET_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GO                 the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

# The Helm release. Helm v3.22 needs Go >= 1.26 to build.
HELM_VERSION=v3.22.0
CACHE_ROOT=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/helm
OUT_DIR=$CACHE_ROOT/$HELM_VERSION
HELM=$OUT_DIR/helm

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# find_go
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Static and stamped the way Helm's own Makefile builds a release, so that
# `helm version` names the release and `helm template` assumes the Kubernetes
# minor version of the client-go this Helm was built with (otherwise 1.20).
build_into() {
  local go=$1 out=$2 module=helm.sh/helm/v3
  export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN=$out
  # Outside any module, so no go.mod around the caller can interfere.
  cd "$out"
  local gomod client_go major minor
  gomod=$("$go" mod download -json "$module@$HELM_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "go mod download $module@$HELM_VERSION gave no go.mod"
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")
  [[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "cannot tell the client-go version of helm $HELM_VERSION (got '$client_go')"
  # client-go v0.N is Kubernetes 1.N (the Makefile's "+ 1" on the major).
  major=1
  minor=${BASH_REMATCH[1]}
  local ldflags="-s -w -X $module/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $module/internal/version.gitTreeState=clean"
  ldflags+=" -X $module/pkg/lint/rules.k8sVersionMajor=$major -X $module/pkg/lint/rules.k8sVersionMinor=$minor"
  ldflags+=" -X $module/pkg/chartutil.k8sVersionMajor=$major -X $module/pkg/chartutil.k8sVersionMinor=$minor"
  "$go" install -trimpath -ldflags="$ldflags" "$module/cmd/helm@$HELM_VERSION"
}

# Builds into a temporary sibling and renames it into place, under a lock, so
# parallel callers neither build twice nor see a half-written binary.
cmd_build() {
  if [[ ! -x $HELM ]]; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/$HELM_VERSION.lock"
    flock 9
    if [[ ! -x $HELM ]]; then
      local go tmp start
      go=$(find_go)
      tmp=$(mktemp -d "$CACHE_ROOT/$HELM_VERSION.tmp.XXXXXX")
      log "building helm $HELM_VERSION into $OUT_DIR (cold: a few minutes)"
      start=$(date +%s)
      if ! (build_into "$go" "$tmp"); then
        rm -rf "$tmp"
        die "build of helm $HELM_VERSION failed"
      fi
      local reported
      reported=$("$tmp/helm" version --template '{{.Version}}') || {
        rm -rf "$tmp"
        die "the built helm does not run"
      }
      if [[ $reported != "$HELM_VERSION" ]]; then
        rm -rf "$tmp"
        die "the built helm reports $reported, expected $HELM_VERSION"
      fi
      chmod 755 "$tmp"
      rm -rf "$OUT_DIR"
      mv "$tmp" "$OUT_DIR"
      log "built helm $HELM_VERSION in $(($(date +%s) - start)) s"
    fi
    exec 9>&-
  fi
  echo "$HELM"
}

main() {
  case ${1:-} in
    build | path) cmd_build ;;
    "" | -h | --help)
      sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
      exit 2
      ;;
    *)
      cmd_build >/dev/null
      exec "$HELM" "$@"
      ;;
  esac
}

main "$@"
exit
