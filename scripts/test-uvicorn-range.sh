#!/usr/bin/env bash
# The protocol tests (tests/api/test_protocol.py, tests/api/test_protocol_fallback.py) against the lowest and
# the highest uvicorn that pyproject.toml allows: fastdtm/api/protocol.py leans on uvicorn internals, and a
# version inside the pin that moved them must fail here, not in production.
#
# Each version is installed alone (no dependencies) into .tools/uvicorn-<version>/ and put ahead of .venv's
# own uvicorn with PYTHONPATH: everything else is .venv's, so a run costs one small download, once.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
# The pin's lower bound, read from pyproject.toml so that the two cannot drift apart.
LOWEST=$(grep -o 'uvicorn\[standard\]>=[0-9.]*' pyproject.toml | cut -d= -f2)
# The newest uvicorn tested; the pin's upper bound is the next minor version. Raise both together.
HIGHEST=${UVICORN_HIGHEST:-0.54.0}

for version in "$LOWEST" "$HIGHEST"; do
    target=.tools/uvicorn-$version
    if [ ! -f "$target/.installed" ]; then
        rm -rf "$target"
        "$BIN/pip" install --quiet --no-deps --target "$target" "uvicorn==$version"
        touch "$target/.installed"
    fi
    found=$(PYTHONPATH="$PWD/$target" "$BIN/python" -c 'import uvicorn; print(uvicorn.__version__)')
    if [ "$found" != "$version" ]; then
        echo "test-uvicorn-range: wanted uvicorn $version, imported $found" >&2
        exit 1
    fi
    echo "== uvicorn $version"
    PYTHONPATH="$PWD/$target" "$BIN/pytest" -q -x -p no:cacheprovider \
        tests/api/test_protocol.py tests/api/test_protocol_fallback.py
done
