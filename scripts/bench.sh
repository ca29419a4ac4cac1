#!/usr/bin/env bash
# guestreset's benchmarks: throughput against the floor of the work (B1), memory (B2),
# restart cost (B3), the manual way (B4), the write limiter (B5), no head-of-line blocking
# behind it (B6: a dry run, a recovery and a missing user's re-reads while 1,000 resets wait
# for write slots, and the expected time in their status; about 2 minutes) and the follow-through over
# 10,000 issued resources (B7: reads per minute within the read budget, reads and status
# writes after a restart, memory; about 6 minutes) and a domain migration of 5,000 guests (B8:
# the plan's time and directory pages, the writes at the limit, memory; about 3 minutes), on a real kube-apiserver
# and the Graph simulator, all on loopback. Builds the operator and the benchmark in release
# mode, runs them, and prints one Markdown table (also written to OUT/table.md).
#
#   scripts/bench.sh                 the full run (about 8 minutes on 2 cores, after building)
#   scripts/bench.sh --quick         B1 with 200 resources, B2/B3/B7 with 2,000 (about 3 minutes with --skip-b5)
#   scripts/bench.sh --skip-b5       without B5 (which takes about 5 minutes by design)
#   scripts/bench.sh --quick --sweep B1 also at --concurrency 4 and 64 (always in a full run)
#   scripts/bench.sh --only B1,B4    only these benches (B6: --only B6; B7: --only B7; B8: --only B8)
#   scripts/bench.sh --out DIR       logs, simulator state and table.md (default $TMPDIR/guestreset-bench)
#
# Environment:
#   CARGO_TARGET_DIR   cargo's target directory (default target/)
#   GUESTRESET_BENCH_TIMEOUT  seconds the benchmark may take (default 3600)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIMEOUT=${GUESTRESET_BENCH_TIMEOUT:-3600}
cd "$ROOT"

die() {
  printf 'bench.sh: error: %s\n' "$*" >&2
  exit 1
}

# curl and jq are what the B4 shell loop uses, as people do by hand.
for tool in cargo curl jq openssl flock timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done

# Every endpoint the benchmark uses is on loopback.
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

echo "==> control plane binaries (scripts/controlplane.sh build)" >&2
scripts/controlplane.sh build >/dev/null

echo "==> cargo build --release (the operator and the benchmark)" >&2
cargo build "${locked[@]}" --release -p guestreset --bin guestreset
cargo build "${locked[@]}" --release -p guestreset-bench

target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)}
echo "==> guestreset-bench $*" >&2
# timeout signals its whole process group at the deadline, so nothing outlives it; the
# benchmark's children (control plane, operators) die with it through PR_SET_PDEATHSIG.
exec timeout --kill-after=30 "$TIMEOUT" \
  "$target_dir/release/guestreset-bench" --operator "$target_dir/release/guestreset" "$@"
