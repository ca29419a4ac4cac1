#!/usr/bin/env bash
# The release archive of the kubectl plugin, as krew installs it: a tar.gz holding the
# binary, LICENSE and README.md at its top level. scripts/krew-manifest.sh writes the krew
# manifest from such archives; docs/plugin.md, "Installing with krew".
#
#   plugin-archive.sh [--binary PATH] OS ARCH [OUT_DIR]
#
# OS and ARCH are krew's platform labels (linux, darwin, windows; amd64, arm64). Without
# --binary the script builds the release binary for this machine (cargo build --release
# --locked) and refuses another OS/ARCH: cross-built binaries come with --binary. Writes
# OUT_DIR/kubectl-guestreset_v<version>_<os>_<arch>.tar.gz (OUT_DIR default: dist) and
# prints its path. The archive is reproducible: sorted names, owner 0, the mtime of
# SOURCE_DATE_EPOCH (default 0), gzip without a name or time, so the same binary gives the
# same sha256.
#
# Environment:
#   VERSION            the version in the name (default: Cargo.toml's, with a v)
#   CARGO_TARGET_DIR   cargo's target directory (default target/)
#   SOURCE_DATE_EPOCH  the files' mtime in the archive (default 0)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_NAME=kubectl-guestreset

die() {
  printf 'plugin-archive.sh: error: %s\n' "$*" >&2
  exit 1
}

crate_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1
}

host_platform() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) os=unknown ;;
  esac
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=unknown ;;
  esac
  echo "$os $arch"
}

binary=""
if [[ ${1:-} == --binary ]]; then
  [[ $# -ge 2 ]] || die "--binary needs a path"
  binary=$2
  shift 2
fi
[[ $# -ge 2 && $# -le 3 ]] || die "usage: plugin-archive.sh [--binary PATH] OS ARCH [OUT_DIR]"
os=$1 arch=$2 out_dir=${3:-dist}
[[ $os =~ ^(linux|darwin|windows)$ ]] || die "OS must be linux, darwin or windows, not $os"
[[ $arch =~ ^(amd64|arm64)$ ]] || die "ARCH must be amd64 or arm64, not $arch"

if [[ -z $binary ]]; then
  [[ "$os $arch" == "$(host_platform)" ]] ||
    die "this machine builds $(host_platform); pass a $os/$arch binary with --binary"
  cargo build --release --locked --bin "$BIN_NAME" --manifest-path "$ROOT/Cargo.toml" >&2
  binary=${CARGO_TARGET_DIR:-$ROOT/target}/release/$BIN_NAME
fi
[[ -f $binary ]] || die "no binary at $binary"

version=${VERSION:-v$(crate_version)}
exe=$BIN_NAME
[[ $os == windows ]] && exe=$BIN_NAME.exe
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/$exe"
install -m 0644 "$ROOT/LICENSE" "$ROOT/README.md" "$stage/"

mkdir -p "$out_dir"
archive=$out_dir/${BIN_NAME}_${version}_${os}_${arch}.tar.gz
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" \
  -C "$stage" -cf - "$exe" LICENSE README.md | gzip -n -9 >"$archive"
echo "$archive"
