#!/usr/bin/env bash
# The whole suite on the compiled build (docs/compiled.md), which is what the image ships: `make test` runs it,
# then the pure build's own pass. Builds in place, runs pytest with the arguments given, and leaves the tree pure
# again, pass or fail, so that an edit made afterwards never runs as stale compiled code.
# Without a C compiler the suite runs on the pure build instead, with a line saying so (under CI=true: a failure).
set -uo pipefail
cd "$(dirname "$0")/.."

if ! ./scripts/compile.sh; then
  case "${CI:-}" in
    1 | true | yes) echo "test-compiled: the compiled build failed, and CI is set" >&2; exit 1 ;;
  esac
  echo "test-compiled: no compiled build here: the suite runs on the pure build" >&2
  exec .venv/bin/pytest "$@"
fi
trap './scripts/compile.sh --clean >/dev/null' EXIT
.venv/bin/pytest "$@"
