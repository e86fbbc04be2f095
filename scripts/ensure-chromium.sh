#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when missing: tests/browser drives the operator console in
# headless Chromium through chromedriver. The two packages come from the same source, so their versions match
# (Selenium is given the driver's path and never downloads one).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium or chromedriver is missing and there is no apt-get here: the browser tests will skip" \
    "(and fail under CI=true)." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing chromium and chromium-driver from the distribution's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
