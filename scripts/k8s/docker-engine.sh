#!/usr/bin/env bash
# A Docker engine for `make image` and the Kubernetes scripts. The engine $DOCKER_HOST names (or Docker's default
# socket) is used when one answers; otherwise a private dockerd is started, its state under .tools/docker (git-ignored):
# no bridge and no iptables rules, so it changes nothing in the machine's network (containers run with --network host
# or none). Debian's docker.io is installed first when dockerd is missing. Idempotent; needs root.
#
# Usage: engine="$(scripts/k8s/docker-engine.sh)" && eval "$engine"     start or reuse: prints
#            `export DOCKER_HOST=unix://...` (only that goes to stdout; messages go to stderr)
#        scripts/k8s/docker-engine.sh status     says which engine answers; exit 1 when none does
#        scripts/k8s/docker-engine.sh stop       stops the private engine by its pid (its data dir stays)
# DOCKER_ENGINE_DIR moves the private engine's state.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${DOCKER_ENGINE_DIR:-$PWD/.tools/docker}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
PRIVATE="unix://$SOCK"
SYSTEM="unix:///var/run/docker.sock"

say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

answers() { DOCKER_HOST="$1" timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# The pid of the private dockerd, if its pidfile names a live dockerd.
private_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

ensure_installed() {
  if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then return; fi
  command -v apt-get >/dev/null 2>&1 || die "dockerd is missing and there is no apt-get here: install a Docker engine."
  [ "$(id -u)" -eq 0 ] || die "dockerd is missing: run as root (apt-get install docker.io)."
  say "installing Debian's docker.io..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

# An engine that already answers: $DOCKER_HOST first, then the system socket, then ours. Prints its address.
running_engine() {
  if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then echo "$DOCKER_HOST"; return; fi
  if [ -S /var/run/docker.sock ] && answers "$SYSTEM"; then echo "$SYSTEM"; return; fi
  if private_pid >/dev/null && answers "$PRIVATE"; then echo "$PRIVATE"; return; fi
  return 1
}

start_private() {
  [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and a private one needs root."
  mkdir -p "$DIR/data" "$DIR/exec"
  local pid
  if pid="$(private_pid)"; then  # started but not answering yet (another caller is starting it, or it hangs)
    say "waiting for the private engine (pid $pid)"
  else
    say "starting a private engine: $PRIVATE (log: $DIR/dockerd.log)"
    # fd 9 holds our start lock: the daemon must not inherit it, nor the caller's stdout (a $(...) would wait on it).
    setsid dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" -H "$PRIVATE" --pidfile "$PIDFILE" \
      --bridge=none --iptables=false --ip6tables=false </dev/null >>"$DIR/dockerd.log" 2>&1 9>&- &
    pid=$!
  fi
  for _ in $(seq 1 120); do
    if answers "$PRIVATE"; then return; fi
    [ -d "/proc/$pid" ] || { tail -n 20 "$DIR/dockerd.log" >&2; die "dockerd exited (log above)."; }
    sleep 0.5
  done
  die "dockerd (pid $pid) does not answer after 60 s; see $DIR/dockerd.log"
}

start() {
  ensure_installed
  local host
  if ! host="$(running_engine)"; then
    mkdir -p "$DIR"
    exec 9>"$DIR/start.lock"
    flock 9  # two scripts starting the engine at once start one dockerd
    host="$(running_engine)" || { start_private; host="$PRIVATE"; }
    exec 9>&-
  fi
  say "engine $(DOCKER_HOST="$host" docker version --format '{{.Server.Version}}') at $host"
  echo "export DOCKER_HOST=$host"
}

# dockerd leaves its default network namespace mounted under the exec root: unmount what is left under $DIR.
unmount_leftovers() {
  awk -v dir="$DIR/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

stop() {
  local pid
  pid="$(private_pid)" || { say "no private engine is running"; unmount_leftovers; return 0; }
  say "stopping the private engine (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
  done
  if [ -d "/proc/$pid" ]; then
    say "dockerd (pid $pid) still runs after 30 s: killing it"
    kill -KILL "$pid"
    sleep 1
  fi
  unmount_leftovers
  say "stopped"
}

status() {
  local host
  host="$(running_engine)" || { say "no engine answers"; return 1; }
  say "engine $(DOCKER_HOST="$host" docker version --format '{{.Server.Version}}') at $host"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
