#!/usr/bin/env bash
# gitops-check (tests/gitops-check): kstatus and an Argo CD-style Lua VM over live objects,
# built from the Go module proxy, for tests/gitops.rs. Cached by the hash of its sources.
#
#   gitops-check.sh build     build into the cache if missing; print the path of the binary
#
# Environment:
#   GUESTRESET_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GO                 the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/tests/gitops-check
CACHE_ROOT=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/gitops-check

log() { printf 'gitops-check.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# find_go
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

cmd_build() {
  local key out
  key=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-16)
  out=$CACHE_ROOT/$key/gitops-check
  if [[ ! -x $out ]]; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/build.lock"
    flock 9
    if [[ ! -x $out ]]; then
      local go tmp
      go=$(find_go)
      tmp=$(mktemp -d "$CACHE_ROOT/tmp.XXXXXX")
      log "building gitops-check into $CACHE_ROOT/$key (cold: about a minute)"
      if ! (cd "$SRC" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
        "$go" build -trimpath -o "$tmp/gitops-check" .); then
        rm -rf "$tmp"
        die "build of gitops-check failed"
      fi
      rm -rf "$CACHE_ROOT/$key"
      mv "$tmp" "$CACHE_ROOT/$key"
    fi
    exec 9>&-
  fi
  echo "$out"
}

case ${1:-} in
  build) cmd_build ;;
  *)
    sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
