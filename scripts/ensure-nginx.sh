#!/usr/bin/env bash
# Installs Debian's nginx when the machine lacks it: the side-by-side benchmark (bench/side_by_side.py)
# runs a private nginx as the branch server. Only the binary is needed; the benchmark starts its own
# instance with its own config and port, and never uses the packaged service or its default site.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "nginx is missing and there is no apt-get here: install nginx yourself." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing nginx from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
# Debian installs it to /usr/sbin, which a non-root PATH may lack.
{ command -v nginx >/dev/null 2>&1 && nginx -v; } || /usr/sbin/nginx -v
