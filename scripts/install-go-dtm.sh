#!/usr/bin/env bash
# Installs Go DTM v1.19.0 (github.com/dtm-labs/dtm) into .tools/go-dtm/bin/dtm for the side-by-side
# benchmark (bench/side_by_side.py). Idempotent: does nothing when that binary exists and runs.
#
# Project rule: Go DTM comes only from `go install github.com/dtm-labs/dtm@v1.19.0` through the Go
# module proxy (no clone, no release tarball). A plain `go install` fails on this network, because the
# proxy answers 403 on github.com/dtm-labs/dtm/@v/list, which go install reads for its
# deprecation/retraction check, while it serves the .info/.mod/.zip of v1.19.0. So:
#   1. `go mod download` fetches v1.19.0 from the proxy into a private module cache; that also writes
#      cache/download/github.com/dtm-labs/dtm/@v/list (listing just the versions it holds);
#   2. `go install` then runs with GOPROXY="file://<that cache>,<the proxy>": the file:// proxy in
#      front answers the version list from what the real proxy already served, and every module
#      missing there falls through to the real proxy. Every byte still comes from the Go module
#      proxy, and checksums are still verified against the Go checksum database (GOSUMDB untouched).
# The module cache stays under .tools/go-dtm/modcache (git-ignored) so reruns are quick, and the
# install runs in a subshell in an empty temporary directory so no go.mod around it interferes.
set -euo pipefail

VERSION="v1.19.0"
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools/go-dtm"
bin="$prefix/bin/dtm"

# `dtm -v` prints "dtm version: v0.0.0-dev": go install sets no -ldflags version string (the module
# version is in the binary's build info: `go version -m .tools/go-dtm/bin/dtm`). Its stderr only
# carries a harmless "invalid log level" line from before the config is read.
if [ -x "$bin" ] && "$bin" -v >/dev/null 2>&1; then
  echo "Go DTM already installed: $bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "go is missing: install Go >= 1.22 (https://go.dev/dl/) to build Go DTM $VERSION." >&2
  exit 1
fi

# The module proxy Go is configured with (`go env GOPROXY`): its first entry that is a proxy, without the
# "direct" or "off" fallbacks (nothing is fetched from VCS hosts).
PROXY="$(go env GOPROXY | tr ',|' '\n\n' | grep -v -x -e direct -e off -e '' | head -n 1 || true)"
if [ -z "$PROXY" ]; then
  echo "go env GOPROXY names no module proxy (only direct/off): set GOPROXY to build Go DTM $VERSION." >&2
  exit 1
fi

mkdir -p "$prefix/bin" "$prefix/modcache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "Installing Go DTM $VERSION with go install through the Go module proxy (a few minutes the first time)..."
(
  cd "$work"
  export GOMODCACHE="$prefix/modcache" GOBIN="$prefix/bin" GOFLAGS=-modcacherw GO111MODULE=on
  # -modcacherw: the cache stays deletable with rm -rf. No "direct" in GOPROXY: nothing from VCS hosts.
  GOPROXY="$PROXY" go mod download -json "github.com/dtm-labs/dtm@$VERSION" >/dev/null
  GOPROXY="file://$GOMODCACHE/cache/download,$PROXY" go install "github.com/dtm-labs/dtm@$VERSION"
)
"$bin" -v 2>/dev/null
echo "Installed $bin ($(go version -m "$bin" | awk '$1 == "mod" { print $2, $3 }'))"
