#!/usr/bin/env bash
# Installs Debian's postgresql when the machine lacks `initdb` (the Python SDK's barrier and XA tests and
# examples/bank_transfer need it). Only the package: the tests start their own private `postgres` on a free
# port in a temporary directory, so the system service is kept from starting during the install.
set -euo pipefail
# Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, outside PATH.
for dir in /usr/lib/postgresql/*/bin; do
  if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
    exit 0
  fi
done
if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "initdb/postgres are missing and there is no apt-get here: install PostgreSQL >= 13 yourself." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Exit code 101 from policy-rc.d tells the package's scripts not to start the service. Only a file this
# script created is removed again.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi
echo "Installing postgresql from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
ls -d /usr/lib/postgresql/*/bin
