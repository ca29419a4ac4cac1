#!/usr/bin/env bash
# Publishes the controller image and the Helm chart to an OCI registry (Azure Container
# Registry, GHCR, Harbor, a local registry...), without Docker: the image from the OCI archive
# of scripts/image.sh (built first when missing) with buildah, the chart with
# `helm package` and `helm push`. Then prints the digest and the values to install with:
#
#   image.repository=REGISTRY
#   image.digest=sha256:...
#   chart=oci://REGISTRY/charts/guestreset
#   chart.version=0.1.0
#   chart.digest=sha256:...
#   followed by the `helm install` command (docs/install.md, "Publishing the image and the chart")
#
# Usage: publish.sh [--plain-http | --insecure] [--overwrite-chart] REGISTRY
#   REGISTRY            where the image goes, HOST[:PORT]/PATH (myacr.azurecr.io/guestreset);
#                       the chart goes to oci://REGISTRY/charts/guestreset
#   --plain-http        the registry speaks HTTP, not HTTPS (a local test registry)
#   --insecure          HTTPS without verifying the registry's certificate
#   --overwrite-chart   replace a chart of the same version whose content differs (by
#                       default that is refused: bump `version` in Chart.yaml instead)
#
# Running it again is harmless: the same image gives the same digest and an identical chart
# already there is left as it is. Credentials are never arguments: log in first with
# `buildah login REGISTRY_HOST` and `helm registry login REGISTRY_HOST` (for ACR,
# docs/install.md shows `az acr login --expose-token` feeding both).
#
# Needs root, buildah and podman (as scripts/image.sh does), curl, jq, tar.
#
# Environment:
#   GUESTRESET_CACHE           cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GUESTRESET_IMAGE_ARCHIVE   the archive to push (default: the one scripts/image.sh builds)
#   PUBLISH_PLAIN_HTTP=1       the same as --plain-http
#   REGISTRY_AUTH_FILE         buildah's credentials (default: buildah's own)
#   HELM_REGISTRY_CONFIG       helm's credentials (default: helm's own)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}
DEFAULT_ARCHIVE=$CACHE/image/guestreset.oci.tar
CHART_DIR=$ROOT/charts/guestreset

log() { printf 'publish.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,34s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

plain_http=${PUBLISH_PLAIN_HTTP:-0}
[[ $plain_http == 1 || $plain_http == 0 ]] || die "PUBLISH_PLAIN_HTTP is 1 or 0, not '$plain_http'"
insecure=0
overwrite_chart=0
registry=
while (($# > 0)); do
  case $1 in
    --plain-http) plain_http=1 ;;
    --insecure) insecure=1 ;;
    --overwrite-chart) overwrite_chart=1 ;;
    -h | --help) usage ;;
    -*) die "unknown option $1 (see publish.sh --help)" ;;
    *)
      [[ -z $registry ]] || die "one REGISTRY only (got '$registry' and '$1')"
      registry=$1
      ;;
  esac
  shift
