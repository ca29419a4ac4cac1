#!/usr/bin/env bash
# The mutation check of the chaos test (docs/design.md, "Tests that can fail"): runs one chaos
# seed per planted defect of src/mutants.rs, the defect planted in both controllers through
# GUESTRESET_MUTANT (honoured only by builds with the test-only `failpoints` feature), and
# says which the chaos invariants caught. CI runs the model test's mutation check, not this
# one: a seed takes two to three minutes.
#
#   scripts/mutants.sh                      every planted defect, seed 1 of the default profile
#   scripts/mutants.sh --profile fast       at 600 writes a minute instead
#   scripts/mutants.sh --seed S             another seed
#   scripts/mutants.sh IgnorePause ...      only these defects
#
# Prints one line per defect (caught, with the invariants it broke; or missed) and exits 1 when
# a defect went uncaught or the unplanted control run found a violation.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Every variant of `Mutant` (a unit test keeps this list equal to the enum).
mutants=(MemberIsGuest PostAgainAfterMark IgnorePause NoFreshRead PauseHidesAnswer IgnoreForeignSecret IgnoreEmailHolders SendAfterWindow RefusalKeepsMail WorkWhileStopping SlotsInHandNotCounted)

profile=default
seed=1
chosen=()
while (($#)); do
  case $1 in
    --profile) profile=${2:?--profile needs fast or default}; shift 2 ;;
    --seed) seed=${2:?--seed needs a number}; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) printf 'mutants.sh: unknown option %s\n' "$1" >&2; exit 2 ;;
    *) chosen+=("$1"); shift ;;
  esac
done
[[ $profile =~ ^(fast|default)$ && $seed =~ ^[0-9]+$ ]] ||
  { printf 'mutants.sh: --profile takes fast or default, --seed a number\n' >&2; exit 2; }
if ((${#chosen[@]} > 0)); then
  for name in "${chosen[@]}"; do
    [[ " ${mutants[*]} " == *" $name "* ]] ||
      { printf 'mutants.sh: no planted defect %s (known: %s)\n' "$name" "${mutants[*]}" >&2; exit 2; }
  done
  mutants=("${chosen[@]}")
fi

export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY
dir=$(mktemp -d "${TMPDIR:-/tmp}/guestreset-mutants.XXXXXX")
echo "==> mutation check of the chaos test: profile $profile, seed $seed (logs in $dir)"

# Runs the seed with GUESTRESET_MUTANT=$1 (empty: nothing planted); prints its violation count.
run_seed() {
  local mutant=$1 log="$dir/${1:-control}.log"
  GUESTRESET_MUTANT=$mutant CHAOS_PROFILES=$profile CHAOS_SEEDS=$seed \
    cargo test -p guestreset --features guestreset/failpoints --test chaos -- --nocapture \
    >"$log" 2>&1 || true
  sed -nE 's/^chaos seed=.* violations=([0-9]+).*/\1/p' "$log" | tail -n 1
}

status=0
control=$(run_seed "")
if [[ $control != 0 ]]; then
  echo "control run (nothing planted): ${control:-no result} violations; see $dir/control.log"
  exit 1
fi
echo "control run (nothing planted): 0 violations"
for mutant in "${mutants[@]}"; do
  found=$(run_seed "$mutant")
  broken=$(grep -m1 -oE 'by_invariant=\{[^}]*\}' "$dir/$mutant.log" || true)
  if [[ -n $found && $found != 0 ]]; then
    printf '%-24s caught: %s violations, %s\n' "$mutant" "$found" "$broken"
  else
    printf '%-24s MISSED (%s violations)\n' "$mutant" "${found:-no result}"
    status=1
  fi
done
exit "$status"
