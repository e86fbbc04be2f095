#!/usr/bin/env bash
# Installs Debian's redis-server when the machine lacks it (the test suite and `make run` need the binary).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing and there is no apt-get here: install Redis >= 6.2 yourself." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing redis-server from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
redis-server --version
