#!/usr/bin/env bash
# The guestreset controller image, built without Docker and without any registry: buildah
# assembles it from scratch out of the release binary, exactly the shared libraries `ldd`
# names for it, the CA bundle, a passwd entry for the non-root user 65532 and an
# nsswitch.conf. The result is an OCI archive, loadable with `podman load`,
# `kind load image-archive` or `ctr images import`. It is the image the Dockerfile describes
# (same user, entrypoint, command, port, labels and files the binary uses); tests/image.rs
# checks both and runs it.
#
#   image.sh build            release binary, then the image; print the archive's path
#   image.sh load [ARCHIVE]   load the archive (default: the one `build` writes) into the
#                             cache's podman storage; print the image reference
#   image.sh podman ARGS...   podman on the cache's storage and configuration
#   image.sh buildah ARGS...  buildah likewise (scripts/publish.sh pushes with it)
#   image.sh clean            remove the cache's podman storage and the archive
#
# Needs root, buildah, podman and runc (Debian's packages), ldd and the host's
# ca-certificates; README.md, 'What you need'.
#
# Environment:
#   GUESTRESET_CACHE     cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   CARGO_TARGET_DIR     cargo's target directory (default target/)
#   IMAGE_REPOSITORY     the name in the archive (default: the chart's image.repository)
#   SOURCE_DATE_EPOCH    the image's timestamps (default: the last commit's time), so that
#                        the same binary gives the same digest
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/image
# Podman's state that must not outlive a reboot (locks, the container runtime's state)
# goes under /run, one directory per cache; the images and containers under the cache.
RUN_DIR=/run/guestreset-image-$(printf '%s' "$CACHE" | sha256sum | cut -c1-12)
STORAGE_CONF=$CACHE/storage.conf
CONTAINERS_CONF=$CACHE/containers.conf
REGISTRIES_CONF=$CACHE/registries.conf
ARCHIVE=$CACHE/guestreset.oci.tar
IMAGE_REPOSITORY=${IMAGE_REPOSITORY:-ghcr.io/guestreset/guestreset}
# As the Dockerfile's labels say.
SOURCE_URL=https://github.com/guestreset/guestreset
LICENSES=Apache-2.0
TITLE=guestreset
DESCRIPTION="Kubernetes operator that resets Microsoft Entra B2B guest redemptions declaratively, once per spec generation"
# The user the Dockerfile's base image (distroless nonroot) runs as and the chart enforces.
UID_NONROOT=65532
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { printf 'image.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

need_root() {
  ((EUID == 0)) || die "run as root: buildah mounts the image's file system and podman runs rootful"
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 ||
      die "$tool is needed: apt-get install buildah podman runc (README.md, 'What you need')"
  done
}

# Configuration of the containers tools, written on every call so that an edit here takes
# effect; exported through the variables that podman and buildah read, so that neither
# the machine's nor the user's settings are used and nothing of theirs is touched.
configure() {
  mkdir -p "$CACHE" "$RUN_DIR"
  cat >"$STORAGE_CONF" <<EOF
# Written by scripts/image.sh.
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$RUN_DIR/storage"
EOF
  # crun refuses this kernel's hybrid cgroup layout; runc works with cgroupfs. Without
  # default_ulimits = [], setting RLIMIT_NOFILE fails. The host network by default: the
  # tests' control plane and Graph simulator listen on the host's loopback.
  cat >"$CONTAINERS_CONF" <<EOF
# Written by scripts/image.sh.
[containers]
default_ulimits = []
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUN_DIR/events.log"
tmp_dir = "$RUN_DIR/tmp"
EOF
  # No registry is reachable or wanted: short names resolve to local images only.
  cat >"$REGISTRIES_CONF" <<EOF
# Written by scripts/image.sh.
unqualified-search-registries = []
EOF
  export CONTAINERS_STORAGE_CONF=$STORAGE_CONF
  export CONTAINERS_CONF=$CONTAINERS_CONF
  export CONTAINERS_REGISTRIES_CONF=$REGISTRIES_CONF
}

crate_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1
}

revision() {
  git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown
}

# Every file the dynamic loader maps for $1, as ldd names it (the loader included; the
# vDSO is the kernel's). A library ldd cannot find fails the build.
shared_libraries() {
  local binary=$1 listing
  listing=$(ldd "$binary") || die "ldd $binary failed"
  if grep -q 'not found' <<<"$listing"; then
    die "$binary needs libraries this machine lacks:"$'\n'"$(grep 'not found' <<<"$listing")"
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$listing" | sort -u
}

build_binary() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target} started=$SECONDS
  log "cargo build --release (cold: many minutes; warm: seconds)"
  (cd "$ROOT" && cargo build --release --locked -p guestreset --bin guestreset) >&2
  log "release binary in $((SECONDS - started)) s"
  BINARY=$target/release/guestreset
  [[ -x $BINARY ]] || die "cargo built no $BINARY"
}

# Fills the mounted root file system $1: what the binary needs to run as 65532, and the
# few files distroless' nonroot variant also has (the user's home, a sticky /tmp).
populate() {
  local root=$1 lib
  install -D -m 0755 "$BINARY" "$root/usr/local/bin/guestreset"
  # At the path ldd names, which is where the loader looks (for the loader itself: the
  # interpreter path in the binary); the file's content, not a symbolic link.
  for lib in $(shared_libraries "$BINARY"); do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
  [[ -s $CA_BUNDLE ]] || die "$CA_BUNDLE is missing: apt-get install ca-certificates"
  install -D -m 0644 "$CA_BUNDLE" "$root$CA_BUNDLE"
  install -d -m 0755 "$root/etc"
  # As in distroless: numeric ids that runAsNonRoot can check, names for tools that
  # look them up, no login shell.
  cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$UID_NONROOT:$UID_NONROOT:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<EOF
root:x:0:
nobody:x:65534:
nonroot:x:$UID_NONROOT:
EOF
  # Without it glibc asks DNS before /etc/hosts (distroless has the same line).
  cat >"$root/etc/nsswitch.conf" <<EOF
passwd: files
group: files
hosts: files dns
EOF
  chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
  install -d -m 0700 -o "$UID_NONROOT" -g "$UID_NONROOT" "$root/home/nonroot"
  install -d -m 1777 "$root/tmp"
}

