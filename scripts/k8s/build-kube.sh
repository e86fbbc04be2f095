#!/usr/bin/env bash
# Builds the Kubernetes control-plane and node binaries that `make k8s-validate` and `make k8s-e2e` run
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet) from the Go module proxy `go env GOPROXY`
# names, into .tools/kube/bin (git-ignored). Idempotent: a binary already built at this version is kept.
#
# Usage: scripts/k8s/build-kube.sh [apiserver] [controller-manager] [scheduler] [kubelet]   (default: all four)
#
# Kubernetes is not meant to be a Go dependency: k8s.io/kubernetes points every k8s.io/* staging module at
# ./staging with `replace`. A wrapper module pins each of them to the matching published v0.x tag instead;
# the list is read from k8s.io/kubernetes's own go.mod so it follows the version. A cold build takes ~10 min
# (kube-apiserver alone ~7.5) and ~2 GB of memory; Go's build cache makes a rebuild quick.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION="${KUBE_VERSION:-v1.32.4}"
ROOT="$PWD/.tools/kube"
WRAP="$ROOT/src-$VERSION"
mkdir -p "$ROOT/bin" "$WRAP"
export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS="${GOFLAGS:-} -mod=mod"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(apiserver controller-manager scheduler kubelet)

missing=()
for c in "${components[@]}"; do
  bin="$ROOT/bin/kube-$c"
  [ "$c" = kubelet ] && bin="$ROOT/bin/kubelet"
  if [ -x "$bin" ] && [ "$(cat "$bin.version" 2>/dev/null)" = "$VERSION" ]; then continue; fi
  missing+=("$c")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ ! -f "$WRAP/go.sum" ]; then
  echo "kube: preparing a module that builds k8s.io/kubernetes $VERSION (proxy: $(go env GOPROXY))"
  minor="${VERSION#v1.}"; staging="v0.${minor}"
  gomod="$(cd "$WRAP" && go mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module fastdtm.local/kubebuild"
    echo
    echo "go 1.23"
    echo
    echo "require k8s.io/kubernetes $VERSION"
    echo
    # Every `k8s.io/x => ./staging/src/k8s.io/x` in Kubernetes's go.mod becomes `k8s.io/x => k8s.io/x v0.N.P`.
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$WRAP/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package kubebuild"
    echo
    echo "import ("
    for c in apiserver controller-manager scheduler; do echo "	_ \"k8s.io/kubernetes/cmd/kube-$c\""; done
    echo "	_ \"k8s.io/kubernetes/cmd/kubelet\""
    echo ")"
  } >"$WRAP/tools.go"
  (cd "$WRAP" && go mod tidy -e >/dev/null)
fi

major=1; minor="${VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$VERSION"
for c in "${missing[@]}"; do
  name="kube-$c"; [ "$c" = kubelet ] && name=kubelet
  echo "kube: building $name $VERSION (cold: minutes)"
  start=$(date +%s)
  (cd "$WRAP" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$ROOT/bin/$name" "k8s.io/kubernetes/cmd/$name")
  echo "$VERSION" >"$ROOT/bin/$name.version"
  echo "kube: $name built in $(( $(date +%s) - start )) s"
done
