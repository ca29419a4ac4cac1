#!/usr/bin/env bash
# guestreset end to end on this machine, in one command: a local Kubernetes control
# plane, the Graph simulator seeded with scripts/demo-directory.yaml, the controller,
# and the manifests of examples/ applied to namespace `identity`. Prints the resources,
# the Graph calls the controller made and the redeem-URL Secret, then follows through:
# one guest redeems its new invitation (Redeemed=True), the others stay pending. Then it
# stops everything.
#
#   scripts/demo.sh             run the demo, then stop what it started
#   scripts/demo.sh --approval  the same with four eyes: the chart's admission policy, the
#                               controller with --require-approval, alice (a requester) asking
#                               through kubectl, and bob (an approver) approving each reset with
#                               the kubectl plugin after reading its plan
#   scripts/demo.sh --migration a domain migration instead: 20 guests of northwind.example
#                               moved to northwind-traders.example as one plan that alice asks
#                               for, bob approves by its digest, and the controller issues
#                               (with four eyes, at 120 writes a minute to keep it short)
#   scripts/demo.sh --keep      leave it running to explore; prints how to use and stop it
#   scripts/demo.sh --stop      stop a demo left running by --keep
#
# Needs Rust, Go and openssl (plus curl and jq). The first run builds kube-apiserver,
# etcd and kubectl from source (scripts/controlplane.sh; cached afterwards), and with
# --approval also Helm (scripts/helm.sh), to render the chart's policy and roles.
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
MIGRATION_CRD_FILE=$ROOT/crds/guestdomainmigrations.guestreset.io.yaml
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
  sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

MODE=run
APPROVAL=false
MIGRATION=false
for arg in "$@"; do
  case $arg in
    --keep) MODE=keep ;;
    --approval) APPROVAL=true ;;
    --migration)
      MIGRATION=true
      APPROVAL=true
      ;;
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

# ------------------------------------------------------------------ four eyes (--approval)

# A person of the demo: a client certificate signed by the control plane's CA (CN the user
# name, one O per group), and a kubeconfig for them alone. $1 name, then the groups.
make_person() {
  local name=$1 dir=$STATE/people subject="" group
  shift
  for group in "$@"; do subject+="/O=$group"; done
  mkdir -p "$dir"
  (
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
    openssl req -new -key "$dir/$name.key" -subj "$subject/CN=$name" -out "$dir/$name.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$CP_DIR/pki/ca.crt" -CAkey "$CP_DIR/pki/ca.key" \
      -CAcreateserial -days 1 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  ) || die "could not make a certificate for $name"
  local kc=$dir/$name.kubeconfig
  cp "$KUBECONFIG" "$kc"
  kubectl --kubeconfig "$kc" config set-credentials "$name" --embed-certs \
    --client-certificate "$dir/$name.crt" --client-key "$dir/$name.key" >/dev/null
  kubectl --kubeconfig "$kc" config set-context --current --user "$name" --namespace "$NAMESPACE" >/dev/null
}

# kubectl and the plugin as a person of the demo.
as() {
  local who=$1
  shift
  KUBECONFIG=$STATE/people/$who.kubeconfig "$@"
}

# The chart's policy and people's roles (rendered by Helm for a release named guestreset in
# namespace identity, the controller being this demo's admin identity), the example RoleBindings,
# and alice and bob.
four_eyes_setup() {
  say "Four eyes: the chart's admission policy and roles, and two people"
  "$HELM" template guestreset "$ROOT/charts/guestreset" --namespace "$NAMESPACE" \
    --set watchNamespace="$NAMESPACE" --set requireApproval=true \
    --set-string admissionPolicy.controllerUsername=guestreset-admin \
    --show-only templates/admissionpolicy.yaml --show-only templates/userroles.yaml |
    kubectl apply -f -
  kubectl apply -f "$ROOT/examples/rbac/requesters.yaml" -f "$ROOT/examples/rbac/approvers.yaml"
  make_person alice guestreset-requesters guestreset-approvers
  make_person bob guestreset-approvers
  note "alice asks for resets and approves others' (groups guestreset-requesters, guestreset-approvers);"
  note "bob approves (group guestreset-approvers)"
  note "kubectl auth can-i approve guestredemptionresets.guestreset.io -n $NAMESPACE:" \
    "alice $(kubectl auth can-i approve guestredemptionresets.guestreset.io -n "$NAMESPACE" --as alice --as-group guestreset-approvers || true)," \
    "bob $(kubectl auth can-i approve guestredemptionresets.guestreset.io -n "$NAMESPACE" --as bob --as-group guestreset-approvers || true)"
}