cmd_build() {
  need_root
  need buildah ldd cargo git jq
  configure
  build_binary
  local version revision epoch ref ctr mnt started=$SECONDS
  version=$(crate_version)
  [[ -n $version ]] || die "no version in Cargo.toml"
  revision=$(revision)
  epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
  ref=$IMAGE_REPOSITORY:$version

  # Everything the image is made of: an archive made of the same is reused.
  local key lib
  key=$(
    {
      sha256sum "$BINARY" "$CA_BUNDLE" "${BASH_SOURCE[0]}"
      for lib in $(shared_libraries "$BINARY"); do
        echo "$lib $(sha256sum <"$(readlink -f "$lib")")"
      done
      echo "$ref $revision $epoch"
    } | sha256sum | cut -c1-32
  )
  if [[ -f $ARCHIVE && $(cat "$ARCHIVE.key" 2>/dev/null) == "$key" ]]; then
    report "$ref" "0 s (unchanged: the archive is reused)"
    echo "$ARCHIVE"
    return
  fi

  ctr=$(buildah from --name "guestreset-image-$$" scratch)
  # The working container is scratch space: gone whatever happens.
  trap 'buildah rm "'"$ctr"'" >/dev/null 2>&1 || true' EXIT
  mnt=$(buildah mount "$ctr")
  populate "$mnt"
  buildah unmount "$ctr" >/dev/null

  local labels=(
    "org.opencontainers.image.title=$TITLE"
    "org.opencontainers.image.description=$DESCRIPTION"
    "org.opencontainers.image.source=$SOURCE_URL"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.licenses=$LICENSES"
  )
  local config=(
    --user "$UID_NONROOT:$UID_NONROOT"
    --workingdir /home/nonroot
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --env "SSL_CERT_FILE=$CA_BUNDLE"
    --port 8080/tcp
    --entrypoint '["/usr/local/bin/guestreset"]'
    --cmd run
  ) label
  for label in "${labels[@]}"; do
    config+=(--label "$label" --annotation "$label")
  done
  buildah config "${config[@]}" "$ctr"

  # Straight into the archive, the layer gzipped as a registry serves it: nothing is left
  # in the storage, and with a fixed
  # timestamp and no builder label the same binary gives the same digest.
  mkdir -p "$CACHE"
  rm -f "$ARCHIVE.tmp"
  buildah commit --quiet --format oci --timestamp "$epoch" --identity-label=false \
    --disable-compression=false \
    "$ctr" "oci-archive:$ARCHIVE.tmp:$ref" >/dev/null
  mv "$ARCHIVE.tmp" "$ARCHIVE"
  echo "$key" >"$ARCHIVE.key"
  report "$ref" "$((SECONDS - started)) s"
  echo "$ARCHIVE"
}

# Size and digest, from the archive itself (the digest is the manifest's, the one a
# registry and `kubectl get pod -o yaml` show).
report() {
  local ref=$1 took=$2 index manifest_digest manifest config_size layers_size bytes
  index=$(tar -xOf "$ARCHIVE" index.json)
  manifest_digest=$(jq -r '.manifests[0].digest' <<<"$index")
  manifest=$(tar -xOf "$ARCHIVE" "blobs/sha256/${manifest_digest#sha256:}")
  layers_size=$(jq '[.layers[].size] | add' <<<"$manifest")
  config_size=$(jq '.config.size' <<<"$manifest")
  bytes=$(stat -c %s "$ARCHIVE")
  log "image $ref assembled in $took"
  log "archive $ARCHIVE: $bytes bytes"
  log "compressed size $((layers_size + config_size)) bytes (layers and config, as pulled)"
  log "digest $manifest_digest"
}

cmd_load() {
  need_root
  need podman jq
  configure
  local archive=${1:-$ARCHIVE} out
  [[ -f $archive ]] || die "no archive at $archive (run: scripts/image.sh build)"
  out=$(podman load --quiet --input "$archive")
  # "Loaded image: NAME" (podman 4); the name is what the archive was tagged with.
  sed -n 's/^Loaded image[^:]*: *//p' <<<"$out" | head -n1
}

cmd_podman() {
  need_root
  need podman
  configure
  exec podman "$@"
}

cmd_buildah() {
  need_root
  need buildah
  configure
  exec buildah "$@"
}

cmd_clean() {
  need_root
  configure
  if command -v podman >/dev/null 2>&1 && [[ -d $CACHE/storage ]]; then
    podman system reset --force >/dev/null 2>&1 || true
  fi
  # Layers of an overlay storage may still be mounted after a crash.
  if [[ -d $CACHE/storage ]]; then
    findmnt -rn -o TARGET | grep -F "$CACHE/storage/" | sort -r | xargs -r umount -l || true
  fi
  rm -rf "$CACHE" "$RUN_DIR"
  log "removed $CACHE and $RUN_DIR"
}

main() {
  (($# > 0)) || usage
  local cmd=$1
  shift
  case $cmd in
    build) cmd_build "$@" ;;
    load) cmd_load "$@" ;;
    podman) cmd_podman "$@" ;;
    buildah) cmd_buildah "$@" ;;
    clean) cmd_clean "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
