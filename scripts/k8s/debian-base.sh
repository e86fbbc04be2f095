#!/usr/bin/env bash
# Builds the image local/debian-py:bookworm: a minimal Debian bookworm with python3, python3-venv and ca-certificates,
# made with debootstrap from the Debian mirror apt already uses and imported into the Docker engine. image.sh uses it as
# BASE where no public base image can be pulled. Skips when the image exists; ~80 s otherwise. Needs root.
#
# Usage: scripts/k8s/debian-base.sh
#   DEBIAN_MIRROR=<url> overrides the mirror read from apt's sources;
#   DEBIAN_SUITE=trixie builds local/debian-py:trixie instead (another Python: 3.13).
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE="${DEBIAN_SUITE:-bookworm}"
IMAGE="local/debian-py:$SUITE"
WORK="$PWD/.tools/debian-base"
ROOTFS="$WORK/rootfs"

say() { echo "debian-base: $*" >&2; }
die() { say "$*"; exit 1; }

# The mirrors apt's sources list for the suite $1 itself (not -updates or -security), deb822 or one-line format.
apt_mirror() {
  local f suite="$1"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (!found && enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      { key = tolower($1); $1 = ""; sub(/^[ \t]+/, "") }
      key == "types:" { types = $0 }
      key == "suites:" { suites = $0 }
      key == "uris:" { uris = $0 }
      key == "enabled:" { enabled = tolower($0) }
      END { flush() }
    ' "$f"
  done
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
    | sed -e 's/#.*//' -e 's/\[[^]]*\]//' | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
}

# debootstrap leaves its proc/sys mounts behind when interrupted: unmount them before deleting the tree.
cleanup() {
  awk -v root="$ROOTFS/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$ROOTFS"
}

ENGINE="$(scripts/k8s/docker-engine.sh)"  # `eval "$(...)"` alone would hide a failure
eval "$ENGINE"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root."
if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# A Debian host's own suite names the archive too, when apt has no line for $SUITE.
HOST_SUITE="$(awk -F= '{ gsub(/"/, "", $2) } $1 == "ID" { id = $2 } $1 == "VERSION_CODENAME" { c = $2 } END { if (id == "debian") print c }' \
  /etc/os-release 2>/dev/null || true)"
MIRROR="${DEBIAN_MIRROR:-$({ apt_mirror "$SUITE"; [ -z "$HOST_SUITE" ] || apt_mirror "$HOST_SUITE"; } | awk 'NR == 1')}"
[ -n "$MIRROR" ] || die "no Debian mirror in apt's sources: set DEBIAN_MIRROR."

start=$(date +%s)
say "debootstrap $SUITE from $MIRROR into $ROOTFS"
mkdir -p "$WORK"
cleanup
trap cleanup EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)."; }
# The engine provides resolv.conf, hostname and hosts; apt's downloads and lists are of no use in an image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/var/log/* "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase $SUITE from $MIRROR" - "$IMAGE" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "$IMAGE: $((size / 1000000)) MB, built in $(($(date +%s) - start)) s"