# alice applies examples/ naming herself as requester (admission holds the annotation to her
# user name); the controller plans each and waits; bob reads a plan and approves each reset.
four_eyes_requests_and_approvals() {
  say "alice applies examples/, naming herself in guestreset.io/requested-by"
  local file
  for file in "$ROOT"/examples/*.yaml; do
    as alice kubectl annotate --local -f "$file" guestreset.io/requested-by=alice -o yaml |
      as alice kubectl apply -n "$NAMESPACE" -f -
  done
  note "a forged requester is refused by the API server:"
  kubectl annotate --local -f "$ROOT/examples/reset-by-id.yaml" guestreset.io/requested-by=bob -o yaml |
    sed 's/name: alice-to-newco/name: forged-request/' |
    as alice kubectl apply -n "$NAMESPACE" -f - 2>&1 | sed 's/^/      /' || true

  say "The controller plans each reset and waits for approval (nothing is written to Graph)"
  local deadline=$((SECONDS + 60)) waiting
  until waiting=$(kubectl get grr -n "$NAMESPACE" -o json | jq '[.items[]
      | select(.spec.dryRun != true)
      | select(((.status.conditions // []) | map(select(.type == "Ready"))[0].reason) == "AwaitingApproval")]
      | length') && [[ $waiting -eq $(jq -n "$(find "$ROOT/examples" -maxdepth 1 -name '*.yaml' | wc -l) - 1") ]]; do
    ((SECONDS < deadline)) || die "not every reset is AwaitingApproval; see kubectl get grr -n $NAMESPACE"
    sleep 1
  done
  as bob "$PLUGIN" status
  note "the plan bob reviews:"
  as bob "$PLUGIN" plan alice-to-newco | sed 's/^/      /'
  note "Graph writes so far: $(sim journal | jq '[.[] | select(.call == "PatchUser" or .call == "PostInvitation")] | length')"

  say "alice may approve, but not her own request: the API server refuses"
  as alice "$PLUGIN" approve alice-to-newco --generation 1 --reason "I checked it myself" 2>&1 | tail -n 1 | sed 's/^/      /' || true

  say "bob approves each reset with kubectl guestreset approve"
  local name
  for name in $(kubectl get grr -n "$NAMESPACE" -o json |
    jq -r '.items[] | select(.spec.dryRun != true) | .metadata.name'); do
    as bob "$PLUGIN" approve "$name" --generation 1 --reason "CHG-20931 reviewed by bob" | tail -n 1 | sed 's/^/      /'
  done
}

# ------------------------------------------------------------------ a domain migration (--migration)

# The 20 guests and one member of northwind.example, added to the demo's directory.
migration_seed() {
  local i
  cat "$SEED_FILE"
  printf '\n# scripts/demo.sh --migration: the guests of northwind.example, and one member.\n'
  for i in $(seq -w 1 20); do
    printf -- '- id: 4e0000%s-1111-4222-8333-444444444444\n  userPrincipalName: "guest%s_northwind.example#EXT#@fabrikam.onmicrosoft.com"\n  userType: Guest\n  mail: guest%s@northwind.example\n' "$i" "$i" "$i"
  done
  printf -- '- id: 4e000099-1111-4222-8333-444444444444\n  userPrincipalName: "boss@northwind.example"\n  userType: Member\n  mail: boss@northwind.example\n'
}

migration_demo() {
  say "alice asks for a domain migration: northwind.example -> northwind-traders.example"
  as alice kubectl apply -n "$NAMESPACE" -f - <<'EOF_MIGRATION'
apiVersion: guestreset.io/v1alpha1
kind: GuestDomainMigration
metadata:
  name: northwind
  annotations:
    guestreset.io/requested-by: alice
spec:
  from: northwind.example
  to: northwind-traders.example
  changeRef: CHG-31000
EOF_MIGRATION
  say "The controller pages the directory and records the plan; nothing is written to Graph"
  local deadline=$((SECONDS + 60))
  until [[ $(kubectl get gdm -n "$NAMESPACE" northwind -o json |
    jq -r '(.status.conditions // []) | map(select(.type == "Ready"))[0].reason // ""') == AwaitingApproval ]]; do
    ((SECONDS < deadline)) || die "the migration was not planned within 60 s"
    sleep 1
  done
  kubectl get gdm -n "$NAMESPACE"
  as bob "$PLUGIN" migration status northwind | sed 's/^/    /'
  note "the plan (ConfigMap northwind-plan), first lines: id, new e-mail, current mail"
  kubectl get configmap -n "$NAMESPACE" northwind-plan -o jsonpath='{.data.planned}' | head -n 3 | sed 's/^/      /'
  note "excluded: $(kubectl get configmap -n "$NAMESPACE" northwind-plan -o jsonpath='{.data.excluded}')"
  note "Graph writes so far: $(sim journal | jq '[.[] | select(.call == "PatchUser" or .call == "PostInvitation")] | length')"

  local status digest admitted
  status=$(kubectl get gdm -n "$NAMESPACE" northwind -o json)
  digest=$(jq -r .status.plan.digest <<<"$status")
  admitted=$(jq -c .status.admittedUnder <<<"$status")
  approval() {
    jq -cn --arg by "$1" --arg digest "$digest" --argjson admitted "$admitted" --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      '{status: {approval: {generation: 1, decision: "Approved", by: $by, groups: ["guestreset-approvers"],
        at: $at, reason: "CHG-31000 reviewed", digest: $digest, admittedUnder: $admitted}}}'
  }
  say "alice may not approve her own plan: the API server refuses"
  as alice kubectl patch gdm -n "$NAMESPACE" northwind --subresource=status --type merge \
    -p "$(approval alice)" 2>&1 | tail -n 1 | sed 's/^/      /' || true
  say "bob approves the plan by its digest ($digest)"
  as bob kubectl patch gdm -n "$NAMESPACE" northwind --subresource=status --type merge -p "$(approval bob)" |
    sed 's/^/      /'

  say "The controller creates one reset per guest; each is issued at the write limit"
  deadline=$((SECONDS + READY_TIMEOUT))
  local reason=""
  while :; do
    reason=$(kubectl get gdm -n "$NAMESPACE" northwind -o json |
      jq -r '(.status.conditions // []) | map(select(.type == "Ready"))[0].reason // ""')
    as bob "$PLUGIN" migration status northwind | grep -E '^(Progress|Ready):' | sed 's/^/    /'
    [[ $reason == Completed || $reason == CompletedWithFailures ]] && break
    ((SECONDS < deadline)) || die "the migration did not complete within ${READY_TIMEOUT}s"
    sleep 3
  done
  as bob "$PLUGIN" migration status northwind | sed 's/^/    /'
  kubectl get grr -n "$NAMESPACE" -l guestreset.io/migration=northwind | head -n 6
  note "... $(kubectl get grr -n "$NAMESPACE" -l guestreset.io/migration=northwind -o name | wc -l) resets in all, owned by the migration"
  local journal
  journal=$(sim journal)
  note "invitations posted: $(jq '[.[] | select(.call == "PostInvitation")] | length' <<<"$journal")," \
    "to distinct guests: $(jq '[.[] | select(.call == "PostInvitation") | .invited_user_id] | unique | length' <<<"$journal")," \
    "to the member: $(jq '[.[] | select(.call == "PostInvitation" and .invited_user_id == "4e000099-1111-4222-8333-444444444444")] | length' <<<"$journal")"
  note "directory pages read for the plan: $(jq '[.[] | select(.call == "ListUsers" and ((.query // "") | contains("endswith")))] | length' <<<"$journal")"
  say "Events of the migration"
  kubectl get events -n "$NAMESPACE" --field-selector involvedObject.name=northwind \
    -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers 2>/dev/null | sed 's/^/    /' || true
}

# ------------------------------------------------------------------ build

say "Building guestreset and graph-sim (cargo build --bins; the first build takes a few minutes)"
locked=()
[[ -f $ROOT/Cargo.lock ]] && locked=(--locked)
(cd "$ROOT" && cargo build "${locked[@]}" --bins -p guestreset -p graph-sim)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps "${locked[@]}" | jq -r .target_directory)
GUESTRESET=$TARGET_DIR/debug/guestreset
GRAPH_SIM=$TARGET_DIR/debug/graph-sim
PLUGIN=$TARGET_DIR/debug/kubectl-guestreset
[[ -x $GUESTRESET && -x $GRAPH_SIM && -x $PLUGIN ]] || die "built binaries not found under $TARGET_DIR/debug"
if [[ $APPROVAL == true ]]; then
  say "Building Helm if not cached (scripts/helm.sh), to render the chart's policy and roles"
  HELM=$("$ROOT/scripts/helm.sh" build)
fi

say "Building the control plane binaries if not cached (the first time this compiles kube-apiserver from source)"
"$ROOT/scripts/controlplane.sh" build

# ------------------------------------------------------------------ start

say "Starting the local control plane (etcd + kube-apiserver on loopback)"
"$ROOT/scripts/controlplane.sh" start "$CP_DIR" >/dev/null
# shellcheck source=/dev/null
source "$CP_DIR/env" # KUBECONFIG, and PATH with the kubectl of the same release
note "KUBECONFIG=$KUBECONFIG"

say "Installing the CRDs"
kubectl apply -f "$CRD_FILE" -f "$MIGRATION_CRD_FILE"
kubectl wait --for=condition=Established --timeout=60s crd/guestredemptionresets.guestreset.io crd/guestdomainmigrations.guestreset.io
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -

CONTROLLER_FLAGS=()
if [[ $APPROVAL == true ]]; then
  four_eyes_setup
  CONTROLLER_FLAGS=(--require-approval --admission-policy guestreset)
fi
if [[ $MIGRATION == true ]]; then
  # A demo's pace: the production default is 6 writes a minute, burst 3.
  CONTROLLER_FLAGS+=(--max-writes-per-minute 120 --write-burst 6)
  mkdir -p "$STATE"
  migration_seed >"$STATE/seed.yaml"
  SEED_FILE=$STATE/seed.yaml
fi

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
  --redemption-first-check "$FIRST_CHECK" "${CONTROLLER_FLAGS[@]}"
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

if [[ $MIGRATION == true ]]; then
  migration_demo
  if [[ $MODE == keep ]]; then
    KEEP_RUNNING=true
    echo
    echo "==> The demo keeps running: export KUBECONFIG=$KUBECONFIG; $PLUGIN migration status northwind -n $NAMESPACE"
    echo "Stop it with: scripts/demo.sh --stop"
  else
    say "Stopping the controller, the simulator and the control plane"
    stop_all
  fi
  exit 0
elif [[ $APPROVAL == true ]]; then
  four_eyes_requests_and_approvals
else
  say "Applying examples/ to namespace $NAMESPACE"
  kubectl apply -n "$NAMESPACE" -f "$ROOT/examples/"
fi

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
if [[ $APPROVAL == true ]]; then
  kubectl get grr -n "$NAMESPACE" -o wide
fi

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
  grep -E '^guestreset_(outcomes_total|graph_requests_total|tenant_paused|leader)[{ ]' |
  grep -vE '^guestreset_outcomes_total.* 0$' | sed 's/^/    /' || true

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
    # the kubectl plugin (docs/plugin.md): status, plans, approvals
    $PLUGIN status -n $NAMESPACE
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
