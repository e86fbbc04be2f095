#!/usr/bin/env bash
# Fills the Go module and build caches and the Maven repository the SDK interop suites use, so
# that pytest's first build is quick, and builds Go DTM for the differential suite (tests/differential).
# Where a toolchain is missing this does nothing: the suite itself then skips (locally) or fails (CI)
# with the reason.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
if command -v go >/dev/null 2>&1; then
  (cd tests/interop/go && GOFLAGS=-mod=mod go mod download && GOFLAGS=-mod=mod go test -c -o /dev/null .)
  ./scripts/install-go-dtm.sh
fi
if command -v mvn >/dev/null 2>&1; then
  mvn -q -B -f tests/interop/java/pom.xml compile dependency:build-classpath \
    -Dmdep.outputFile="$PWD/tests/interop/java/target/classpath.txt"
fi
