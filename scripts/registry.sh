#!/usr/bin/env bash
# A local OCI registry (CNCF Distribution, the reference registry server), built from source
# through the Go module proxy and cached, for the publishing tests (tests/install.rs) and for
# trying scripts/publish.sh by hand. It serves plain HTTP on loopback with filesystem storage.
#
#   registry.sh build             build into the cache if missing; print the path of the binary
#   registry.sh serve DIR [ADDR]  serve in the foreground, storage and configuration under DIR,
#                                 on ADDR (default 127.0.0.1:5000) until SIGTERM or SIGINT
#
# For example, in one terminal `scripts/registry.sh serve /tmp/registry`, in another
# `scripts/publish.sh --plain-http 127.0.0.1:5000/guestreset`.
#
# Environment:
#   GUESTRESET_CACHE   cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GO                 the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

DISTRIBUTION_VERSION=v3.0.0
CACHE_ROOT=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/registry
OUT_DIR=$CACHE_ROOT/$DISTRIBUTION_VERSION
REGISTRY=$OUT_DIR/registry

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# find_go
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Builds into a temporary sibling and renames it into place, under a lock, so parallel
# callers neither build twice nor see a half-written binary.
cmd_build() {
  if [[ ! -x $REGISTRY ]]; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/$DISTRIBUTION_VERSION.lock"
    flock 9
    if [[ ! -x $REGISTRY ]]; then
      local go tmp start
      go=$(find_go)
      tmp=$(mktemp -d "$CACHE_ROOT/$DISTRIBUTION_VERSION.tmp.XXXXXX")
      log "building the registry (distribution $DISTRIBUTION_VERSION) into $OUT_DIR (cold: a minute or two)"
      start=$(date +%s)
      # Outside any module, so no go.mod around the caller can interfere; -mod=mod lets the
      # release's own go.mod decide the dependencies.
      if ! (cd "$tmp" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOBIN=$tmp \
        "$go" install -trimpath -ldflags="-s -w -X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION" \
        "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"); then
        rm -rf "$tmp"
        die "build of the registry $DISTRIBUTION_VERSION failed"
      fi
      "$tmp/registry" --version >/dev/null || {
        rm -rf "$tmp"
        die "the built registry does not run"
      }
      chmod 755 "$tmp"
      rm -rf "$OUT_DIR"
      mv "$tmp" "$OUT_DIR"
      log "built the registry in $(($(date +%s) - start)) s"
    fi
    exec 9>&-
  fi
  echo "$REGISTRY"
}

# The configuration: filesystem storage under DIR, deletes allowed (so that a test can
# remove what it pushed), plain HTTP on ADDR, no tracing exporter.
cmd_serve() {
  local dir=${1:-} addr=${2:-127.0.0.1:5000}
  [[ -n $dir ]] || die "usage: registry.sh serve DIR [ADDR]"
  [[ $addr == 127.* || $addr == localhost:* || $addr == "[::1]:"* ]] ||
    die "$addr is not a loopback address: this registry has no authentication and no TLS"
  cmd_build >/dev/null
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<EOF
# Written by scripts/registry.sh.
version: 0.1
log:
  level: warn
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
EOF
  log "serving http://$addr (storage $dir/storage)"
  OTEL_TRACES_EXPORTER=none exec "$REGISTRY" serve "$dir/config.yml"
}

case ${1:-} in
  build) cmd_build ;;
  serve)
    shift
    cmd_serve "$@"
    ;;
  *)
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
