#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:6379 for `make run`: uses the one running there, or starts
# a private, durable one (append-only file under .run/redis) in the background.
set -euo pipefail
port="${REDIS_PORT:-6379}"
if redis-cli -p "$port" ping >/dev/null 2>&1; then
  exit 0
fi
dir="$(pwd)/.run/redis"
mkdir -p "$dir"
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync everysec \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 50); do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "Started redis-server on 127.0.0.1:$port (data in $dir, pid $(cat "$dir/redis.pid"))."
    exit 0
  fi
  sleep 0.1
done
echo "redis-server did not come up; see $dir/redis.log" >&2
exit 1
