#!/usr/bin/env bash
# `make k8s-e2e`: fastdtm on a real Kubernetes, end to end. Builds the image (scripts/k8s/image.sh), starts a
# control plane and 3 kubelet nodes with containerd on loopback (scripts/k8s/cluster.sh), imports the image,
# runs tests/kube (the dev overlay + a test overlay: Ready, a saga through the Python SDK, NotReady while
# Redis is down, a pod deleted under load, a rolling update under load, a PodDisruptionBudget refusing an
# eviction), and stops everything it started, by pid, whatever happened. Each check prints an `ok` line.
#
# Env: K8S_E2E_DIR (default .run/k8s-e2e), KEEP_CLUSTER=1 (leave it running: `scripts/k8s/cluster.sh stop DIR`).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
DIR="${K8S_E2E_DIR:-$PWD/.run/k8s-e2e}"
TAR="$PWD/.tools/images/fastdtm.tar"

./scripts/k8s/image.sh
stop_cluster() { [ "${KEEP_CLUSTER:-0}" = 1 ] || ./scripts/k8s/cluster.sh stop "$DIR"; }
trap stop_cluster EXIT
IMAGES="$TAR" NODES=3 ./scripts/k8s/cluster.sh start "$DIR"
FASTDTM_K8S_DIR="$DIR" .venv/bin/pytest tests/kube -v -s -p no:cacheprovider ${PYTEST_ARGS:-}
echo "k8s-e2e: passed in $(( $(date +%s) - started )) s"
