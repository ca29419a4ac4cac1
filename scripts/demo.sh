#!/usr/bin/env bash
# guestreset end to end on this machine, in one command: a local Kubernetes control
# plane, the Graph simulator seeded with scripts/demo-directory.yaml, the controller,
# and the manifests of examples/ applied to namespace `identity`. Prints the resources,
# the Graph calls the controller made and the redeem-URL Secret, then follows through:
# one guest redeems its new invitation (Redeemed=True), the others stay pending. Then it
# stops everything.
#
#   scripts/demo.sh           run the demo, then stop what it started
#   scripts/demo.sh --keep    leave it running to explore; prints how to use and stop it
#   scripts/demo.sh --stop    stop a demo left running by --keep
#
# Needs Rust, Go and openssl (plus curl and jq). The first run builds kube-apiserver,
# etcd and kubectl from source (scripts/controlplane.sh; cached afterwards).
#
# Environment:
#   GUESTRESET_DEMO_DIR       state and logs (default .local/demo in the repository)
#   GUESTRESET_DEMO_TIMEOUT   seconds to wait for every resource to be Ready (default 300)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${GUESTRESET_DEMO_DIR:-$ROOT/.local/demo}
READY_TIMEOUT=${GUESTRESET_DEMO_TIMEOUT:-300}
NAMESPACE=identity
CP_DIR=$STATE/controlplane
SIM_DIR=$STATE/graph-sim
CRD_FILE=$ROOT/crds/guestredemptionresets.guestreset.io.yaml
SEED_FILE=$ROOT/scripts/demo-directory.yaml
# The simulator's default application identity (tests/graph-sim/src/lib.rs).
SIM_TENANT_ID=00000000-0000-0000-0000-0000000000aa
SIM_CLIENT_ID=00000000-0000-0000-0000-0000000000bb
SIM_CLIENT_SECRET=sim-secret
# Seconds a stopping process gets before SIGKILL.
STOP_GRACE=20
# The follow-through's first interval; 5 minutes in production, seconds for a demo (the
# later intervals scale with it: docs/resource.md, "Following through").
FIRST_CHECK=5s
# The guest of examples/reset-by-id.yaml, who redeems in the demo.
ALICE_ID=3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41

START=$SECONDS
say() { printf '\n==> [%3ds] %s\n' $((SECONDS - START)) "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
  printf '\ndemo: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

MODE=run
for arg in "$@"; do
  case $arg in
    --keep) MODE=keep ;;
    --stop) MODE=stop ;;
    -h | --help) usage 0 ;;
    *)
      echo "demo: unknown argument: $arg" >&2
      usage 2 >&2
      ;;
  esac
done

# ------------------------------------------------------------------ processes

