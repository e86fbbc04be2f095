#!/usr/bin/env bash
# A real single-host Kubernetes for the end-to-end test: the control plane of scripts/k8s/control-plane.sh
# (etcd + kube-apiserver), kube-controller-manager, kube-scheduler, and NODES kubelet nodes, each with its
# own containerd (Debian's), all on loopback and all under DIR. See docs/deploy-cluster.md.
#
# Usage: scripts/k8s/cluster.sh start DIR    start (or reuse, when all of it is live) and wait until every node is Ready
#        scripts/k8s/cluster.sh stop DIR     stop, by pid, all that `start` started in DIR; unmount; remove its cgroups
#        scripts/k8s/cluster.sh smoke DIR    prove it: a hostNetwork Deployment spread over the nodes, a rolling
#                                            update with maxSurge, a PodDisruptionBudget refusing an eviction, clean
#                                            deletion
#        scripts/k8s/cluster.sh status DIR   the processes with their memory; exit 1 when some are down
#        scripts/k8s/cluster.sh env DIR      print `export KUBECONFIG=...` for eval
#
# Env: NODES (default 3), IMAGES (space-separated image tars to import into every node, also when the cluster
# is reused; a listed file that is missing is an error), READY_TIMEOUT (s, default 180), STOP_TIMEOUT (s,
# default 15), KUBELET_PORT_BASE (default 11000), CONTROLLER_MANAGER_PORT (10257), SCHEDULER_PORT (10259),
# SMOKE_IMAGE (the image `smoke` runs; default local/debian-py:bookworm when every node has it, else the pause
# image), KUBE_LOG_LEVEL (default 1).
#
# Node i (1..NODES) is named 127.0.0.<i+1>: the kubelet refuses a loopback --node-ip ("nodeIP can't be loopback
# address"), but a --hostname-override that is an IP becomes the node's InternalIP as it is. A hostNetwork pod
# on node i thus has status.hostIP = status.podIP = 127.0.0.<i+1>: probes without `host:` go there, and an app
# bound to its HOST_IP (downward API) lets one replica per node use the same port. Node i listens on
# 127.0.0.<i+1> only: kubelet KUBELET_PORT_BASE+10i, kubelet healthz +1, containerd's streaming server +2.
# kube-controller-manager and kube-scheduler serve (/healthz) on 127.0.0.1:10257 and :10259.
#
# Needs root, cgroups (v1 or v2), kubectl, openssl, go (for the pause image), python3; installs containerd, runc
# and containernetworking-plugins with apt-get when missing, and builds the Kubernetes binaries it lacks with
# scripts/k8s/build-kube.sh (cold: ~10 min).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
KUBE_BIN="${KUBE_BIN:-$ROOT/.tools/kube/bin}"
NODES="${NODES:-3}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
STOP_TIMEOUT="${STOP_TIMEOUT:-15}"
KUBELET_PORT_BASE="${KUBELET_PORT_BASE:-11000}"
KUBE_LOG_LEVEL="${KUBE_LOG_LEVEL:-1}"
PAUSE_IMAGE="${PAUSE_IMAGE:-local/pause:fastdtm}"
CM_PORT="${CONTROLLER_MANAGER_PORT:-10257}"
SCHED_PORT="${SCHEDULER_PORT:-10259}"
# What the kubelet sets when it starts (pkg/kubelet/cm: setupKernelTunables); `stop` puts back what was there.
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/go/bin"

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd="$1"
mkdir -p "$2"
DIR="$(cd "$2" && pwd)"
PKI="$DIR/pki"
KCFG="$DIR/kubeconfig"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
kc() { kubectl --kubeconfig "$KCFG" "$@"; }

node_dir() { echo "$DIR/nodes/$1"; }
node_ip() { echo "127.0.0.$(($1 + 1))"; }
kubelet_port() { echo $((KUBELET_PORT_BASE + 10 * $1)); }
# The nodes DIR has state for (all of them, whatever NODES says now): what `stop` must stop.
known_nodes() {
  [ -d "$DIR/nodes" ] || return 0
  find "$DIR/nodes" -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf '%f\n' | sort -n
}

# --- processes -------------------------------------------------------------------------------------------

# pid_of PIDFILE WORD: the pid in PIDFILE when that process is alive, is not a zombie, and its command line
# names WORD and DIR (a recycled pid would not).
pid_of() {
  local f="$1" pid cmdline
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$2"* && "$cmdline" == *"$DIR"* ]] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
  echo "$pid"
}

alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# stop_pids WHAT PID...: TERM, wait up to STOP_TIMEOUT, then KILL what is left.
stop_pids() {
  local what="$1" p i left=()
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    [ ${#left[@]} -gt 0 ] || break
    sleep 0.1
  done
  if [ ${#left[@]} -gt 0 ]; then
    log "$what (pid ${left[*]}) still up after ${STOP_TIMEOUT}s: KILL"
    kill -KILL "${left[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      left=()
      for p in "$@"; do alive "$p" && left+=("$p"); done
      [ ${#left[@]} -gt 0 ] || break
      sleep 0.1
    done
  fi
}

# stop_pidfile PIDFILE WORD: stop the process PIDFILE names, if it is still the one `spawn` started.
stop_pidfile() {
  local pid
  if pid="$(pid_of "$1" "$2")"; then
    stop_pids "$2" "$pid"
    log "stopped $2 (pid $pid)"
  fi
  rm -f "$1"
}

# spawn PIDFILE LOG CMD...: start CMD in its own session, detached from this shell, and record its pid.
spawn() {
  local pidf="$1" logf="$2"
  shift 2
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidf"
}

# shims_of SOCKET: the pids of the containerd shims started by the containerd listening on SOCKET.
shims_of() {
  local f cmdline
  for f in /proc/[0-9]*/cmdline; do
    cmdline="$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" || continue
    [[ "$cmdline" == *containerd-shim* && "$cmdline" == *"-address $1 "* ]] || continue
    f="${f#/proc/}"
    echo "${f%/cmdline}"
  done
}

# --- cgroups ---------------------------------------------------------------------------------------------

# The mount points of every cgroup hierarchy (v1 controllers, the named systemd one, the v2 one).
cgroup_mounts() { awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo; }

# The cgroup parent of all nodes, the same path in every hierarchy: below this shell's memory cgroup when it
# has one (so the pods count against whatever limits this run), named after DIR. Kept in DIR/cgroup-root.
cgroup_root() {
  if [ ! -s "$DIR/cgroup-root" ]; then
    local base
    base="$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)"
    [ -n "$base" ] || base="$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)"
    [ "$base" != / ] || base=""
    echo "$base/fastdtm-k8s-$(echo "$DIR" | sha256sum | cut -c1-8)" >"$DIR/cgroup-root"
  fi
  cat "$DIR/cgroup-root"
}

# make_cgroup PATH: PATH in every v1 hierarchy (a cpuset level gets its parent's cpus and mems, which a new
# one lacks) or, on a pure v2 host, in the v2 tree with the controllers the kubelet uses enabled on the way.
make_cgroup() {
  local path="$1" mp rel d parent c
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    d=/sys/fs/cgroup
    for c in $(echo "$path" | tr / ' '); do
      for ctl in cpu cpuset memory pids io hugetlb; do
        if grep -qw "$ctl" "$d/cgroup.controllers" 2>/dev/null; then
          echo "+$ctl" >"$d/cgroup.subtree_control" 2>/dev/null || true
        fi
      done
      d="$d/$c"
      mkdir -p "$d"
    done
    return 0
  fi
  for mp in $(cgroup_mounts); do
    [ "$(stat -fc %T "$mp")" = cgroup2fs ] && continue
    d="$mp"
    for rel in $(echo "$path" | tr / ' '); do
      parent="$d"
      d="$d/$rel"
      [ -d "$d" ] || mkdir "$d"
      if [ -f "$d/cpuset.cpus" ]; then
        [ -n "$(tr -d '\n' <"$d/cpuset.cpus")" ] || cat "$parent/cpuset.cpus" >"$d/cpuset.cpus"
        [ -n "$(tr -d '\n' <"$d/cpuset.mems")" ] || cat "$parent/cpuset.mems" >"$d/cpuset.mems"
      fi
    done
  done
}

# The pids still in the cgroups of this cluster (pod processes whose shim is gone).
cgroup_pids() {
  local root mp
  root="$(cat "$DIR/cgroup-root" 2>/dev/null)" || return 0
  [ -n "$root" ] || return 0
  for mp in $(cgroup_mounts); do
    [ -d "$mp$root" ] || continue
    find "$mp$root" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# Remove the cluster's cgroups, deepest first; once all are gone the next start picks its parent anew.
remove_cgroups() {
  local root mp busy=0
  root="$(cat "$DIR/cgroup-root" 2>/dev/null)" || return 0
  [ -n "$root" ] || return 0
  for mp in $(cgroup_mounts); do
    [ -d "$mp$root" ] || continue
    find "$mp$root" -depth -type d -exec rmdir {} \; 2>/dev/null || { log "some cgroups under $mp$root are still in use"; busy=1; }
  done
  [ "$busy" = 1 ] || rm -f "$DIR/cgroup-root"
}

# --- host ------------------------------------------------------------------------------------------------

cni_bin_dir() {
  local d
  for d in /usr/lib/cni /opt/cni/bin /usr/libexec/cni; do
    [ -x "$d/loopback" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v ctr >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  cni_bin_dir >/dev/null || missing+=(containernetworking-plugins)
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]} and this is not root: apt-get install ${missing[*]}"
  log "installing ${missing[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ! command -v containerd >/dev/null || ! command -v runc >/dev/null || ! cni_bin_dir >/dev/null; then
    die "apt-get install ${missing[*]} did not provide containerd, runc and the CNI plugins"
  fi
}

ensure_binaries() {
  local need=() c
  for c in controller-manager scheduler kubelet; do
    local bin="$KUBE_BIN/kube-$c"
    [ "$c" = kubelet ] && bin="$KUBE_BIN/kubelet"
    [ -x "$bin" ] || need+=("$c")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  log "building ${need[*]} into $KUBE_BIN (scripts/k8s/build-kube.sh; cold: minutes)"
  "$ROOT/scripts/k8s/build-kube.sh" "${need[@]}" >&2
}

save_sysctls() {
  [ -s "$DIR/sysctl.saved" ] && return 0
  local s
  for s in "${SYSCTLS[@]}"; do
    [ -r "/proc/sys/$s" ] && echo "$s $(cat "/proc/sys/$s")"
  done >"$DIR/sysctl.saved.tmp"
  mv "$DIR/sysctl.saved.tmp" "$DIR/sysctl.saved"
}

restore_sysctls() {
  [ -s "$DIR/sysctl.saved" ] || return 0
  local s v
  while read -r s v; do
    [ "$(cat "/proc/sys/$s" 2>/dev/null)" = "$v" ] || echo "$v" >"/proc/sys/$s" 2>/dev/null || log "could not restore $s=$v"
  done <"$DIR/sysctl.saved"
  rm -f "$DIR/sysctl.saved"
}

# Two paths are the kubelet's whatever its --root-dir: the device-plugin registration socket
# (/var/lib/kubelet/device-plugins/kubelet.sock, which no node here uses) and /var/log/containers (symlinks to the
# containers' logs, removed with them). Those that did not exist before the first start are noted in
# DIR/host-paths, and `stop` removes them again as far as they hold only sockets and empty folders.
KUBELET_HOST_PATHS=(/var/lib/kubelet /var/log/containers)

note_host_paths() {
  local p
  for p in "${KUBELET_HOST_PATHS[@]}"; do
    [ -e "$p" ] || grep -qxF "$p" "$DIR/host-paths" 2>/dev/null || echo "$p" >>"$DIR/host-paths"
  done
}

remove_host_paths() {
  local p
  [ -s "$DIR/host-paths" ] || return 0
  # Some other kubelet (ours are stopped) may still use them; a zombie of ours, not yet reaped, does not count.
  [ -z "$(ps -eo stat=,comm= | awk '$2 == "kubelet" && $1 !~ /^Z/')" ] || return 0
  while read -r p; do
    [ -d "$p" ] || continue
    find "$p" -type s -delete 2>/dev/null || true
    find "$p" -depth -type d -empty -delete 2>/dev/null || true
  done <"$DIR/host-paths"
  rm -f "$DIR/host-paths"
}

# Unmount everything mounted under DIR (containers' rootfs and shm, pods' volumes), deepest first.
unmount_all() {
  local round mp
  for round in 1 2 3; do
    local mps=()
    while read -r mp; do mps+=("$mp"); done < <(awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    [ ${#mps[@]} -gt 0 ] || return 0
    for mp in "${mps[@]}"; do
      umount "$mp" 2>/dev/null || { [ "$round" = 3 ] && umount -l "$mp" 2>/dev/null; } || true
    done
  done
}

# --- control plane, controller-manager, scheduler --------------------------------------------------------

start_control_plane() {
  "$ROOT/scripts/k8s/control-plane.sh" start "$DIR"
  for f in kubeconfig apiserver.url controller-manager.kubeconfig scheduler.kubeconfig pki/ca.crt pki/ca.key pki/sa.key; do
    [ -s "$DIR/$f" ] || die "scripts/k8s/control-plane.sh start did not write $DIR/$f"
  done
}

start_controllers() {
  if ! pid_of "$DIR/kube-controller-manager.pid" kube-controller-manager >/dev/null; then
    : >"$DIR/kube-controller-manager.log"
    spawn "$DIR/kube-controller-manager.pid" "$DIR/kube-controller-manager.log" "$KUBE_BIN/kube-controller-manager" \
      --kubeconfig="$DIR/controller-manager.kubeconfig" \
      --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" --authentication-skip-lookup=true \
      --bind-address=127.0.0.1 --secure-port="$CM_PORT" --cert-dir="$DIR/kube-controller-manager-certs" \
      --leader-elect=false \
      --controllers='*' --use-service-account-credentials=true \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
      --service-cluster-ip-range=10.96.0.0/16 --allocate-node-cidrs=false \
      --profiling=false --v="$KUBE_LOG_LEVEL"
  fi
  if ! pid_of "$DIR/kube-scheduler.pid" kube-scheduler >/dev/null; then
    : >"$DIR/kube-scheduler.log"
    spawn "$DIR/kube-scheduler.pid" "$DIR/kube-scheduler.log" "$KUBE_BIN/kube-scheduler" \
      --kubeconfig="$DIR/scheduler.kubeconfig" \
      --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
      --authorization-kubeconfig="$DIR/scheduler.kubeconfig" --authentication-skip-lookup=true \
      --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$DIR/kube-scheduler-certs" \
      --leader-elect=false --profiling=false --v="$KUBE_LOG_LEVEL"
  fi
}

# wait_healthz NAME PORT: until https://127.0.0.1:PORT/healthz answers ok (an always-allowed path).
wait_healthz() {
  local k
  for ((k = 0; k < 300; k++)); do
    [ "$(curl -ksS --max-time 2 "https://127.0.0.1:$2/healthz" 2>/dev/null)" = ok ] && return 0
    pid_of "$DIR/$1.pid" "$1" >/dev/null || break
    sleep 0.2
  done
  grep -E '^[EF][0-9]{4}' "$DIR/$1.log" | tail -20 >&2 || tail -20 "$DIR/$1.log" >&2
  die "$1 did not answer on 127.0.0.1:$2/healthz (log: $DIR/$1.log)"
}

# --- nodes -----------------------------------------------------------------------------------------------

write_containerd_config() {
  local i="$1" n ip port cni
  n="$(node_dir "$i")"; ip="$(node_ip "$i")"; port="$(kubelet_port "$i")"; cni="$(cni_bin_dir)"
  mkdir -p "$n/containerd/root" "$n/containerd/state" "$n/containerd/opt" "$n/runc" "$n/cni"
  # hostNetwork pods never call CNI, but the CRI reports NetworkReady (and the node Ready) only once it has
  # loaded a network config: a loopback-only one, which adds no address outside the pod.
  cat >"$n/cni/10-loopback.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "fastdtm-loopback", "plugins": [{ "type": "loopback" }] }
EOF
  cat >"$n/containerd.toml" <<EOF
# containerd of node $i ($ip), written by scripts/k8s/cluster.sh: private root, state and socket.
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$n/containerd.sock"

[ttrpc]
  address = "$n/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: a sandbox may only raise its oom_score_adj, never lower it.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "$ip"
  stream_server_port = "$((port + 2))"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$n/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni"
    conf_dir = "$n/cni"
    max_conf_num = 1
EOF
}

ctr_n() { local i="$1"; shift; timeout 60 ctr --address "$(node_dir "$i")/containerd.sock" --namespace k8s.io "$@"; }

start_containerd() {
  local i="$1" n pid k
  n="$(node_dir "$i")"
  pid_of "$n/containerd.pid" containerd >/dev/null && return 0
  write_containerd_config "$i"
  rm -f "$n/containerd.sock" "$n/containerd.sock.ttrpc"
  : >"$n/containerd.log"
  spawn "$n/containerd.pid" "$n/containerd.log" containerd --config "$n/containerd.toml"
  pid="$(cat "$n/containerd.pid")"
  for ((k = 0; k < 300; k++)); do
    [ -S "$n/containerd.sock" ] && ctr_n "$i" version >/dev/null 2>&1 && return 0
    alive "$pid" || break
    sleep 0.1
  done
  tail -20 "$n/containerd.log" >&2
  die "containerd of node $i did not answer on $n/containerd.sock (log: $n/containerd.log)"
}

# import_images NODE TAR...: `ctr images import` each tar not yet imported in this containerd's root.
import_images() {
  local i="$1" n tar stamp t0
  shift
  n="$(node_dir "$i")"
  touch "$n/images.imported"
  for tar in "$@"; do
    stamp="$tar $(stat -c '%s %Y' "$tar")"
    grep -qxF "$stamp" "$n/images.imported" && continue
    t0="$(now)"
    ctr_n "$i" images import "$tar" >"$n/import.log" 2>&1 || { cat "$n/import.log" >&2; return 1; }
    log "node $i: imported $(basename "$tar") in $(since "$t0") s"
    grep -vF "$tar " "$n/images.imported" >"$n/images.imported.tmp" || true
    echo "$stamp" >>"$n/images.imported.tmp"
    mv "$n/images.imported.tmp" "$n/images.imported"
  done
}

node_client_cert() {
  local i="$1" n name
  n="$(node_dir "$i")"; name="system:node:$(node_ip "$i")"
  mkdir -p "$n/pki"
  chmod 700 "$n/pki"
  if [ -s "$n/pki/kubelet-client.crt" ] && openssl verify -CAfile "$PKI/ca.crt" "$n/pki/kubelet-client.crt" >/dev/null 2>&1 &&
    [[ "$(openssl x509 -noout -subject -in "$n/pki/kubelet-client.crt")" == *"$name"* ]]; then
    return 0
  fi
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$n/pki/client.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -subj "/O=system:nodes/CN=$name" \
    -keyout "$n/pki/kubelet-client.key" -out "$n/pki/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -sha256 -days 825 -in "$n/pki/kubelet-client.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$n/pki/client.ext" -out "$n/pki/kubelet-client.crt" 2>/dev/null
  chmod 600 "$n/pki/kubelet-client.key"
}

write_kubelet_config() {
  local i="$1" n ip port tmp
  n="$(node_dir "$i")"; ip="$(node_ip "$i")"; port="$(kubelet_port "$i")"
  node_client_cert "$i"
  tmp="$n/kubelet.kubeconfig.tmp"
  rm -f "$tmp"
  kubectl config --kubeconfig="$tmp" set-cluster local --server="$(cat "$DIR/apiserver.url")" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$tmp" set-credentials "system:node:$ip" --client-certificate="$n/pki/kubelet-client.crt" \
    --client-key="$n/pki/kubelet-client.key" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$tmp" set-context local --cluster=local --user="system:node:$ip" >/dev/null
  kubectl config --kubeconfig="$tmp" use-context local >/dev/null
  chmod 600 "$tmp"
  mv "$tmp" "$n/kubelet.kubeconfig"
  cat >"$n/kubelet.yaml" <<EOF
# kubelet of node $i ($ip), written by scripts/k8s/cluster.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$ip"
port: $port
readOnlyPort: 0
healthzBindAddress: "$ip"
healthzPort: $((port + 1))
# The apiserver shows a client certificate of this CA (group system:masters); anything else is asked about
# through the apiserver (webhook).
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization:
  mode: Webhook
containerRuntimeEndpoint: "unix://$n/containerd.sock"
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: "$(cgroup_root)/node-$i"
failCgroupV1: false
failSwapOn: false
podLogsDir: "$n/pod-logs"
volumePluginDir: "$n/volume-plugins"
# No iptables rules, no sysctl changes beyond the kubelet's own few (restored by stop), no node shutdown hooks.
makeIPTablesUtilChains: false
protectKernelDefaults: false
shutdownGracePeriod: 0s
serializeImagePulls: false
# A disk that is rather full must not evict the test's pods; the images were imported, never pulled: no GC.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
evictionPressureTransitionPeriod: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDomain: cluster.local
maxPods: 50
nodeStatusUpdateFrequency: 5s
nodeStatusReportFrequency: 1m
syncFrequency: 10s
rotateCertificates: false
serverTLSBootstrap: false
EOF
}

start_kubelet() {
  local i="$1" n
  n="$(node_dir "$i")"
  pid_of "$n/kubelet.pid" kubelet >/dev/null && return 0
  write_kubelet_config "$i"
  # A fresh cluster (control-plane.sh wipes etcd): no pod of an earlier run is kept.
  if [ -d "$n/kubelet" ] && ! awk -v d="$n/kubelet/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    rm -rf "$n/kubelet" "$n/pod-logs"
  fi
  mkdir -p "$n/kubelet" "$n/pod-logs" "$n/volume-plugins"
  make_cgroup "$(cgroup_root)/node-$i"
  : >"$n/kubelet.log"
  spawn "$n/kubelet.pid" "$n/kubelet.log" "$KUBE_BIN/kubelet" \
    --config="$n/kubelet.yaml" --kubeconfig="$n/kubelet.kubeconfig" \
    --hostname-override="$(node_ip "$i")" --root-dir="$n/kubelet" --cert-dir="$n/kubelet/pki" \
    --pod-infra-container-image="$PAUSE_IMAGE" --v="$KUBE_LOG_LEVEL"
}

# ready_nodes: the names of the Ready nodes, one a line.
ready_nodes() {
  kc get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    awk '$2 == "True" { print $1 }'
}

all_up() {
  local i
  "$ROOT/scripts/k8s/control-plane.sh" status "$DIR" >/dev/null 2>&1 || return 1
  pid_of "$DIR/kube-controller-manager.pid" kube-controller-manager >/dev/null || return 1
  pid_of "$DIR/kube-scheduler.pid" kube-scheduler >/dev/null || return 1
  for ((i = 1; i <= NODES; i++)); do
    pid_of "$(node_dir "$i")/containerd.pid" containerd >/dev/null || return 1
    pid_of "$(node_dir "$i")/kubelet.pid" kubelet >/dev/null || return 1
  done
  [ "$(ready_nodes | wc -l)" -ge "$NODES" ]
}

do_start() {
  local t0 t_cp t_nodes t_img i images=() tar k k2 ready pidf pids=()
  t0="$(now)"
  [[ "$NODES" =~ ^[1-9][0-9]?$ ]] || die "NODES must be 1..99, not '$NODES'"
  for tar in ${IMAGES:-}; do
    [ -s "$tar" ] || die "IMAGES names $tar, which does not exist"
    images+=("$(cd "$(dirname "$tar")" && pwd)/$(basename "$tar")")
  done
  if all_up; then
    if [ ${#images[@]} -gt 0 ]; then
      for ((i = 1; i <= NODES; i++)); do
        import_images "$i" "${images[@]}" &
        pids+=($!)
      done
      for k2 in "${pids[@]}"; do wait "$k2" || die "importing images failed (see above)"; done
    fi
    log "reusing the cluster in $DIR: $NODES nodes Ready; KUBECONFIG=$KCFG"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "needs root (containerd, kubelet, cgroups, mounts)"
  # A half-started or half-stopped cluster: stop all but the control plane (which control-plane.sh reuses when
  # it is live; a new one has a new address), then start it all.
  do_stop_nodes
  stop_pidfile "$DIR/kube-scheduler.pid" kube-scheduler
  stop_pidfile "$DIR/kube-controller-manager.pid" kube-controller-manager
  ensure_packages
  ensure_binaries
  images=("$(PAUSE_IMAGE="$PAUSE_IMAGE" "$ROOT/scripts/k8s/pause/build.sh")" "${images[@]}")
  start_control_plane
  t_cp="$(since "$t0")"
  start_controllers
  save_sysctls
  k="$(now)"
  for ((i = 1; i <= NODES; i++)); do start_containerd "$i"; done
  for ((i = 1; i <= NODES; i++)); do
    import_images "$i" "${images[@]}" &
    pids+=($!)
  done
  for k2 in "${pids[@]}"; do wait "$k2" || die "importing images failed (see above)"; done
  t_img="$(since "$k")"
  k="$(now)"
  note_host_paths
  for ((i = 1; i <= NODES; i++)); do start_kubelet "$i"; done
  for ((i = 0; i < READY_TIMEOUT * 2; i++)); do
    ready="$(ready_nodes | wc -l)"
    [ "$ready" -ge "$NODES" ] && break
    for pidf in "$DIR/kube-controller-manager.pid:kube-controller-manager" "$DIR/kube-scheduler.pid:kube-scheduler"; do
      pid_of "${pidf%%:*}" "${pidf##*:}" >/dev/null || { tail -20 "$DIR/${pidf##*:}.log" >&2; die "${pidf##*:} exited (log: $DIR/${pidf##*:}.log)"; }
    done
    for ((k2 = 1; k2 <= NODES; k2++)); do
      pid_of "$(node_dir "$k2")/kubelet.pid" kubelet >/dev/null ||
        { grep -E '^[EF][0-9]{4}' "$(node_dir "$k2")/kubelet.log" | tail -20 >&2; die "kubelet of node $k2 exited (log: $(node_dir "$k2")/kubelet.log)"; }
    done
    sleep 0.5
  done
  if [ "$ready" -lt "$NODES" ]; then
    kc get nodes -o wide >&2 || true
    die "only $ready of $NODES nodes Ready after ${READY_TIMEOUT}s (logs: $DIR/nodes/*/kubelet.log)"
  fi
  t_nodes="$(since "$k")"
  wait_healthz kube-controller-manager "$CM_PORT"
  wait_healthz kube-scheduler "$SCHED_PORT"
  # The controller-manager gives every namespace its `default` ServiceAccount; pods need it.
  for ((i = 0; i < 120; i++)); do
    kc get serviceaccount default -n default >/dev/null 2>&1 && break
    sleep 0.5
  done
  kc get serviceaccount default -n default >/dev/null 2>&1 || die "no default ServiceAccount after 60 s (log: $DIR/kube-controller-manager.log)"
  log "$NODES nodes Ready: $(ready_nodes | sort -V | tr '\n' ' ')"
  log "timings: control plane ${t_cp} s, containerd + image import ${t_img} s, kubelets to Ready ${t_nodes} s, total $(since "$t0") s"
  log "KUBECONFIG=$KCFG"
}

# --- stop ------------------------------------------------------------------------------------------------

# running_tasks NODE: the ids of the containers running in node NODE's containerd (none when it is down).
running_tasks() {
  local sock
  sock="$(node_dir "$1")/containerd.sock"
  pid_of "$(node_dir "$1")/containerd.pid" containerd >/dev/null && [ -S "$sock" ] || return 0
  ctr_n "$1" tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING" { print $1 }'
}

# Stop the nodes: all kubelets; then the pods' containers through their containerd (SIGTERM to every process,
# up to STOP_TIMEOUT for all of them, then the tasks are deleted, i.e. SIGKILL), their shims by pid, the
# containerds; then whatever is left in the cluster's cgroups; unmount; remove the cgroups; restore sysctls.
stop_node_daemons() {
  local name="$1" i pids=()
  for i in $(known_nodes); do
    pid_of "$(node_dir "$i")/$name.pid" "$name" >/dev/null && pids+=("$(cat "$(node_dir "$i")/$name.pid")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    stop_pids "$name" "${pids[@]}"
    log "stopped $name(s) (pid ${pids[*]})"
  fi
  for i in $(known_nodes); do rm -f "$(node_dir "$i")/$name.pid"; done
}

do_stop_nodes() {
  local i n t k ids left shims=()
  stop_node_daemons kubelet
  for i in $(known_nodes); do
    for t in $(running_tasks "$i"); do ctr_n "$i" tasks kill -a -s SIGTERM "$t" >/dev/null 2>&1 || true; done
  done
  for ((k = 0; k < STOP_TIMEOUT * 5; k++)); do
    left=""
    for i in $(known_nodes); do left="$left$(running_tasks "$i")"; done
    [ -z "$left" ] && break
    sleep 0.2
  done
  for i in $(known_nodes); do
    n="$(node_dir "$i")"
    if pid_of "$n/containerd.pid" containerd >/dev/null && [ -S "$n/containerd.sock" ]; then
      ids="$(ctr_n "$i" tasks ls -q 2>/dev/null || true)"
      for t in $ids; do ctr_n "$i" tasks delete -f "$t" >/dev/null 2>&1 || true; done
      [ -z "$ids" ] || log "node $i: stopped $(echo "$ids" | wc -w) container(s)"
      for t in $(ctr_n "$i" containers ls -q 2>/dev/null || true); do ctr_n "$i" containers rm "$t" >/dev/null 2>&1 || true; done
    fi
    while read -r t; do [ -z "$t" ] || shims+=("$t"); done < <(shims_of "$n/containerd.sock")
  done
  if [ ${#shims[@]} -gt 0 ]; then
    log "stopping containerd shim(s) (pid ${shims[*]})"
    stop_pids containerd-shim "${shims[@]}"
  fi
  stop_node_daemons containerd
  # Pod processes whose shim died before they did.
  left="$(cgroup_pids | tr '\n' ' ')"
  # shellcheck disable=SC2086
  [ -z "${left// /}" ] || { log "killing what is left in the cluster's cgroups: $left"; kill -KILL $left 2>/dev/null || true; sleep 0.5; }
  unmount_all
  remove_cgroups
  restore_sysctls
  remove_host_paths
}

do_stop() {
  do_stop_nodes
  stop_pidfile "$DIR/kube-scheduler.pid" kube-scheduler
  stop_pidfile "$DIR/kube-controller-manager.pid" kube-controller-manager
  "$ROOT/scripts/k8s/control-plane.sh" stop "$DIR"
}

# --- status ----------------------------------------------------------------------------------------------

# pss_mb PID: the process's proportional set size in MB (its RSS with pages shared with N processes counted
# 1/N: the kubelets and containerds share their binaries' pages), 0 when it is gone.
pss_mb() { awk '/^Pss:/ { printf "%.0f", $2 / 1024; found = 1 } END { if (!found) print 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

do_status() {
  local total=0 down=0 pid i n f m shims
  report() { # NAME PIDFILE WORD
    if pid="$(pid_of "$2" "$3")"; then
      m="$(pss_mb "$pid")"
      printf '  %-32s pid %-8s %5s MB\n' "$1" "$pid" "$m"
      total=$((total + m))
    else
      printf '  %-32s down\n' "$1"
      down=1
    fi
  }
  report etcd "$DIR/etcd.pid" etcd
  report kube-apiserver "$DIR/kube-apiserver.pid" kube-apiserver
  report kube-controller-manager "$DIR/kube-controller-manager.pid" kube-controller-manager
  report kube-scheduler "$DIR/kube-scheduler.pid" kube-scheduler
  for i in $(known_nodes); do
    n="$(node_dir "$i")"
    report "node $i ($(node_ip "$i")) containerd" "$n/containerd.pid" containerd
    report "node $i ($(node_ip "$i")) kubelet" "$n/kubelet.pid" kubelet
    shims="$(shims_of "$n/containerd.sock" | tr '\n' ' ')"
    m=0
    for pid in $shims; do m=$((m + $(pss_mb "$pid"))); done
    total=$((total + m))
    [ -z "${shims// /}" ] || printf '  %-32s pid %-8s %5s MB\n' "node $i ($(node_ip "$i")) shims" "${shims// /,}" "$m"
  done
  f=0
  for pid in $(cgroup_pids); do f=$((f + $(pss_mb "$pid"))); done
  echo "  memory (PSS): ${total} MB in the cluster's processes, ${f} MB in its pods"
  [ "$down" = 0 ]
}

# --- smoke -----------------------------------------------------------------------------------------------

SMOKE_GRACE=30
smoke_fail() { log "smoke: FAILED: $*"; kc get pods -n fastdtm-smoke -o wide >&2 || true; exit 1; }

do_smoke() {
  local nodes replicas surge unavail image cmd probe t0 k pods hosts evict out i
  kc get nodes >/dev/null 2>&1 || die "no cluster answers in $DIR: run start first"
  nodes="$(ready_nodes | wc -l)"
  [ "$nodes" -ge 1 ] || die "no Ready node"
  # One replica per node (hostNetwork + a containerPort = a host port), one node kept free for the surge.
  replicas=$((nodes - 1)); surge=1; unavail=0
  [ "$replicas" -ge 2 ] || { replicas=$nodes; surge=0; unavail=1; }
  image="${SMOKE_IMAGE:-}"
  if [ -z "$image" ]; then
    image=local/debian-py:bookworm
    for i in $(known_nodes); do
      # (not `ctr | grep -q`: grep leaving early would fail the pipe under pipefail)
      grep -qx "docker.io/$image" <<<"$(ctr_n "$i" images ls -q 2>/dev/null)" || image="$PAUSE_IMAGE"
    done
  fi
  if [ "$image" = "$PAUSE_IMAGE" ]; then
    cmd=""; probe=""
  else
    # Bound to the node's own address; the probe has no host: it goes to the pod IP, which is that address.
    # PID 1 of a container gets no default signal action: without a SIGTERM handler it would wait for SIGKILL.
    # shellcheck disable=SC2016
    cmd='command: ["python3", "-c", "import signal, sys, http.server as h; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); h.ThreadingHTTPServer((sys.argv[1], 18080), h.SimpleHTTPRequestHandler).serve_forever()", "$(HOST_IP)"]'
    probe='readinessProbe: {httpGet: {path: /, port: 18080}, periodSeconds: 1}'
  fi
  log "smoke: $replicas replicas of $image on $nodes nodes (maxSurge $surge, maxUnavailable $unavail)"
  kc delete namespace fastdtm-smoke --ignore-not-found --wait=true >/dev/null
  kc create namespace fastdtm-smoke >/dev/null
  t0="$(now)"
  kc apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: fastdtm-smoke}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: smoke}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: $surge, maxUnavailable: $unavail}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: $SMOKE_GRACE
      containers:
        - name: web
          image: $image
          imagePullPolicy: Never
          $cmd
          env: [{name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}]
          ports: [{containerPort: 18080}]
          $probe
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: smoke, namespace: fastdtm-smoke}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: smoke}}
EOF
  kc rollout status -n fastdtm-smoke deployment/smoke --timeout=120s >&2 || smoke_fail "the Deployment did not become available"
  log "smoke: $replicas replicas Ready in $(since "$t0") s"
  pods="$(kc get pods -n fastdtm-smoke -l app=smoke -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.hostIP} {.status.podIP}{"\n"}{end}')"
  while read -r k; do echo "  $k"; done <<<"$pods" >&2
  hosts="$(echo "$pods" | awk '{ print $2 }' | sort -u | wc -l)"
  [ "$hosts" -eq "$replicas" ] || smoke_fail "$replicas replicas on $hosts nodes"
  echo "$pods" | awk '$2 != $3 || $3 != $4 { bad = 1 } END { exit bad }' || smoke_fail "a pod's hostIP or podIP is not its node's address"
  if [ -n "$probe" ]; then
    for k in $(echo "$pods" | awk '{ print $3 }'); do
      curl -fsS --max-time 3 -o /dev/null "http://$k:18080/" || smoke_fail "nothing answers on $k:18080"
    done
    log "smoke: each replica answers on its own node's address, same port"
  fi

  # The PDB allows no disruption: the eviction API must refuse (429).
  evict="${pods%%$'\n'*}"
  evict="${evict%% *}"
  out="$(kc create --raw "/api/v1/namespaces/fastdtm-smoke/pods/$evict/eviction" -f - 2>&1 <<EOF || true
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "$evict", "namespace": "fastdtm-smoke"}}
EOF
)"
  [[ "$out" == *"disruption budget"* ]] || smoke_fail "the eviction of $evict was not refused by the PDB: $out"
  log "smoke: the PDB refused the eviction of $evict ($(echo "$out" | grep -oi 'cannot evict[^.]*' | head -1))"

  # A rolling update: with maxSurge the first new pod starts on the free node before an old one goes.
  local old_hash
  old_hash="$(kc get pods -n fastdtm-smoke -l app=smoke -o jsonpath='{.items[0].metadata.labels.pod-template-hash}')"
  t0="$(now)"
  kc rollout restart -n fastdtm-smoke deployment/smoke >/dev/null
  kc rollout status -n fastdtm-smoke deployment/smoke --timeout=180s >&2 || smoke_fail "the rolling update did not finish"
  kc wait -n fastdtm-smoke --for=delete pod -l "app=smoke,pod-template-hash=$old_hash" --timeout=60s >/dev/null ||
    smoke_fail "the old pods did not go"
  log "smoke: rolling update done in $(since "$t0") s; replicas now on $(kc get pods -n fastdtm-smoke -l app=smoke -o jsonpath='{range .items[*]}{.spec.nodeName} {end}')"

  # Clean termination: the pods go well within their grace period (a pod that ignored SIGTERM would take all
  # of it, then SIGKILL), and no container is left on any node.
  local gone
  t0="$(now)"
  kc delete deployment -n fastdtm-smoke smoke --wait=true >/dev/null
  kc wait -n fastdtm-smoke --for=delete pod -l app=smoke --timeout=60s >/dev/null || smoke_fail "the pods were not deleted"
  gone="$(since "$t0")"
  awk -v g="$gone" -v limit="$((SMOKE_GRACE / 2))" 'BEGIN { exit !(g < limit) }' ||
    smoke_fail "the pods took ${gone} s to go: SIGTERM did not end them (grace period ${SMOKE_GRACE} s)"
  kc delete namespace fastdtm-smoke --wait=true --timeout=120s >/dev/null || smoke_fail "the namespace was not deleted"
  for ((k = 0; k < 40; k++)); do
    out=""
    for i in $(known_nodes); do
      [ "$(ctr_n "$i" tasks ls -q 2>/dev/null | wc -l)" -eq 0 ] || out="$out node $i"
    done
    [ -z "$out" ] && break
    sleep 0.5
  done
  [ -z "$out" ] || smoke_fail "containers still running on$out"
  log "smoke: pods gone ${gone} s after the delete (grace period ${SMOKE_GRACE} s); no container left on any node"
  log "smoke: OK"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  smoke) do_smoke ;;
  status) do_status ;;
  env)
    [ -s "$KCFG" ] || die "no kubeconfig in $DIR: run start first"
    echo "export KUBECONFIG=$KCFG"
    ;;
  *) usage ;;
esac
