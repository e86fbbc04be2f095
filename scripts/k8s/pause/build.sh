#!/usr/bin/env bash
# Builds the pause image of the test cluster (scripts/k8s/cluster.sh): the static Go program in this folder
# (CGO_ENABLED=0) as the only file of an image FROM scratch, written as a docker-archive tar by image.py, so
# no container engine is needed; `ctr -n k8s.io images import` loads it into each node's containerd.
#
# Usage: scripts/k8s/pause/build.sh      prints the path of the tar (.tools/k8s/pause/pause.tar)
#
# Idempotent: rebuilt only when main.go, go.mod, image.py or the image name changed. Env PAUSE_IMAGE names
# the image (default local/pause:fastdtm; containerd stores it as docker.io/local/pause:fastdtm).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
OUT="$ROOT/.tools/k8s/pause"
REF="${PAUSE_IMAGE:-local/pause:fastdtm}"
export PATH="$PATH:/usr/local/go/bin"
mkdir -p "$OUT"

stamp="$(cat "$HERE/main.go" "$HERE/go.mod" "$HERE/image.py" | sha256sum | cut -c1-16) $REF"
if [ -s "$OUT/pause.tar" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$OUT/pause.tar"
  exit 0
fi
command -v go >/dev/null || { echo "pause: go is needed (golang)" >&2; exit 1; }
goarch="$(go env GOARCH)"
(cd "$HERE" && CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=mod go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT/pause" .)
python3 "$HERE/image.py" "$OUT/pause" "$REF" "$OUT/pause.tar" "$goarch" >"$OUT/image-id"
echo "$stamp" >"$OUT/stamp"
echo "pause: built $REF ($(cat "$OUT/image-id"), $(stat -c %s "$OUT/pause") bytes)" >&2
echo "$OUT/pause.tar"
