#!/usr/bin/env bash
# More seeds of the end-to-end chaos test (tests/chaos/) than CI runs: two controllers
# without leader election, random SIGKILLs and restarts, every Graph simulator fault, spec
# edits, retries and changes to the directory by others, then the invariants of
# docs/design.md ("The chaos test"). Not part of CI: a seed takes about two minutes (fast)
# or three (default).
#
#   scripts/chaos.sh                       seeds 1..5 of both profiles
#   scripts/chaos.sh --profile default     only the production rates (6 writes/min, burst 3)
#   scripts/chaos.sh --profile fast        only 600 writes/min, burst 20
#   scripts/chaos.sh --seeds N             N seeds (from --first, default 1)
#   scripts/chaos.sh --seeds N --resources M --seconds T --first S
#
# Prints one line of figures per seed (profile, resources, generations, effective POSTs,
# kills, faults fired, excused races, invariant violations), then every violation with its
# seed; exits 1 if there was any. Rerun one seed alone with
# CHAOS_PROFILES=P CHAOS_SEEDS=S cargo test --test chaos -- --nocapture
# (CHAOS_RESOURCES and CHAOS_SECONDS override the profile's figures).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

seeds=5
resources=
seconds=
profile=fast,default
first=1
usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while (($#)); do
  case $1 in
    --seeds) seeds=${2:?--seeds needs a number}; shift 2 ;;
    --resources) resources=${2:?--resources needs a number}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --profile) profile=${2:?--profile needs fast, default or fast,default}; shift 2 ;;
    --first) first=${2:?--first needs a number}; shift 2 ;;
    -h | --help) usage 0 ;;
    *) printf 'chaos.sh: unknown argument %s\n' "$1" >&2; usage 2 ;;
  esac
done
[[ $seeds =~ ^[1-9][0-9]*$ && $resources =~ ^([1-9][0-9]*)?$ && $seconds =~ ^([1-9][0-9]*)?$ &&
  $first =~ ^[0-9]+$ ]] ||
  { printf 'chaos.sh: --seeds, --resources, --seconds and --first take whole numbers\n' >&2; exit 2; }
[[ $profile =~ ^(fast|default)(,(fast|default))?$ ]] ||
  { printf 'chaos.sh: --profile takes fast, default or fast,default\n' >&2; exit 2; }

export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

list=$(seq -s, "$first" $((first + seeds - 1)))
log=$(mktemp "${TMPDIR:-/tmp}/guestreset-chaos.XXXXXX")
echo "==> chaos: profiles $profile, seeds $list (full output: $log)"
status=0
CHAOS_PROFILES=$profile CHAOS_SEEDS=$list CHAOS_RESOURCES=$resources CHAOS_SECONDS=$seconds \
  cargo test -p guestreset --features guestreset/failpoints --test chaos -- --nocapture \
  >"$log" 2>&1 || status=$?

echo
grep -E '^chaos seed=' "$log" | sed -E 's/^chaos //' || true
total=$(grep -E '^chaos seed=' "$log" | sed -nE 's/.* violations=([0-9]+).*/\1/p' | awk '{s += $1} END {print s + 0}')
ran=$(grep -cE '^chaos seed=' "$log" || true)
runs=$((seeds * $(tr ',' '\n' <<<"$profile" | wc -l)))
echo "==> $ran of $runs seed runs ran; $total invariant violations"
if ((status != 0)); then
  echo
  grep -E '^==== seed' "$log" || tail -n 40 "$log"
  exit 1
fi
