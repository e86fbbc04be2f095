#!/usr/bin/env bash
# One command: the bank-transfer example end to end (PostgreSQL, a fastdtm node unless one answers on :36789,
# the two bank services, the transfers). Extra arguments go to `python -m examples.bank_transfer`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
make -s .venv/.installed
./scripts/ensure-postgres.sh
exec .venv/bin/python -m examples.bank_transfer "$@"
