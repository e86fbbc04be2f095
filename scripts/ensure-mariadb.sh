#!/usr/bin/env bash
# Installs Debian's mariadb-server when the machine lacks the server binary (the barrier tests, S22, need it).
# Only the package: the test suite starts its own private mariadbd on a free port, so the system service is
# kept from starting during the install and nothing is started here.
set -euo pipefail
# Debian puts the server in /usr/sbin, which a non-root PATH may not include.
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
if command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "mariadbd is missing and there is no apt-get here: install MariaDB >= 10.6 yourself." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Exit code 101 from policy-rc.d tells the package's scripts not to start (or restart) the service.
# Only a file this script created is removed again.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi
echo "Installing mariadb-server from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server >/dev/null
mariadbd --version
