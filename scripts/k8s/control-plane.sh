#!/usr/bin/env bash
# A private Kubernetes control plane on loopback: etcd + kube-apiserver, for `make k8s-validate` (server-side
# dry runs) and as the base that the Kubernetes e2e script adds kube-controller-manager, kube-scheduler and a
# kubelet to.
#
# Usage: scripts/k8s/control-plane.sh start DIR    start (or reuse, when already live) and wait for /readyz
#        scripts/k8s/control-plane.sh stop DIR     stop, by pid, what `start` started in DIR (TERM, then KILL)
#        scripts/k8s/control-plane.sh env DIR      print `export KUBECONFIG=...` lines for eval
#        scripts/k8s/control-plane.sh status DIR   exit 0 when the apiserver in DIR answers /readyz
#
# Everything lives in DIR. Paths that other scripts rely on (keep them stable):
#   DIR/kubeconfig                   admin: a static token in group system:masters, the CA embedded
#   DIR/apiserver.url                https://127.0.0.1:PORT
#   DIR/pki/ca.crt, ca.key           the cluster CA (RSA 2048, openssl); it signs the apiserver's serving and
#                                    kubelet-client certificates; give it to kube-controller-manager as
#                                    --cluster-signing-cert-file/--cluster-signing-key-file and --root-ca-file
#   DIR/pki/sa.key, sa.pub           service-account key pair: the apiserver signs with sa.key and verifies with
#                                    sa.pub; kube-controller-manager needs --service-account-private-key-file=sa.key
#   DIR/pki/apiserver.crt, .key      serving certificate for 127.0.0.1, localhost, 10.96.0.1, kubernetes.default...
#   DIR/pki/apiserver-kubelet-client.crt, .key   what the apiserver shows a kubelet (O=system:masters)
#   DIR/pki/tokens.csv               static tokens (read once, at apiserver start):
#                                      admin (system:masters), system:kube-controller-manager,
#                                      system:kube-scheduler, system:node:$KUBE_NODE_NAME (group system:nodes)
#   DIR/controller-manager.kubeconfig, DIR/scheduler.kubeconfig, DIR/kubelet.kubeconfig   one per identity above
#   DIR/node-name                    the node name the kubelet token was issued for (KUBE_NODE_NAME, default
#                                    the lower-cased host name)
#   DIR/etcd.pid, DIR/kube-apiserver.pid, DIR/etcd.url, DIR/*.log, DIR/etcd/ (data, wiped on each etcd start)
#
# Listens on 127.0.0.1 only, on ports below 32768 (Linux hands out 32768-60999 for outgoing connections):
# a random port in 20000-32767 that binds, retried when a process then fails with "address already in use".
# Service CIDR 10.96.0.0/16; authorization Node,RBAC; admission: the defaults (PodSecurity among them) plus
# NodeRestriction; --allow-privileged=true as on a usual cluster, so that Pod Security admission, not the
# apiserver's capability switch, is what judges privileged pods.
#
# Needs: etcd (Debian `etcd-server`, installed here when missing), openssl, curl, and kube-apiserver in
# .tools/kube/bin (built by scripts/k8s/build-kube.sh apiserver when missing: ~8 min cold, then cached).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
KUBE_BIN="$ROOT/.tools/kube/bin"   # where scripts/k8s/build-kube.sh puts it
STOP_TIMEOUT="${STOP_TIMEOUT:-15}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"

log() { echo "control-plane: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd="$1"
if [ "$cmd" = start ]; then mkdir -p "$2"; fi
if [ ! -d "$2" ]; then
  [ "$cmd" = stop ] && exit 0
  [ "$cmd" = status ] && { echo down; exit 1; }
  die "no directory $2"
fi
DIR="$(cd "$2" && pwd)"
PKI="$DIR/pki"

# --- processes -------------------------------------------------------------------------------------------

# pid_of NAME: the pid in DIR/NAME.pid when that process is alive and is NAME started for this DIR.
pid_of() {
  local f="$DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  # A recycled pid would not carry both the binary name and this DIR on its command line.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR" || return 1
  echo "$pid"
}

# alive PID: running (an exited child that was not reaped yet is a zombie, state Z: not alive).
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

stop_one() {
  local name="$1" pid i
  if ! pid="$(pid_of "$name")"; then rm -f "$DIR/$name.pid"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) still up after ${STOP_TIMEOUT}s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$name.pid"
  log "stopped $name (pid $pid)"
}

