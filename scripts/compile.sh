#!/usr/bin/env bash
# The compiled build in place (docs/compiled.md): `make compiled` runs it, `make pure` runs it with --clean.
#
# mypyc turns the modules listed in pyproject.toml ([tool.hatch.build.targets.wheel.hooks.mypyc] include) into C
# extensions. They are built as the wheel is (hatch-mypyc, with .venv's mypy, so what the tests run is what the
# image ships), and the extensions are unpacked beside their sources: Python imports an extension before the .py of
# the same name, so everything run from this tree (the node, the tests, bench/) then runs compiled. Editing a
# compiled module's source makes it stale: tests/conftest.py refuses to run until it is rebuilt (or removed), by the
# hash of every source written to $MANIFEST here.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
OUT=.tools/compiled
MANIFEST=$OUT/sources.sha256

clean() {
  find fastdtm -name '*.so' -delete
  rm -f ./*__mypyc.*.so
  rm -rf "$OUT"
}

# A compiled wheel's build (make wheel, scripts/k8s/image.sh) leaves the extensions beside their sources too: removed
# again, unless this tree is compiled on purpose (`make compiled` wrote its manifest), so that it stays pure.
if [ "${1:-}" = "--after-wheel" ]; then
  [ -f "$MANIFEST" ] || { find fastdtm -name '*.so' -delete; rm -f ./*__mypyc.*.so; }
  exit 0
fi

if [ "${1:-}" = "--clean" ]; then
  clean
  echo "compile: removed the compiled modules; this tree runs as pure Python"
  exit 0
fi

command -v "${CC:-cc}" >/dev/null 2>&1 || { echo "compile: no C compiler (cc): the pure build runs instead" >&2; exit 1; }
clean
mkdir -p "$OUT"
start=$(date +%s)
# --no-build-isolation: the build uses .venv's hatchling, hatch-mypyc, mypy and fastdtm's dependencies (mypyc reads
# their types), so it needs no index and compiles against exactly what runs.
HATCH_BUILD_HOOK_ENABLE_MYPYC=1 "$BIN/pip" wheel -q --no-build-isolation --no-deps -w "$OUT" . >"$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log" >&2; echo "compile: the build failed (log: $OUT/build.log)" >&2; exit 1; }
wheel=$(ls "$OUT"/fastdtm-*.whl)
"$BIN/python" - "$wheel" "$MANIFEST" <<'EOF'
import hashlib
import sys
import zipfile
from pathlib import Path

wheel, manifest = sys.argv[1], Path(sys.argv[2])
lines = []
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if not name.endswith(".so"):
            continue
        archive.extract(name, ".")
        # The shared library of the whole group sits at the top, and has no source of its own.
        source = Path(name.split(".", 1)[0] + ".py")
        if source.parts[0] == "fastdtm":
            lines.append(f"{hashlib.sha256(source.read_bytes()).hexdigest()}  {source}")
manifest.write_text("\n".join(sorted(lines)) + "\n")
print(f"compile: {len(lines)} modules compiled")
EOF
echo "compile: done in $(($(date +%s) - start)) s; \`make pure\` goes back to pure Python"
