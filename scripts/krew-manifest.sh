#!/usr/bin/env bash
# The krew manifest (Plugin, krew.googlecontainertools.github.com/v1alpha2) of the kubectl
# plugin, written to stdout from release archives made by scripts/plugin-archive.sh: one
# platform per archive, its os and arch read from the archive's name, its sha256 computed
# from the file. docs/plugin.md, "Installing with krew".
#
#   krew-manifest.sh ARCHIVE...
#
# Environment:
#   RELEASE_URL  where the archives are downloaded from (default: the GitHub release of the
#                version, https://github.com/guestreset/guestreset/releases/download/<version>)
set -euo pipefail

BIN_NAME=kubectl-guestreset
HOMEPAGE=https://github.com/guestreset/guestreset

die() {
  printf 'krew-manifest.sh: error: %s\n' "$*" >&2
  exit 1
}

[[ $# -ge 1 ]] || die "usage: krew-manifest.sh ARCHIVE..."
pattern="^${BIN_NAME}_(v[0-9]+\.[0-9]+\.[0-9]+[^_]*)_(linux|darwin|windows)_(amd64|arm64)\.tar\.gz$"
version=""
platforms=""
for archive in "$@"; do
  [[ -f $archive ]] || die "no archive at $archive"
  file=$(basename "$archive")
  [[ $file =~ $pattern ]] || die "$file is not named ${BIN_NAME}_vX.Y.Z_OS_ARCH.tar.gz"
  [[ -z $version || $version == "${BASH_REMATCH[1]}" ]] ||
    die "archives of two versions: $version and ${BASH_REMATCH[1]}"
  version=${BASH_REMATCH[1]} os=${BASH_REMATCH[2]} arch=${BASH_REMATCH[3]}
  exe=$BIN_NAME
  [[ $os == windows ]] && exe=$BIN_NAME.exe
  sha=$(sha256sum "$archive" | cut -d' ' -f1)
  url=${RELEASE_URL:-$HOMEPAGE/releases/download/$version}/$file
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $url
    sha256: $sha
    bin: $exe
"
done

cat <<MANIFEST
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: guestreset
spec:
  version: $version
  homepage: $HOMEPAGE
  shortDescription: Review, approve and retry Entra guest resets
  description: |
    Works with the GuestRedemptionResets of the guestreset operator, which resets
    Microsoft Entra B2B guest redemptions declaratively: scaffold a reset for a pull
    request, review its plan, approve or deny it as a second person, retry it after a
    failure, and see where every reset stands. Talks to the API server only.
  platforms:
$platforms
MANIFEST
