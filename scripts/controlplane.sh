#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver, no nodes, no
# controller-manager) on loopback, for guestreset's end-to-end tests and for
# humans. The binaries are built from the Go module proxy at the versions pinned
# in scripts/controlplane/go.mod and cached outside the work tree.
#
#   controlplane.sh build        build into the cache if missing; print the bin dir
#   controlplane.sh bin          print the bin dir (building it if missing)
#   controlplane.sh run DIR      run in the foreground until SIGTERM/SIGINT
#   controlplane.sh start DIR    run in the background; print the environment to use
#   controlplane.sh stop DIR     stop what `start DIR` started
#
# Environment:
#   GUESTRESET_CACHE                  cache root (default ${XDG_CACHE_HOME:-~/.cache}/guestreset)
#   GUESTRESET_CONTROLPLANE_TIMEOUT   seconds to wait for /readyz (default 90)
#   GO                                the go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE_DIR=$SCRIPT_DIR/controlplane
CACHE_ROOT=${GUESTRESET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestreset}/controlplane
READY_TIMEOUT=${GUESTRESET_CONTROLPLANE_TIMEOUT:-90}
# Seconds a stopping component gets before SIGKILL.
STOP_GRACE=15

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# find_go
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The whole recipe for the binaries. Its text is part of the cache key, so
# editing it invalidates old builds just as editing go.mod does.
build_recipe() {
  local go=$1 out=$2
  cd "$MODULE_DIR"
  # Static binaries, as Kubernetes releases them; no VCS stamp of this
  # repository, so the output depends only on go.mod, go.sum and this recipe.
  export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
  local version build_date major minor
  version=$("$go" list -m -f '{{.Version}}' k8s.io/kubernetes)
  # The release's own date, not today's, to keep builds reproducible.
  build_date=$("$go" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  major=${version#v}
  major=${major%%.*}
  minor=${version#v*.}
  minor=${minor%%.*}
  # Without these the binaries report v0.0.0-master; Kubernetes' own release
  # build (hack/lib/version.sh) stamps both packages the same way. The commit
  # is left out: the module proxy does not reliably say which one it was.
  local stamp="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  local name start
  for name in etcd kube-apiserver kubectl; do
    case $name in
      etcd) pkg=go.etcd.io/etcd/server/v3 ;;
      *) pkg=k8s.io/kubernetes/cmd/$name ;;
    esac
    start=$(date +%s)
    "$go" build -trimpath -ldflags="-s -w$stamp" -o "$out/$name" "$pkg"
    log "built $name in $(($(date +%s) - start)) s"
  done
  {
    echo "k8s.io/kubernetes $version"
    "$go" list -m -f '{{.Path}} {{.Version}}' go.etcd.io/etcd/server/v3
    "$go" version
  } >"$out/VERSIONS"
}

cache_key() {
  {
    cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum"
    declare -f build_recipe
    uname -sm
  } | sha256sum | cut -c1-12
}

bin_dir() { echo "$CACHE_ROOT/$(cache_key)/bin"; }

# Builds into a temporary sibling and renames it into place, under a lock, so
# parallel callers neither build twice nor see a half-written bin dir.
cmd_build() {
  local bin key_dir
  bin=$(bin_dir)
  key_dir=$(dirname "$bin")
  if [[ ! -x $bin/kubectl ]]; then
    mkdir -p "$key_dir"
    exec 9>"$key_dir/lock"
    flock 9
    if [[ ! -x $bin/kubectl ]]; then
      local go tmp start
      go=$(find_go)
      tmp=$(mktemp -d "$key_dir/bin.tmp.XXXXXX")
      log "building etcd, kube-apiserver, kubectl into $bin (cold: several minutes)"
      start=$(date +%s)
      if ! (build_recipe "$go" "$tmp"); then
        rm -rf "$tmp"
        die "build failed"
      fi
      chmod 755 "$tmp"
      rm -rf "$bin"
      mv "$tmp" "$bin"
      log "build done in $(($(date +%s) - start)) s"
    fi
    exec 9>&-
  fi
  echo "$bin"
}

# ---------------------------------------------------------------- run

# A loopback TCP port that nothing listens on now. Taken from below the Linux
# ephemeral range so outgoing connections are unlikely to grab it meanwhile;
# a lost race is caught by the start-up retry in cmd_run.
# Sets PORT (not printed: a command substitution would lose PICKED_PORTS).
free_port() {
  local used _
  used=$(ss -Htan 2>/dev/null | awk '{n=split($4,a,":"); print a[n]}' | sort -u)
  for _ in $(seq 200); do
    PORT=$((20000 + RANDOM % 12000))
    if ! grep -qx "$PORT" <<<"$used" && [[ " $PICKED_PORTS " != *" $PORT "* ]]; then
      PICKED_PORTS+=" $PORT"
      return
    fi
  done
  die "no free loopback port found"
}

gen_pki() {
  local pki=$1
  [[ -s $pki/admin.crt ]] && return
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    local ec=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256)
    openssl genpkey "${ec[@]}" -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=guestreset-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null

    # $1 name, $2 subject, $3 extensions
    sign() {
      openssl genpkey "${ec[@]}" -out "$1.key" 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
      'basicConstraints=critical,CA:FALSE' \
      'keyUsage=critical,digitalSignature' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1')"
    # system:masters is bound to cluster-admin by the bootstrap RBAC policy and
    # may impersonate, so `kubectl auth can-i --as=...` works from this identity.
    sign admin "/O=system:masters/CN=guestreset-admin" "$(printf '%s\n' \
      'basicConstraints=critical,CA:FALSE' \
      'keyUsage=critical,digitalSignature' \
      'extendedKeyUsage=clientAuth')"
    openssl genpkey "${ec[@]}" -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || die "certificate generation failed"
}

write_kubeconfig() (
  local out=$1 server=$2 pki=$3
  local b64="base64 -w0"
  umask 077
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: guestreset-test
  cluster:
    server: $server
    certificate-authority-data: $($b64 <"$pki/ca.crt")
users:
- name: guestreset-admin
  user:
    client-certificate-data: $($b64 <"$pki/admin.crt")
    client-key-data: $($b64 <"$pki/admin.key")
contexts:
- name: guestreset-test
  context:
    cluster: guestreset-test
    user: guestreset-admin
    namespace: default
current-context: guestreset-test
EOF
)

ETCD_PID=""
APISERVER_PID=""

# Stops one component: SIGTERM, then SIGKILL after STOP_GRACE seconds.
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_components() {
  # The apiserver first, so it does not log etcd errors while shutting down.
  stop_pid "$APISERVER_PID"
  APISERVER_PID=""
  stop_pid "$ETCD_PID"
  ETCD_PID=""
}

# setpriv --pdeathsig makes each component die with this script even when the
# script itself is SIGKILLed and its trap never runs.
launch() {
  if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then
    exec setpriv --pdeathsig TERM -- "$@"
  else
    exec "$@"
  fi
}

# Waits until $1 accepts TCP connections on 127.0.0.1:$2 while pid $3 lives.
wait_listening() {
  local what=$1 port=$2 pid=$3 deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$what did not listen on port $port within ${READY_TIMEOUT}s"
  return 1
}

# Starts etcd and kube-apiserver on fresh ports and waits for /readyz.
# Returns non-zero (with nothing left running) when a component died early.
start_components() {
  local dir=$1 bin=$2
  local etcd_port etcd_peer_port api_port
  PICKED_PORTS=""
  free_port
  etcd_port=$PORT
  free_port
  etcd_peer_port=$PORT
  free_port
  api_port=$PORT
  SERVER=https://127.0.0.1:$api_port

  # No fsync: the data is thrown away with the test run, and fsync on a busy
  # 2-core machine is what makes etcd (and so every write) slow.
  (launch "$bin/etcd" \
    --name=guestreset-test \
    --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="guestreset-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync \
    >>"$dir/etcd.log" 2>&1 </dev/null) &
  ETCD_PID=$!
  echo "$ETCD_PID" >"$dir/etcd.pid"
  if ! wait_listening etcd "$etcd_port" "$ETCD_PID"; then
    log "etcd failed to start; tail of $dir/etcd.log:"
    tail -n 5 "$dir/etcd.log" >&2 || true
    stop_components
    return 1
  fi

  local pki=$dir/pki
  # RBAC only, so permission checks give real answers. The ServiceAccount
  # admission plugin is off because no controller-manager creates the `default`
  # service accounts it insists on (envtest does the same). No endpoint
  # reconciler: it would try to publish 127.0.0.1 as the `kubernetes` service's
  # endpoint, which validation rejects as loopback, and log that forever.
  (launch "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer="https://kubernetes.default.svc" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    >>"$dir/kube-apiserver.log" 2>&1 </dev/null) &
  APISERVER_PID=$!
  echo "$APISERVER_PID" >"$dir/kube-apiserver.pid"

  write_kubeconfig "$dir/kubeconfig.tmp" "$SERVER" "$pki"
  local deadline=$((SECONDS + READY_TIMEOUT))
  while :; do
    if ! kill -0 "$APISERVER_PID" 2>/dev/null; then
      log "kube-apiserver exited; tail of $dir/kube-apiserver.log:"
      tail -n 5 "$dir/kube-apiserver.log" >&2 || true
      stop_components
      return 1
    fi
    if ! kill -0 "$ETCD_PID" 2>/dev/null; then
      log "etcd exited; tail of $dir/etcd.log:"
      tail -n 5 "$dir/etcd.log" >&2 || true
      stop_components
      return 1
    fi
    if [[ $("$bin/kubectl" --kubeconfig="$dir/kubeconfig.tmp" --request-timeout=2s \
      get --raw=/readyz 2>/dev/null) == ok ]]; then
      break
    fi
    if ((SECONDS >= deadline)); then
      stop_components
      die "kube-apiserver not ready within ${READY_TIMEOUT}s; see $dir/kube-apiserver.log"
    fi
    sleep 0.2
  done
  mv "$dir/kubeconfig.tmp" "$dir/kubeconfig"
  cat >"$dir/env" <<EOF
export KUBECONFIG=$dir/kubeconfig
export PATH=$bin:\$PATH
EOF
}

cmd_run() {
  local dir=${1:?run needs a directory}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local bin
  bin=$(cmd_build)
  gen_pki "$dir/pki"
  rm -f "$dir/kubeconfig"

  # Further signals must not cut the cleanup short.
  trap 'trap "" TERM INT HUP; stop_components' EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP

  local attempt
  for attempt in 1 2 3; do
    if start_components "$dir" "$bin"; then
      echo "READY kubeconfig=$dir/kubeconfig server=$SERVER"
      # Wakes on the first component to exit (or on a signal, whose trap runs
      # next); either way the EXIT trap stops the other one.
      local rc=0
      wait -n "$ETCD_PID" "$APISERVER_PID" || rc=$?
      log "a component exited (status $rc); stopping"
      exit 1
    fi
    log "start-up attempt $attempt failed; retrying on other ports"
  done
  die "could not start the control plane; logs are in $dir"
}

cmd_start() {
  local dir=${1:?start needs a directory}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/run.pid ]] && kill -0 "$(cat "$dir/run.pid")" 2>/dev/null; then
    die "already running in $dir (pid $(cat "$dir/run.pid")); stop it first"
  fi
  # Build in the foreground so the build's progress is visible.
  cmd_build >/dev/null
  : >"$dir/run.out"
  setsid bash "${BASH_SOURCE[0]}" run "$dir" >"$dir/run.out" 2>"$dir/run.err" </dev/null &
  local pid=$! deadline=$((SECONDS + READY_TIMEOUT + 30))
  echo "$pid" >"$dir/run.pid"
  while ! grep -q '^READY ' "$dir/run.out"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$dir/run.err" >&2
      die "control plane failed to start; see $dir"
    fi
    if ((SECONDS >= deadline)); then
      kill -TERM "$pid" 2>/dev/null || true
      die "control plane not ready in time; see $dir"
    fi
    sleep 0.2
  done
  log "$(grep '^READY ' "$dir/run.out")"
  log "stop with: ${BASH_SOURCE[0]} stop $dir"
  cat "$dir/env"
}

cmd_stop() {
  local dir=${1:?stop needs a directory}
  [[ -f $dir/run.pid ]] || die "nothing started in $dir"
  local pid i
  pid=$(cat "$dir/run.pid")
  if kill -TERM "$pid" 2>/dev/null; then
    # The run script's trap gives each component STOP_GRACE seconds.
    for ((i = 0; i < (2 * STOP_GRACE + 5) * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      die "pid $pid did not stop"
    fi
  fi
  rm -f "$dir/run.pid"
  log "stopped"
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    build | bin) cmd_build ;;
    run) cmd_run "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
  esac
}

# On one line, so bash has read all it needs before running anything: editing
# this file under a running control plane cannot derail it.
main "$@"; exit