# Starts a program in its own session (Ctrl-C in the terminal reaches only this script,
# whose trap stops it; with --keep it outlives the script) and records its pid.
# $1 pid file, $2 log file, then the command.
start_daemon() {
  local pid_file=$1 log_file=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" "$@" >"$log_file" 2>&1 </dev/null &
  local deadline=$((SECONDS + 10))
  until [[ -s $pid_file ]]; do
    ((SECONDS < deadline)) || die "could not start $*"
    sleep 0.1
  done
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops the process of a pid file if it still runs the program named $2 (a recycled pid
# is left alone): SIGTERM, then SIGKILL after STOP_GRACE seconds.
stop_daemon() {
  local pid_file=$1 program=$2 pid command_line i
  [[ -s $pid_file ]] || return 0
  pid=$(cat "$pid_file")
  command_line=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
  if [[ $command_line == *"$program"* ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

stop_all() {
  stop_daemon "$STATE/guestreset.pid" guestreset
  stop_daemon "$STATE/graph-sim.pid" graph-sim
  if [[ -f $CP_DIR/run.pid ]]; then
    "$ROOT/scripts/controlplane.sh" stop "$CP_DIR" 2>/dev/null || true
  fi
}

if [[ $MODE == stop ]]; then
  stop_all
  echo "demo: stopped (state and logs remain in $STATE)"
  exit 0
fi

# ------------------------------------------------------------------ checks

for tool in cargo openssl curl jq setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (see README.md, 'What you need')"
done

# Nothing here may go through a proxy: every endpoint is on loopback.
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

KEEP_RUNNING=false
cleanup() {
  local rc=$?
  trap '' INT TERM HUP
  if [[ $KEEP_RUNNING == true ]]; then
    return
  fi
  if ((rc != 0)); then
    printf '\ndemo: stopping what was started (exit %d); logs are in %s\n' "$rc" "$STATE" >&2
  fi
  stop_all
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A demo left running by --keep, or one killed without its trap, is replaced.
stop_all
rm -rf "$CP_DIR" "$SIM_DIR"
mkdir -p "$STATE"
rm -f "$STATE"/*.log

# ------------------------------------------------------------------ build

say "Building guestreset and graph-sim (cargo build --bins; the first build takes a few minutes)"
locked=()
[[ -f $ROOT/Cargo.lock ]] && locked=(--locked)
(cd "$ROOT" && cargo build "${locked[@]}" --bins -p guestreset -p graph-sim)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps "${locked[@]}" | jq -r .target_directory)
GUESTRESET=$TARGET_DIR/debug/guestreset
GRAPH_SIM=$TARGET_DIR/debug/graph-sim
[[ -x $GUESTRESET && -x $GRAPH_SIM ]] || die "built binaries not found under $TARGET_DIR/debug"

say "Building the control plane binaries if not cached (the first time this compiles kube-apiserver from source)"
"$ROOT/scripts/controlplane.sh" build

# ------------------------------------------------------------------ start

say "Starting the local control plane (etcd + kube-apiserver on loopback)"
"$ROOT/scripts/controlplane.sh" start "$CP_DIR" >/dev/null
# shellcheck source=/dev/null
source "$CP_DIR/env" # KUBECONFIG, and PATH with the kubectl of the same release
note "KUBECONFIG=$KUBECONFIG"

say "Installing the CRD"
kubectl apply -f "$CRD_FILE"
kubectl wait --for=condition=Established --timeout=60s crd/guestredemptionresets.guestreset.io

say "Starting graph-sim, the simulated Microsoft Graph, seeded with scripts/demo-directory.yaml"
start_daemon "$STATE/graph-sim.pid" "$STATE/graph-sim.log" \
  "$GRAPH_SIM" --bind 127.0.0.1:0 --state-dir "$SIM_DIR" --seed "$SEED_FILE"
deadline=$((SECONDS + 30))
until grep -q '^LISTENING ' "$STATE/graph-sim.log" 2>/dev/null; do
  alive "$STATE/graph-sim.pid" || { cat "$STATE/graph-sim.log" >&2; die "graph-sim exited"; }
  ((SECONDS < deadline)) || die "graph-sim did not listen within 30 s; see $STATE/graph-sim.log"
  sleep 0.2
done
SIM_URL=$(cat "$SIM_DIR/base_url")
SIM_CA=$SIM_DIR/ca.pem
sim() { curl -sS --fail --max-time 10 --cacert "$SIM_CA" "$SIM_URL/_sim/$1"; }
note "$SIM_URL (CA $SIM_CA)"
sim users | jq -r '.[] | "    \(.userType)\t\(.userPrincipalName)\tmail \(.mail // "-")"'

say "Starting the controller: guestreset run (log: $STATE/guestreset.log)"
start_daemon "$STATE/guestreset.pid" "$STATE/guestreset.log" \
  env -u AZURE_FEDERATED_TOKEN_FILE -u AZURE_CLIENT_CERTIFICATE_PATH \
  AZURE_TENANT_ID=$SIM_TENANT_ID AZURE_CLIENT_ID=$SIM_CLIENT_ID AZURE_CLIENT_SECRET=$SIM_CLIENT_SECRET \
  AZURE_AUTHORITY_HOST="$SIM_URL" GRAPH_ENDPOINT="$SIM_URL" SSL_CERT_FILE="$SIM_CA" \
  KUBECONFIG="$KUBECONFIG" NO_COLOR=1 \
  "$GUESTRESET" run --log-format text --metrics-addr 127.0.0.1:0 \
  --redemption-first-check "$FIRST_CHECK"
deadline=$((SECONDS + 30))
METRICS_ADDR=""
until [[ -n $METRICS_ADDR ]] && curl -sf --max-time 2 "http://$METRICS_ADDR/readyz" >/dev/null; do
  alive "$STATE/guestreset.pid" || {
    cat "$STATE/guestreset.log" >&2
    die "the controller exited"
  }
  ((SECONDS < deadline)) || die "the controller was not ready within 30 s; see $STATE/guestreset.log"
  sleep 0.2
  METRICS_ADDR=$(sed -n 's/.*admin endpoints listening addr=\([0-9.:]*\).*/\1/p' "$STATE/guestreset.log" | head -n1)
done
note "ready (/readyz); metrics at http://$METRICS_ADDR/metrics"

say "Creating namespace $NAMESPACE and applying examples/"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NAMESPACE" -f "$ROOT/examples/"

# ------------------------------------------------------------------ wait

total=$(find "$ROOT/examples" -maxdepth 1 -name '*.yaml' | wc -l)
say "Waiting for all $total resources to be Ready (up to ${READY_TIMEOUT}s)"
note "Graph writes go through the controller-wide limit (6 per minute, burst 3): the mail"
note "PATCHes and invitation POSTs of this demo take a minute or so."
deadline=$((SECONDS + READY_TIMEOUT))
last=""
last_print=0
while :; do
  alive "$STATE/guestreset.pid" || {
    tail -n 30 "$STATE/guestreset.log" >&2
    die "the controller exited; see $STATE/guestreset.log"
  }
  # Ready for the current generation: True counts as done, False as failed.
  progress=$(kubectl get grr -n "$NAMESPACE" -o json --request-timeout=10s | jq -r '
    [.items[] | . as $o | ((.status.conditions // []) | map(select(.type == "Ready"))[0]) as $r
      | {ready: ($r != null and $r.observedGeneration == $o.metadata.generation and $r.status == "True"),
         failed: ($r != null and $r.observedGeneration == $o.metadata.generation and $r.status == "False"),
         reason: ($r.reason // "none")}]
    | "\(map(select(.ready)) | length) \(map(select(.failed)) | length) \(length) "
      + (group_by(.reason) | map("\(.[0].reason) \(length)") | join(", "))') || progress=""
  read -r ready failed seen reasons <<<"$progress" || true
  if [[ -n $progress && ($progress != "$last" || $((SECONDS - last_print)) -ge 15) ]]; then
    note "$(printf '[%3ds] Ready %s/%s   %s' $((SECONDS - START)) "${ready:-0}" "$total" "$reasons")"
    last=$progress
    last_print=$SECONDS
  fi
  if [[ ${failed:-0} -gt 0 ]]; then
    kubectl get grr -n "$NAMESPACE"
    die "a resource failed; see kubectl describe grr -n $NAMESPACE and $STATE/guestreset.log"
  fi
  if [[ ${seen:-0} -eq $total && ${ready:-0} -eq $total ]]; then
    break
  fi
  if ((SECONDS >= deadline)); then
    kubectl get grr -n "$NAMESPACE" || true
    tail -n 30 "$STATE/guestreset.log" >&2
    die "not every resource was Ready within ${READY_TIMEOUT}s"
  fi
  sleep 1
done

# ------------------------------------------------------------------ report

say "kubectl get grr -n $NAMESPACE"
kubectl get grr -n "$NAMESPACE"

say "What each resource says (Ready's message)"
kubectl get grr -n "$NAMESPACE" -o json | jq -r '.items[] | "    \(.metadata.name): "
  + ((.status.conditions // []) | map(select(.type == "Ready"))[0].message)'

say "Graph calls made by the controller (from the simulator's journal)"
journal=$(sim journal)
printf '    %-16s %-7s %s\n' CALL STATUS COUNT
jq -r 'map(select(.call != "Other")) | group_by([.call, .status]) | .[]
  | "\(.[0].call)\t\(.[0].status)\t\(length)"' <<<"$journal" |
  while IFS=$'\t' read -r call status count; do printf '    %-16s %-7s %s\n' "$call" "$status" "$count"; done

users=$(sim users)
invitations=$(sim invitations)
say "Invitations posted ($(jq length <<<"$invitations")), each a redemption reset"
jq -r --argjson users "$users" '.[] | . as $i
  | ($users | map(select(.id == $i.user_id))[0].userPrincipalName // $i.user_id) as $upn
  | "    \($upn) -> \(.invited_user_email_address)   resetRedemption=\(.reset_redemption) sendInvitationMessage=\(.send_invitation_message)"' \
  <<<"$invitations"

say "The directory afterwards"
jq -r '.[] | "    \(.userType)\t\(.userPrincipalName)\tmail \(.mail // "-")\t\(.externalUserState // "-")"' <<<"$users"
jq -r --argjson journal "$journal" --argjson invitations "$invitations" '.[] | select(.userType != "Guest") | . as $u
  | ($journal | map(select(.method == "PATCH" and (.path | contains($u.id)))) | length) as $patches
  | ($invitations | map(select(.user_id == $u.id)) | length) as $invites
  | "    member \($u.userPrincipalName): \($patches) PATCH, \($invites) invitations"
    + (if $patches + $invites == 0 then " (untouched)" else " (TOUCHED)" end)' <<<"$users"
note "hazards recorded by the simulator (a member converted by an invitation): $(sim hazards | jq length)"

say "The redeem URL of frank-silent-reset (a credential: never printed, never in status, events or logs)"
secret_json=$(kubectl get secret -n "$NAMESPACE" frank-redeem-url -o json) || die "Secret frank-redeem-url is missing"
note "Secret $NAMESPACE/frank-redeem-url exists; keys: $(jq -r '.data | keys | join(", ")' <<<"$secret_json"); owner: $(jq -r '.metadata.ownerReferences[0] | "\(.kind)/\(.name)"' <<<"$secret_json")"
unset secret_json
leaks=0
while IFS= read -r url; do
  [[ -n $url ]] || continue
  if grep -qF -- "$url" "$STATE/guestreset.log" || kubectl get grr,events -n "$NAMESPACE" -o json | grep -qF -- "$url"; then
    leaks=$((leaks + 1))
  fi
done < <(sim secrets | jq -r '.redeem_urls[]')
note "redeem URLs found in the controller log, the resources or the events: $leaks"

say "The controller's own count (http://$METRICS_ADDR/metrics)"
curl -sf --max-time 5 "http://$METRICS_ADDR/metrics" |
  grep -E '^guestreset_(outcomes_total|graph_requests_total|tenant_paused|leader)[{ ]' | sed 's/^/    /' || true

say "Following through: has each guest redeemed the new invitation? (Redeemed condition)"
note "alice redeems hers now (the simulator plays the guest: externalUserState Accepted);"
note "the controller reads each guest on a schedule (here every ${FIRST_CHECK} at first) within its read budget."
curl -sS --fail --max-time 10 --cacert "$SIM_CA" -X POST "$SIM_URL/_sim/users/$ALICE_ID/redeem" >/dev/null
kubectl wait -n "$NAMESPACE" grr/alice-to-newco --for=condition=Redeemed --timeout=120s
# The others are issued and pending: their Redeemed condition is Unknown/PendingAcceptance.
deadline=$((SECONDS + 60))
until kubectl get grr -n "$NAMESPACE" bob-recreated-account -o json |
  jq -e '.status.conditions[]? | select(.type == "Redeemed" and .reason == "PendingAcceptance")' >/dev/null; do
  ((SECONDS < deadline)) || die "bob-recreated-account has no pending Redeemed condition"
  sleep 1
done
kubectl get grr -n "$NAMESPACE"
kubectl get grr -n "$NAMESPACE" -o json | jq -r '.items[] | "    \(.metadata.name): "
  + (((.status.conditions // []) | map(select(.type == "Redeemed"))[0]) as $c
     | if $c == null then "no follow-through (dry run)" else "\($c.reason): \($c.message)" end)'
curl -sf --max-time 5 "http://$METRICS_ADDR/metrics" |
  grep -E '^guestreset_(redemptions_pending|redemption_oldest_pending_age_seconds|redemption_outcomes_total|redemption_checks_total)[{ ]' |
  sed 's/^/    /' || true
note "(the pending gauges are counted every 10 s; alert on the oldest age: docs/operations.md)"

say "Events in $NAMESPACE by reason"
kubectl get events -n "$NAMESPACE" -o json | jq -r '.items | group_by(.reason)
  | map("\(.[0].reason) \(map(.count // 1) | add)") | "    " + join(", ")'

if [[ $MODE == keep ]]; then
  KEEP_RUNNING=true
  cat <<EOF

==> The demo keeps running. Try:
    export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH
    kubectl get grr -n $NAMESPACE -w
    kubectl describe grr -n $NAMESPACE alice-to-newco
    # a spec edit is a new generation: issued once more
    kubectl patch grr -n $NAMESPACE alice-to-newco --type merge -p '{"spec":{"email":"alice@newco2.example"}}'
    kubectl wait grr -n $NAMESPACE alice-to-newco --for=condition=Ready --timeout=2m
    # the guest redeems the new invitation; the follow-through sees it at its next check
    curl -s --cacert $SIM_CA -X POST $SIM_URL/_sim/users/$ALICE_ID/redeem | jq .externalUserState
    kubectl wait grr -n $NAMESPACE alice-to-newco --for=condition=Redeemed --timeout=2m
    # what Graph saw, and the controller's metrics
    curl -s --cacert $SIM_CA $SIM_URL/_sim/journal | jq
    curl -s http://$METRICS_ADDR/metrics
    less $STATE/guestreset.log
Stop it with: scripts/demo.sh --stop
EOF
else
  say "Stopping the controller, the simulator and the control plane"
  stop_all
  note "logs remain in $STATE"
fi
say "Done"
