#!/usr/bin/env bash
# Every test of the repository, from a fresh machine: builds the control plane
# binaries (kube-apiserver, etcd, kubectl), Helm and a local OCI registry from source (cached
# after the first run) and the controller image (scripts/image.sh: a release build, then buildah), then
# runs `cargo test --workspace --all-targets`. The end-to-end tests start their own control
# planes and Graph simulators; tests/image.rs runs the image with podman. Nothing else needs
# to be set up.
#
#   scripts/test.sh                 every test
#   scripts/test.sh ARGS...         extra arguments for cargo test, e.g. `-- --nocapture`
#
# Environment:
#   CARGO_TARGET_DIR          cargo's target directory (default target/)
#   GUESTRESET_TEST_TIMEOUT   seconds the cargo test stage may take (default 3600)
#   GUESTRESET_KEEP_TEST_DIRS set to keep the tests' control-plane data and logs
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_TIMEOUT=${GUESTRESET_TEST_TIMEOUT:-3600}
cd "$ROOT"

die() {
  printf 'test.sh: error: %s\n' "$*" >&2
  exit 1
}

# Debian's packages for what a fresh machine may lack, installed when this runs as root (as
# on CI and the developers' machines); elsewhere the message names what to install.
missing=()
for tool in openssl:openssl flock:util-linux script:bsdutils timeout:coreutils buildah:buildah podman:podman \
  runc:runc jq:jq update-ca-certificates:ca-certificates; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]} > 0)); then
  if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    die "needed: ${missing[*]} (Debian packages; see README.md, 'What they need')"
  fi
fi
command -v cargo >/dev/null 2>&1 || die "cargo is needed (Rust, stable)"

# Every endpoint the tests use is on loopback.
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

log=$(mktemp "${TMPDIR:-/tmp}/guestreset-test.XXXXXX")

started=$SECONDS
echo "==> control plane binaries (scripts/controlplane.sh build; cold: the first run compiles kube-apiserver)"
bin=$(scripts/controlplane.sh build)
echo "    $bin"
build_seconds=$((SECONDS - started))

started=$SECONDS
echo "==> helm (scripts/helm.sh build; cold: the first run compiles it)"
helm=$(scripts/helm.sh build)
echo "    $helm"
helm_seconds=$((SECONDS - started))

started=$SECONDS
echo "==> gitops-check (scripts/gitops-check.sh build; cold: about a minute): kstatus and Argo CD's Lua VM"
scripts/gitops-check.sh build
gitops_seconds=$((SECONDS - started))

started=$SECONDS
echo "==> promtool (scripts/promtool.sh build; cold: several minutes): the chart's alert rules"
scripts/promtool.sh build
promtool_seconds=$((SECONDS - started))

started=$SECONDS
echo "==> registry (scripts/registry.sh build; cold: a minute or two): publishing, tests/install.rs"
scripts/registry.sh build
registry_seconds=$((SECONDS - started))

started=$SECONDS
echo "==> image (scripts/image.sh build; cold: the first run makes a release build)"
# Built here rather than by the test, so that its time (cold: a release build) shows on its
# own and does not count against the tests' deadline; tests/image.rs loads this archive.
GUESTRESET_IMAGE_ARCHIVE=$(scripts/image.sh build)
export GUESTRESET_IMAGE_ARCHIVE
echo "    $GUESTRESET_IMAGE_ARCHIVE"
image_seconds=$((SECONDS - started))

echo "==> cargo test --workspace --all-targets --features guestreset/failpoints (deadline ${TEST_TIMEOUT}s)"
test_started=$SECONDS
# --no-fail-fast: one failing test binary must not hide the results of the others.
# timeout runs in a process group of its own and, at the deadline, signals all of it, so
# a hung test cannot outlive the deadline; signals sent to this script are passed on.
timeout --kill-after=30 "$TEST_TIMEOUT" \
  cargo test "${locked[@]}" --workspace --all-targets --features guestreset/failpoints \
    --no-fail-fast "$@" >"$log" 2>&1 &
test_pid=$!
tail --pid="$test_pid" -n +1 -f "$log" &
tail_pid=$!
trap 'kill -INT "$test_pid" 2>/dev/null || true' INT
trap 'kill -TERM "$test_pid" 2>/dev/null || true' TERM
while kill -0 "$test_pid" 2>/dev/null; do
  wait "$test_pid" || true
done
rc=0
wait "$test_pid" || rc=$?
wait "$tail_pid" 2>/dev/null || true
trap - INT TERM
test_seconds=$((SECONDS - test_started))

# Sums the `test result:` lines of every test binary.
read -r passed failed ignored binaries < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) ~ /^passed/) p += $i
      if ($(i + 1) ~ /^failed/) f += $i
      if ($(i + 1) ~ /^ignored/) g += $i
    }
    n++
  }
  END { printf "%d %d %d %d\n", p, f, g, n }' "$log")

echo
echo "==> summary"
printf '    control plane binaries  %4ds\n' "$build_seconds"
printf '    helm                    %4ds\n' "$helm_seconds"
printf '    gitops-check            %4ds\n' "$gitops_seconds"
printf '    promtool                %4ds\n' "$promtool_seconds"
printf '    registry                %4ds\n' "$registry_seconds"
printf '    image                   %4ds\n' "$image_seconds"
printf '    cargo test              %4ds   %d test binaries: %d passed, %d failed, %d ignored\n' \
  "$test_seconds" "$binaries" "$passed" "$failed" "$ignored"
if ((rc == 124 || rc == 137)); then
  echo "    FAILED: cargo test did not finish within ${TEST_TIMEOUT}s"
elif ((rc != 0)); then
  echo "    FAILED (exit $rc). Failing tests:"
  # The names under each binary's `failures:` heading, and binaries that did not build or run.
  awk '/^failures:$/ { on = 1; next } on && /^    / { print "      " $1; next } on && !/^    / { on = 0 }' "$log" | sort -u
  grep -E '^error: (test failed|could not compile|[0-9]+ targets failed)' "$log" | sed 's/^/      /' || true
else
  echo "    OK"
  rm -f "$log"
  exit 0
fi
echo "    full output: $log"
exit "$rc"
