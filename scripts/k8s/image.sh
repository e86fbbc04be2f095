#!/usr/bin/env bash
# Builds fastdtm's container image (what `make image` runs), checks it, and saves it to .tools/images/fastdtm.tar.
#
#   1. a Docker engine: scripts/k8s/docker-engine.sh (a private dockerd when none answers);
#   2. BASE: $BASE when set; else python:3.12-slim when present or pullable; else the local Debian base that
#      scripts/k8s/debian-base.sh builds (local/debian-py:bookworm);
#   3. wheels for BASE's Python and platform: the project's own (`pip wheel`) plus its dependencies
#      (`pip download --only-binary=:all: --platform ... --python-version ...`), cached in .tools/image/cache/<tag>
#      so a rebuild needs no network (WHEELS_REFRESH=1 asks the index again);
#   4. docker build --network none: the image installs those wheels only;
#   5. checks: uid 65532, `fastdtm version`, and a --read-only container answering /api/live and /api/ready.
# Needs root (the engine) and the project's .venv (the Makefile makes it), whose pip does the downloads.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFAULT_BASE=python:3.12-slim
LOCAL_BASE=local/debian-py:bookworm
CTX=.tools/image/wheels        # the build context's only content (.dockerignore)
TOOLING=.tools/image/tooling   # the project's build backend, so its wheel builds offline
TAR=.tools/images/fastdtm.tar
CHECK_NAME="fastdtm-image-check-$$"
T0=$(date +%s.%N)

say() { echo "image: $*" >&2; }
die() { say "$*"; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
mb() { awk -v n="$1" 'BEGIN { printf "%.0f MB", n / 1000000 }'; }
# An engine this run had to start is stopped at the end (by its pid), unless KEEP_ENGINE=1: `make image` leaves
# nothing running. Its data dir stays, so the next build starts warm.
ENGINE_WAS_UP=0
scripts/k8s/docker-engine.sh status >/dev/null 2>&1 && ENGINE_WAS_UP=1
cleanup() {
  docker rm -f "$CHECK_NAME" >/dev/null 2>&1 || true
  if [ "$ENGINE_WAS_UP" = 0 ] && [ "${KEEP_ENGINE:-0}" != 1 ]; then scripts/k8s/docker-engine.sh stop >&2 || true; fi
}
trap cleanup EXIT

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip: make the project's .venv first (make run)."
if [ -x .venv/bin/fastdtm ]; then VERSION="$(.venv/bin/fastdtm version)"; else
  VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' fastdtm/__init__.py)"
fi
REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no -- fastdtm pyproject.toml 2>/dev/null)" ] || REVISION="$REVISION-dirty"
IMAGE="fastdtm:$VERSION"

ENGINE="$(scripts/k8s/docker-engine.sh)"  # `eval "$(...)"` alone would hide a failure
eval "$ENGINE"

choose_base() {
  if [ -n "${BASE:-}" ]; then
    docker image inspect "$BASE" >/dev/null 2>&1 || docker pull -q "$BASE" >/dev/null || die "BASE=$BASE: not here and not pullable."
    say "base: $BASE (from \$BASE)"
  elif docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1 || timeout 120 docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE=$DEFAULT_BASE
    say "base: $BASE"
  else
    say "base: $DEFAULT_BASE cannot be pulled here: using the local Debian base $LOCAL_BASE instead"
    scripts/k8s/debian-base.sh
    BASE=$LOCAL_BASE
  fi
}

