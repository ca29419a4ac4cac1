#!/usr/bin/env bash
# promtool (Prometheus's rule checker and unit tester), built from source through the Go
# module proxy, for the chart's alert rules (tests/monitoring.rs).
#
#   promtool.sh build     build into the cache if missing; print the path of the binary
#   promtool.sh ARGS...   anything else runs the cached promtool with ARGS (building it first)
#
# Environment:
#   GUESTRESET_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GO                 the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

# Prometheus's Go module versions are v0.<major*100+minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION=v0.316.0
CACHE_ROOT=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/promtool
OUT_DIR=$CACHE_ROOT/$PROMETHEUS_MODULE_VERSION
PROMTOOL=$OUT_DIR/promtool

log() { printf 'promtool.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# find_go
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd_build() {
  if [[ ! -x $PROMTOOL ]]; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/build.lock"
    flock 9
    if [[ ! -x $PROMTOOL ]]; then
      local go tmp start
      go=$(find_go)
      tmp=$(mktemp -d "$CACHE_ROOT/tmp.XXXXXX")
      log "building promtool $PROMETHEUS_MODULE_VERSION into $OUT_DIR (cold: several minutes)"
      start=$(date +%s)
      # Outside any module, so no go.mod around the caller can interfere.
      if ! (cd "$tmp" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN=$tmp \
        "$go" install -trimpath "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"); then
        rm -rf "$tmp"
        die "build of promtool $PROMETHEUS_MODULE_VERSION failed"
      fi
      "$tmp/promtool" --version >/dev/null || {
        rm -rf "$tmp"
        die "the built promtool does not run"
      }
      rm -rf "$OUT_DIR"
      mv "$tmp" "$OUT_DIR"
      log "built promtool in $(($(date +%s) - start)) s"
    fi
    exec 9>&-
  fi
  echo "$PROMTOOL"
}

case ${1:-} in
  build) cmd_build ;;
  "" | -h | --help)
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
  *)
    cmd_build >/dev/null
    exec "$PROMTOOL" "$@"
    ;;
esac