# A port in 20000-32767 on 127.0.0.1 that binds right now (bash's /dev/tcp only connects, so ask python or,
# without it, check that nothing listens there).
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12768))
    if command -v python3 >/dev/null 2>&1; then
      python3 - "$p" <<'EOF' 2>/dev/null && { echo "$p"; return 0; }
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
EOF
    elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  die "no free port found in 20000-32767"
}

# spawn NAME LOG CMD...: start CMD in its own session, detached from this shell, and record its pid.
spawn() {
  local name="$1" logf="$2"; shift 2
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

# --- certificates ----------------------------------------------------------------------------------------

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [ ! -s "$PKI/ca.crt" ] || [ ! -s "$PKI/ca.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=fastdtm-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    rm -f "$PKI/apiserver.crt" "$PKI/apiserver-kubelet-client.crt"
  fi
  if [ ! -s "$PKI/apiserver.crt" ]; then
    cat >"$PKI/apiserver.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=kube-apiserver" \
      -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
    openssl x509 -req -sha256 -days 825 -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
      -CAcreateserial -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  fi
  if [ ! -s "$PKI/apiserver-kubelet-client.crt" ]; then
    cat >"$PKI/client.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      -keyout "$PKI/apiserver-kubelet-client.key" -out "$PKI/apiserver-kubelet-client.csr" 2>/dev/null
    openssl x509 -req -sha256 -days 825 -in "$PKI/apiserver-kubelet-client.csr" -CA "$PKI/ca.crt" \
      -CAkey "$PKI/ca.key" -CAcreateserial -extfile "$PKI/client.ext" -out "$PKI/apiserver-kubelet-client.crt" 2>/dev/null
  fi
  if [ ! -s "$PKI/sa.key" ] || [ ! -s "$PKI/sa.pub" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [ ! -s "$PKI/tokens.csv" ]; then
    local node="${KUBE_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"
    echo "$node" >"$DIR/node-name"
    # token,user,uid,"group1,group2"
    {
      echo "$(openssl rand -hex 24),admin,admin,\"system:masters\""
      echo "$(openssl rand -hex 24),system:kube-controller-manager,system:kube-controller-manager"
      echo "$(openssl rand -hex 24),system:kube-scheduler,system:kube-scheduler"
      echo "$(openssl rand -hex 24),system:node:$node,system:node:$node,\"system:nodes\""
    } >"$PKI/tokens.csv"
  fi
  chmod 600 "$PKI"/*.key "$PKI/tokens.csv"
}

# write_kubeconfig FILE USER: a kubeconfig for the static token of USER (a name in tokens.csv).
write_kubeconfig() {
  local file="$1" user="$2" url token tmp
  url="$(cat "$DIR/apiserver.url")"
  token="$(awk -F, -v u="$user" '$2 == u {print $1}' "$PKI/tokens.csv")"
  [ -n "$token" ] || die "no token for $user in $PKI/tokens.csv"
  tmp="$file.tmp"
  rm -f "$tmp"
  kubectl config --kubeconfig="$tmp" set-cluster local --server="$url" --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$tmp" set-credentials "$user" --token="$token" >/dev/null
  kubectl config --kubeconfig="$tmp" set-context local --cluster=local --user="$user" >/dev/null
  kubectl config --kubeconfig="$tmp" use-context local >/dev/null
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}

# --- etcd ------------------------------------------------------------------------------------------------

ensure_etcd_binary() {
  command -v etcd >/dev/null 2>&1 && return 0
  log "etcd missing: apt-get install etcd-server"
  [ "$(id -u)" = 0 ] || die "etcd is not installed and this is not root: apt-get install etcd-server"
  # Lock::Timeout: wait for another apt run (a parallel helper script) instead of failing at once.
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends etcd-server >/dev/null
  command -v etcd >/dev/null 2>&1 || die "apt-get install etcd-server did not provide etcd"
}

etcd_healthy() {
  [ -s "$DIR/etcd.url" ] || return 1
  curl -fsS --max-time 2 "$(cat "$DIR/etcd.url")/health" 2>/dev/null | grep -q '"health":"true"'
}

start_etcd() {
  if pid_of etcd >/dev/null && etcd_healthy; then
    ETCD_REUSED=1
    log "etcd already running (pid $(cat "$DIR/etcd.pid")) at $(cat "$DIR/etcd.url")"
    return 0
  fi
  stop_one etcd
  ensure_etcd_binary
  local cport pport pid i
  for _ in 1 2 3 4 5; do
    cport="$(free_port)"
    pport="$(free_port)"
    [ "$cport" != "$pport" ] || continue
    rm -rf "$DIR/etcd"
    mkdir -p "$DIR/etcd"
    chmod 700 "$DIR/etcd"
    echo "http://127.0.0.1:$cport" >"$DIR/etcd.url"
    : >"$DIR/etcd.log"
    # etcd 3.4 refuses to start on arm64 unless told that it may.
    if [ "$(uname -m)" = aarch64 ]; then export ETCD_UNSUPPORTED_ARCH=arm64; fi
    spawn etcd "$DIR/etcd.log" etcd --name fastdtm --data-dir "$DIR/etcd" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "fastdtm=http://127.0.0.1:$pport" --initial-cluster-state new \
      --initial-cluster-token "fastdtm-$$" --quota-backend-bytes $((512 * 1024 * 1024)) \
      --auto-compaction-retention 1 --snapshot-count 10000
    pid="$(cat "$DIR/etcd.pid")"
    for ((i = 0; i < 200; i++)); do
      etcd_healthy && { log "etcd ready (pid $pid) at http://127.0.0.1:$cport"; return 0; }
      alive "$pid" || break
      sleep 0.1
    done
    stop_one etcd
    if grep -q "address already in use" "$DIR/etcd.log"; then
      log "etcd: port taken ($cport/$pport), trying others"
      continue
    fi
    tail -20 "$DIR/etcd.log" >&2
    die "etcd did not become healthy (log: $DIR/etcd.log)"
  done
  die "etcd: no free port pair after 5 attempts"
}

# --- kube-apiserver --------------------------------------------------------------------------------------

readyz() {
  [ -s "$DIR/apiserver.url" ] || return 1
  local token
  token="$(awk -F, '$2 == "admin" {print $1}' "$PKI/tokens.csv" 2>/dev/null)"
  [ -n "$token" ] || return 1
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $token" \
    "$(cat "$DIR/apiserver.url")/readyz" 2>/dev/null | grep -qx ok
}

ensure_apiserver_binary() {
  if [ -x "$KUBE_BIN/kube-apiserver" ]; then return 0; fi
  log "kube-apiserver missing in $KUBE_BIN: building it from the Go module proxy (cold: ~8 min, ~2 GB of memory)"
  "$ROOT/scripts/k8s/build-kube.sh" apiserver >&2
  [ -x "$KUBE_BIN/kube-apiserver" ] || die "scripts/k8s/build-kube.sh apiserver did not produce $KUBE_BIN/kube-apiserver"
}

start_apiserver() {
  local port pid i
  for _ in 1 2 3 4 5; do
    port="$(free_port)"
    echo "https://127.0.0.1:$port" >"$DIR/apiserver.url"
    : >"$DIR/kube-apiserver.log"
    spawn kube-apiserver "$DIR/kube-apiserver.log" "$KUBE_BIN/kube-apiserver" \
      --etcd-servers="$(cat "$DIR/etcd.url")" \
      --etcd-prefix=/registry \
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
      --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --client-ca-file="$PKI/ca.crt" \
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
      --token-auth-file="$PKI/tokens.csv" \
      --anonymous-auth=false \
      --authorization-mode=Node,RBAC \
      --enable-admission-plugins=NodeRestriction \
      --allow-privileged=true \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-signing-key-file="$PKI/sa.key" \
      --service-account-key-file="$PKI/sa.pub" \
      --service-cluster-ip-range=10.96.0.0/16 \
      --service-node-port-range=30000-32767 \
      --cert-dir="$DIR/apiserver-certs" \
      --profiling=false \
      --v=1
    pid="$(cat "$DIR/kube-apiserver.pid")"
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
      readyz && return 0
      alive "$pid" || break
      sleep 0.2
    done
    stop_one kube-apiserver
    if grep -q "address already in use" "$DIR/kube-apiserver.log"; then
      log "kube-apiserver: port $port taken, trying another"
      continue
    fi
    grep -E '^[EF][0-9]{4}|rror' "$DIR/kube-apiserver.log" | tail -20 >&2 || tail -20 "$DIR/kube-apiserver.log" >&2
    if alive "$pid"; then die "kube-apiserver did not answer /readyz within ${READY_TIMEOUT}s (log: $DIR/kube-apiserver.log)"; fi
    die "kube-apiserver exited (log: $DIR/kube-apiserver.log)"
  done
  die "kube-apiserver: no free port after 5 attempts"
}

write_kubeconfigs() {
  write_kubeconfig "$DIR/kubeconfig" admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager
  write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler
  write_kubeconfig "$DIR/kubelet.kubeconfig" "system:node:$(cat "$DIR/node-name")"
}

undo_failed_start() {
  local rc=$?
  [ "$rc" = 0 ] && return 0
  stop_one kube-apiserver
  [ "$ETCD_REUSED" = 1 ] || stop_one etcd
  exit "$rc"
}

do_start() {
  local t0 t1
  t0="$(date +%s.%N)"
  if pid_of kube-apiserver >/dev/null && pid_of etcd >/dev/null && readyz; then
    [ -s "$DIR/kubeconfig" ] || write_kubeconfigs
    log "reusing the control plane in $DIR: kube-apiserver pid $(cat "$DIR/kube-apiserver.pid") at $(cat "$DIR/apiserver.url")"
    return 0
  fi
  command -v openssl >/dev/null || die "openssl is needed"
  command -v curl >/dev/null || die "curl is needed"
  command -v kubectl >/dev/null || die "kubectl is needed on PATH"
  ensure_apiserver_binary
  stop_one kube-apiserver
  make_pki
  ETCD_REUSED=0
  # A failed start leaves nothing running that it started.
  trap undo_failed_start EXIT
  start_etcd
  start_apiserver
  write_kubeconfigs
  t1="$(date +%s.%N)"
  trap - EXIT
  log "kube-apiserver $("$KUBE_BIN/kube-apiserver" --version | awk '{print $2}') ready (pid $(cat "$DIR/kube-apiserver.pid")) at $(cat "$DIR/apiserver.url") in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s; KUBECONFIG=$DIR/kubeconfig"
}

case "$cmd" in
  start) do_start ;;
  stop)
    stop_one kube-apiserver
    stop_one etcd
    ;;
  env)
    [ -s "$DIR/kubeconfig" ] || die "no kubeconfig in $DIR: run start first"
    echo "export KUBECONFIG=$DIR/kubeconfig"
    echo "export KUBE_APISERVER_URL=$(cat "$DIR/apiserver.url")"
    ;;
  status)
    if pid_of kube-apiserver >/dev/null && readyz; then
      echo "up: $(cat "$DIR/apiserver.url") (kube-apiserver pid $(cat "$DIR/kube-apiserver.pid"), etcd pid $(cat "$DIR/etcd.pid" 2>/dev/null || echo '?'))"
    else
      echo "down"; exit 1
    fi
    ;;
  *) usage ;;
esac