# BASE's Python version, architecture and C library, which the binary wheels must match.
probe_base() {
  local probe
  probe="$(docker run --rm --network none --entrypoint python3 "$BASE" -c '
import os, platform, sys
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or "musl 1.2"
except (ValueError, OSError):
    libc = "musl 1.2"
print(sys.implementation.name, "%d.%d" % sys.version_info[:2], platform.machine(), libc)')" ||
    die "cannot run python3 in $BASE: BASE must be an image with python3 and its venv module."
  read -r IMPL PYVER ARCH LIBC LIBCVER <<<"$probe"
  [ "$IMPL" = cpython ] || die "$BASE runs $IMPL: the wheels are for CPython."
  PLATFORMS=()
  if [ "$LIBC" = glibc ]; then
    local m
    for ((m = ${LIBCVER#2.}; m >= 5; m--)); do PLATFORMS+=(--platform "manylinux_2_${m}_$ARCH"); done
    PLATFORMS+=(--platform "manylinux2014_$ARCH" --platform "manylinux2010_$ARCH" --platform "manylinux1_$ARCH")
    TAG="cp${PYVER/./}-manylinux_2_${LIBCVER#2.}_$ARCH"
  else
    PLATFORMS+=(--platform "musllinux_1_2_$ARCH" --platform "musllinux_1_1_$ARCH")
    TAG="cp${PYVER/./}-musllinux_1_2_$ARCH"
  fi
  say "base: CPython $PYVER, $ARCH, $LIBC $LIBCVER"
}

# The compiled wheel (docs/compiled.md) when it can run in BASE: built here with .venv's mypyc, so BASE's CPython
# must be this one's version, and its glibc at least this machine's (the extensions link against it). Otherwise,
# or with COMPILED=0, the pure-Python wheel: same code, slower.
compiled_fits() {
  [ "${COMPILED:-1}" != 0 ] || { say "fastdtm: pure Python (COMPILED=0)"; return 1; }
  command -v "${CC:-cc}" >/dev/null 2>&1 || { say "fastdtm: pure Python (no C compiler here)"; return 1; }
  [ -x .venv/bin/python ] && .venv/bin/python -c 'import hatch_mypyc' 2>/dev/null ||
    { say "fastdtm: pure Python (.venv has no hatch-mypyc: make the dev venv first)"; return 1; }
  local here
  here="$(.venv/bin/python -c 'import os, platform, sys
print("%d.%d" % sys.version_info[:2], platform.machine(), os.confstr("CS_GNU_LIBC_VERSION") or "none")')"
  read -r HERE_PY HERE_ARCH _ HERE_LIBCVER <<<"$here"
  if [ "$HERE_PY" != "$PYVER" ] || [ "$HERE_ARCH" != "$ARCH" ] || [ "$LIBC" != glibc ] ||
    [ "${HERE_LIBCVER#2.}" -gt "${LIBCVER#2.}" ]; then
    say "fastdtm: pure Python (compiled here for CPython $HERE_PY, glibc $HERE_LIBCVER; BASE has $PYVER, $LIBC $LIBCVER)"
    return 1
  fi
}

project_wheel() {
  local requires
  rm -rf "$CTX/fastdtm"
  if compiled_fits; then
    say "fastdtm: compiling the hot path with mypyc (about 2 minutes)"
    HATCH_BUILD_HOOK_ENABLE_MYPYC=1 .venv/bin/pip wheel -q --no-build-isolation --no-deps -w "$CTX/fastdtm" . >/dev/null
    ./scripts/compile.sh --after-wheel
    WHEEL="$(ls "$CTX"/fastdtm/fastdtm-*.whl)"
    return
  fi
  if ! "$PY" -m pip wheel -q --no-deps --no-index --find-links "$TOOLING" -w "$CTX/fastdtm" . >/dev/null 2>&1; then
    mapfile -t requires < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
    say "downloading the build backend (${requires[*]}) into $TOOLING"
    "$PY" -m pip download -q -d "$TOOLING" "${requires[@]}"
    "$PY" -m pip wheel -q --no-deps --no-index --find-links "$TOOLING" -w "$CTX/fastdtm" . >/dev/null
  fi
  WHEEL="$(ls "$CTX"/fastdtm/fastdtm-*.whl)"
}

# The wheel's unconditional Requires-Dist lines, which the image installs before fastdtm itself.
requirements() {
  "$PY" - "$WHEEL" <<'EOF'
import sys
import zipfile
from email.parser import Parser

with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
for req in metadata.get_all("Requires-Dist") or []:
    if "extra" not in req.partition(";")[2]:
        print(req)
EOF
}

dependency_wheels() {
  local cache=".tools/image/cache/$TAG" target=(--only-binary=:all: --implementation cp --python-version "$PYVER"
    --abi "cp${PYVER/./}" "${PLATFORMS[@]}" -r "$CTX/deps/requirements.txt")
  rm -rf "$CTX/deps" && mkdir -p "$CTX/deps" "$cache"
  requirements >"$CTX/deps/requirements.txt"
  if [ -z "${WHEELS_REFRESH:-}" ] &&
    "$PY" -m pip download -q --no-index --find-links "$cache" -d "$CTX/deps" "${target[@]}" >/dev/null 2>&1; then
    say "wheels: from the cache $cache"
    return
  fi
  say "wheels: downloading for CPython $PYVER ($TAG) into $cache"
  "$PY" -m pip download -q -d "$cache" "${target[@]}"
  find "$CTX/deps" -name '*.whl' -delete
  "$PY" -m pip download -q --no-index --find-links "$cache" -d "$CTX/deps" "${target[@]}" >/dev/null
}

build() {
  local t
  t=$(date +%s.%N)
  # The classic builder: Debian's docker.io client has no buildx; --network none keeps every RUN offline.
  DOCKER_BUILDKIT=0 docker build --network none --force-rm --build-arg BASE="$BASE" --build-arg VERSION="$VERSION" \
    --build-arg REVISION="$REVISION" -t "$IMAGE" -t fastdtm:latest . >&2
  BUILD_SECONDS=$(since "$t")
  # Earlier builds lose their tags to this one, and a build stage never has one: keep a day of them (switching BASE
  # back stays quick), drop the rest.
  local stage
  for stage in fastdtm fastdtm-build; do
    docker image prune -f --filter "label=org.opencontainers.image.title=$stage" --filter until=24h >/dev/null
  done
}

check() { printf 'image: check: %-62s %s\n' "$1" "$2" >&2; }

# A free loopback port below Linux's range for outgoing connections (32768-60999).
free_port() {
  "$PY" -c '
import random, socket
for _ in range(200):
    port = random.randint(20000, 32767)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break'
}

http_ok() {
  "$PY" -c '
import sys, urllib.request
urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
}

# Serves until /api/live answers; prints the port. Retries with another port when the first is taken meanwhile.
start_server() {
  local port _
  for _ in 1 2 3; do
    port="$(free_port)"
    docker rm -f "$CHECK_NAME" >/dev/null 2>&1 || true
    docker run -d --name "$CHECK_NAME" --read-only --network host --user 65532:65532 \
      --tmpfs /var/lib/fastdtm:rw,nosuid,nodev,noexec,uid=65532,gid=65532,mode=0700,size=64m \
      "$IMAGE" --host 127.0.0.1 --port "$port" >/dev/null
    for _ in $(seq 1 60); do
      if http_ok "http://127.0.0.1:$port/api/live"; then echo "$port"; return; fi
      [ "$(docker inspect -f '{{.State.Running}}' "$CHECK_NAME")" = true ] || break
      sleep 0.5
    done
    if ! docker logs "$CHECK_NAME" 2>&1 | grep -qi "address already in use"; then break; fi
  done
  docker logs "$CHECK_NAME" >&2 || true
  die "the container did not answer /api/live (its log above)"
}

checks() {
  local out port t code
  out="$(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
  [ "$out" = 65532:65532 ] || die "the image's user is '$out', not 65532:65532"
  out="$(docker run --rm --network none --read-only --entrypoint /opt/fastdtm/bin/python "$IMAGE" \
    -c 'import os; print(os.getuid(), os.getgid(), os.getcwd())')"
  [ "$out" = "65532 65532 /var/lib/fastdtm" ] || die "uid, gid, cwd in the container: $out"
  check "runs as uid 65532, gid 65532, in /var/lib/fastdtm" ok
  out="$(docker run --rm --network none --read-only --entrypoint /opt/fastdtm/bin/fastdtm "$IMAGE" version)"
  [ "$out" = "$VERSION" ] || die "fastdtm version printed '$out', expected $VERSION"
  check "fastdtm version (read-only, no network)" "$out"
  docker run --rm --network none --entrypoint /opt/fastdtm/bin/python "$IMAGE" \
    -c 'open("fastdtm.db.probe", "w").close()' || die "uid 65532 cannot write its working directory"
  check "uid 65532 may write /var/lib/fastdtm (no volume mounted)" ok
  t=$(date +%s.%N)
  port="$(start_server)"
  check "--read-only, tmpfs /var/lib/fastdtm: /api/live on 127.0.0.1:$port" "ok after $(since "$t") s"
  http_ok "http://127.0.0.1:$port/api/ready" || die "/api/ready did not answer 200"
  check "/api/ready (embedded store)" ok
  # The first log line names the build: the compiled modules must have loaded in BASE's Python, not been skipped.
  out="$(docker logs "$CHECK_NAME" 2>&1 | grep -o '(pure Python)\|([0-9]* modules compiled)' | head -1)"
  case "$WHEEL" in
    *-cp*-linux_*.whl) [ "$out" != "(pure Python)" ] && [ -n "$out" ] || die "a compiled wheel, yet the node logs $out" ;;
  esac
  check "build" "${out:-unknown}"
  t=$(date +%s.%N)
  docker stop -t 20 "$CHECK_NAME" >/dev/null
  code="$(docker inspect -f '{{.State.ExitCode}}' "$CHECK_NAME")"
  [ "$code" = 0 ] || { docker logs "$CHECK_NAME" >&2; die "exit code $code after SIGTERM"; }
  check "docker stop (SIGTERM to pid 1)" "exit 0 after $(since "$t") s"
  docker rm "$CHECK_NAME" >/dev/null
}

# containerd imports this tar (`ctr -n k8s.io images import`); both tags, so a pod can name the version.
save() {
  local stamp
  stamp="$(docker image inspect -f '{{.Id}}' "$IMAGE") $IMAGE fastdtm:latest"
  mkdir -p "$(dirname "$TAR")"
  if [ -f "$TAR" ] && [ "$(cat "$TAR.id" 2>/dev/null)" = "$stamp" ]; then
    say "saved: $TAR (unchanged)"
    return
  fi
  docker save -o "$TAR.tmp" "$IMAGE" fastdtm:latest
  mv "$TAR.tmp" "$TAR"
  echo "$stamp" >"$TAR.id"
  say "saved: $TAR ($(mb "$(stat -c %s "$TAR")"))"
}

choose_base
probe_base
mkdir -p "$CTX"
project_wheel
dependency_wheels
say "wheels: $(basename "$WHEEL") and $(find "$CTX/deps" -name '*.whl' | wc -l) dependencies ($(du -sh "$CTX" | cut -f1))"
build
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
base_size="$(docker image inspect -f '{{.Size}}' "$BASE")"
say "built $IMAGE and fastdtm:latest from $BASE in $BUILD_SECONDS s: $(mb "$size") ($(mb "$((size - base_size))") over the base)"
checks
save
say "done in $(since "$T0") s: $IMAGE ($(mb "$size")), build $BUILD_SECONDS s, tar $TAR"