done
[[ -n $registry ]] || usage
((plain_http + insecure < 2)) || die "--plain-http and --insecure exclude each other"
registry=${registry%/}
[[ $registry != *://* ]] || die "REGISTRY is HOST[:PORT]/PATH, without a scheme (got '$registry')"
[[ $registry =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?$ ]] ||
  die "'$registry' is not HOST[:PORT]/PATH: lower-case path, no tag or digest (e.g. myacr.azurecr.io/guestreset)"
host=${registry%%/*}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (Debian: apt-get install $tool)"
  done
}
need curl jq tar
((EUID == 0)) || die "run as root: the image is pushed from scripts/image.sh's podman storage (rootful)"

# The registry's flags for buildah and helm, and the scheme for curl.
buildah_tls=()
helm_tls=()
curl_tls=()
scheme=https
if ((plain_http)); then
  buildah_tls=(--tls-verify=false)
  helm_tls=(--plain-http)
  scheme=http
elif ((insecure)); then
  buildah_tls=(--tls-verify=false)
  helm_tls=(--insecure-skip-tls-verify)
  curl_tls=(--insecure)
fi

# Reachable at all? The distribution API's base answers 200, or 401 when it wants
# credentials; anything else (no answer, a TLS failure, an HTML page) is not a registry.
check_registry() {
  local code rc=0
  code=$(curl --silent --show-error --output /dev/null --write-out '%{http_code}' \
    --max-time 15 "${curl_tls[@]}" "$scheme://$host/v2/" 2>"$work/curl.err") || rc=$?
  if ((rc != 0)); then
    local hint="check the name, that it runs, your network and proxy settings"
    if ((rc == 35 || rc == 60)) && ((!plain_http)); then
      hint="the TLS handshake failed: for a registry on plain HTTP add --plain-http, for a self-signed certificate --insecure"
    fi
    die "registry $scheme://$host is unreachable ($(tr -d '\n' <"$work/curl.err")): $hint"
  fi
  case $code in
    200 | 401) ;;
    *) die "$scheme://$host/v2/ answered HTTP $code: not an OCI registry (is REGISTRY's host right?)" ;;
  esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/guestreset-publish.XXXXXX")
trap 'rm -rf "$work"' EXIT
check_registry

# ------------------------------------------------------------------ the image

archive=${GUESTRESET_IMAGE_ARCHIVE:-}
if [[ -n $archive ]]; then
  [[ -f $archive ]] || die "no image archive at $archive (GUESTRESET_IMAGE_ARCHIVE): build one with scripts/image.sh build, or unset it"
elif [[ -f $DEFAULT_ARCHIVE ]]; then
  archive=$DEFAULT_ARCHIVE
else
  log "no image archive at $DEFAULT_ARCHIVE: building it (scripts/image.sh build; cold: a release build, many minutes)"
  archive=$("$ROOT/scripts/image.sh" build) || die "scripts/image.sh build failed (its messages above)"
  [[ -f $archive ]] || die "scripts/image.sh build wrote no archive"
fi
index=$(tar -xOf "$archive" index.json 2>/dev/null) || die "$archive is not an OCI archive (no index.json): rebuild it with scripts/image.sh build"
archive_digest=$(jq -r '.manifests[0].digest' <<<"$index")
archive_ref=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"] // empty' <<<"$index")
[[ $archive_digest == sha256:* && -n $archive_ref ]] || die "$archive names no image (index.json: $index)"
tag=${archive_ref##*:}
[[ $tag != "$archive_ref" && $tag != */* ]] || die "the archive's image $archive_ref has no tag"

log "loading $archive ($archive_ref, $archive_digest)"
local_ref=$("$ROOT/scripts/image.sh" load "$archive") || die "scripts/image.sh load $archive failed"
log "pushing $registry:$tag"
if ! "$ROOT/scripts/image.sh" buildah push --quiet "${buildah_tls[@]}" --digestfile "$work/digest" \
  "$local_ref" "docker://$registry:$tag" >&2; then
  die "buildah push to $registry:$tag failed (above). Refused credentials: log in with buildah login $host"
fi
image_digest=$(cat "$work/digest")
[[ $image_digest == sha256:* ]] || die "buildah push reported no digest"
if [[ $image_digest != "$archive_digest" ]]; then
  log "note: the registry stored the manifest as $image_digest, the archive has $archive_digest (re-encoded on the way); install with the registry's"
fi

# ------------------------------------------------------------------ the chart

helm=$("$ROOT/scripts/helm.sh" build) || die "scripts/helm.sh build failed"
"$helm" package "$CHART_DIR" --destination "$work/package" >/dev/null || die "helm package $CHART_DIR failed"
chart_name=$(sed -n 's/^name: *//p' "$CHART_DIR/Chart.yaml" | head -n1)
chart_version=$(sed -n 's/^version: *//p' "$CHART_DIR/Chart.yaml" | head -n1 | tr -d '"')
package=$work/package/$chart_name-$chart_version.tgz
[[ -f $package ]] || die "helm package wrote no $package"
chart_repo=oci://$registry/charts
chart_ref=$chart_repo/$chart_name

# The chart of this version already there? helm package stamps the time into the archive,
# so compare what it holds, not the archive's bytes.
same_content() {
  mkdir -p "$work/a" "$work/b"
  tar -xzf "$1" -C "$work/a" && tar -xzf "$2" -C "$work/b" && diff -r "$work/a" "$work/b" >/dev/null
}
chart_digest=
mkdir -p "$work/remote"
if "$helm" pull "$chart_ref" --version "$chart_version" "${helm_tls[@]}" \
  --destination "$work/remote" >"$work/pull.out" 2>&1; then
  if same_content "$package" "$work/remote/$chart_name-$chart_version.tgz"; then
    chart_digest=$(sed -n 's/^Digest: *//p' "$work/pull.out" | head -n1)
    log "chart $chart_ref:$chart_version is already there with this content: left as it is"
  elif ((!overwrite_chart)); then
    die "chart $chart_ref:$chart_version is already there with other content: bump version in $CHART_DIR/Chart.yaml (a chart version should name one content), or replace it with --overwrite-chart"
  else
    log "chart $chart_ref:$chart_version differs from this chart: replacing it (--overwrite-chart)"
  fi
elif ! grep -qiE 'not found|manifest unknown|name unknown' "$work/pull.out"; then
  die "cannot tell whether $chart_ref:$chart_version exists: $(tr '\n' ' ' <"$work/pull.out"). Refused credentials: log in with helm registry login $host"
fi
if [[ -z $chart_digest ]]; then
  log "pushing the chart to $chart_repo"
  if ! "$helm" push "$package" "$chart_repo" "${helm_tls[@]}" >"$work/push.out" 2>&1; then
    die "helm push to $chart_repo failed: $(tr '\n' ' ' <"$work/push.out"). Refused credentials: log in with helm registry login $host"
  fi
  chart_digest=$(sed -n 's/^Digest: *//p' "$work/push.out" | head -n1)
fi
[[ $chart_digest == sha256:* ]] || die "helm reported no digest for $chart_ref:$chart_version"

# ------------------------------------------------------------------ what to install

plain=
((plain_http)) && plain=" --plain-http"
((insecure)) && plain=" --insecure-skip-tls-verify"
cat <<EOF
image.repository=$registry
image.digest=$image_digest
chart=$chart_ref
chart.version=$chart_version
chart.digest=$chart_digest

Install (add your credential's values, docs/install.md sections 2 and 2'):
  helm install guestreset $chart_ref --version $chart_version$plain \\
    --namespace guestreset-system --create-namespace \\
    --set image.repository=$registry --set image.digest=$image_digest
EOF
