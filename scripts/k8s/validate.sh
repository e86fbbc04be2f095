#!/usr/bin/env bash
# `make k8s-validate`: checks the kustomize manifests in k8s/ against a real kube-apiserver v1.32 (etcd +
# kube-apiserver on 127.0.0.1, started by scripts/k8s/control-plane.sh), the way a cluster would judge them.
# See docs/deploy-validate.md.
#
#   1. `kubectl kustomize` renders k8s/base, every k8s/overlays/*/ (and any other kustomization under k8s/),
#      and each k8s/components/* on top of k8s/base (a Component only renders inside a kustomization).
#   2. For each of them: its target namespaces (from the rendered objects; `fastdtm` for objects without one)
#      are created, labelled pod-security.kubernetes.io/{enforce,warn,audit}=restricted, then
#      `kubectl apply --dry-run=server --validate=strict -k DIR` must exit 0 with no "Warning:" at all (Pod
#      Security admission only warns about a Deployment's pod template; deprecations warn too).
#      A minimal ServiceMonitor CRD (tests/k8s/crds/) is installed first so monitoring.coreos.com objects check.
#   3. tests/k8s/good/* must be accepted the same way, and every tests/k8s/bad/* must be refused, for the
#      reason its kustomization.yaml names on its `# expect: REGEX` line: proof that the check can fail.
#
# Environment:
#   K8S_ROOT=k8s                manifests to check (relative to the repository or absolute)
#   K8S_VALIDATE_DIR=DIR        use (start, or reuse when live) the control plane in DIR and leave it running;
#                               default: a private temporary one, stopped at the end
#   KEEP=1                      keep the private temporary directory (logs) after the run
#
# Cold, on a fresh machine: apt-get install etcd-server, and scripts/k8s/build-kube.sh apiserver (~8 min, once;
# Go's build cache keeps later builds quick). Warm: well under a minute.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -n "${K8S_VALIDATE_DIR:-}" ]; then mkdir -p "$K8S_VALIDATE_DIR"; K8S_VALIDATE_DIR="$(cd "$K8S_VALIDATE_DIR" && pwd)"; fi
cd "$ROOT"
T0="$(date +%s.%N)"
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

K8S_ROOT="${K8S_ROOT:-k8s}"
FIXTURES="${FIXTURES:-tests/k8s}"
DEFAULT_NS=fastdtm
FIXTURE_NS=fastdtm-fixtures

failures=0
ok()   { echo "ok  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
die()  { echo "k8s-validate: error: $*" >&2; exit 1; }

command -v kubectl >/dev/null || die "kubectl is needed on PATH"

rel() { local p="${1%/}"; echo "${p#"$ROOT"/}"; }

# The kustomization file of a directory, if any.
kfile() {
  local f
  for f in kustomization.yaml kustomization.yml Kustomization; do
    [ -f "$1/$f" ] && { echo "$1/$f"; return 0; }
  done
  return 1
}

# --- 1. render ---------------------------------------------------------------------------------------------

[ -d "$K8S_ROOT" ] || die "no $K8S_ROOT/ directory"
K8S_ROOT="$(cd "$K8S_ROOT" && pwd)"
targets=()
[ -d "$K8S_ROOT/base" ] && targets+=("$K8S_ROOT/base")
for d in "$K8S_ROOT"/overlays/*/; do [ -d "$d" ] && targets+=("${d%/}"); done
# Any other kustomization under k8s/ (except Components, which only render inside an overlay).
while IFS= read -r f; do
  d="$(dirname "$f")"
  case " ${targets[*]} " in *" $d "*) continue ;; esac
  grep -qE '^kind:[[:space:]]*Component[[:space:]]*$' "$f" && continue
  targets+=("$d")
done < <(find "$K8S_ROOT" -maxdepth 4 \( -name kustomization.yaml -o -name kustomization.yml -o -name Kustomization \) | sort)
[ ${#targets[@]} -gt 0 ] || die "no kustomization under $(rel "$K8S_ROOT")/"
[ -d "$K8S_ROOT/base" ] || fail "$(rel "$K8S_ROOT")/base: missing"
[ -n "$(ls -d "$K8S_ROOT"/overlays/*/ 2>/dev/null)" ] || fail "$(rel "$K8S_ROOT")/overlays/: no overlay"

WORK="$(mktemp -d /tmp/k8s-validate.XXXXXX)"
mkdir -p "$WORK/render"
export KUBECACHEDIR="$WORK/kube-cache"

if [ -n "${K8S_VALIDATE_DIR:-}" ]; then
  CP="$K8S_VALIDATE_DIR"
  own_cp=0
else
  CP="$WORK/cp"
  own_cp=1
fi
cleanup() {
  local rc=$?
  if [ "$own_cp" = 1 ]; then "$ROOT/scripts/k8s/control-plane.sh" stop "$CP" >/dev/null 2>&1 || true; fi
  if [ "${KEEP:-0}" = 1 ]; then
    echo "k8s-validate: kept $WORK (logs: $CP/*.log)" >&2
  else
    rm -rf "$WORK"
    [ "$rc" = 0 ] || echo "k8s-validate: KEEP=1 keeps the logs and rendered manifests" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Components (kind: Component, e.g. the optional ServiceMonitor) only render inside a kustomization: check each
# one on top of k8s/base, in a small kustomization made here (kustomize wants relative paths).
for f in "$K8S_ROOT"/components/*/kustomization.yaml "$K8S_ROOT"/components/*/kustomization.yml; do
  if [ ! -f "$f" ] || [ ! -d "$K8S_ROOT/base" ]; then continue; fi
  c="$(dirname "$f")"
  w="$WORK/with-components/$(basename "$c")"
  mkdir -p "$w"
  ns="$(awk '/^namespace:/ {gsub(/["\047]/, "", $2); print $2; exit}' "$(kfile "$K8S_ROOT/base")")"
  {
    echo "# $(rel "$K8S_ROOT/base") + $(rel "$c"), made by scripts/k8s/validate.sh"
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    [ -z "$ns" ] || echo "namespace: $ns"
    echo "resources: [$(realpath --relative-to="$w" "$K8S_ROOT/base")]"
    echo "components: [$(realpath --relative-to="$w" "$c")]"
  } >"$w/kustomization.yaml"
  targets+=("$w")
done

# rel for a made kustomization: what it combines.
label() {
  case "$1" in
    "$WORK"/with-components/*) echo "$(rel "$K8S_ROOT/base") + $(rel "$K8S_ROOT/components/$(basename "$1")")" ;;
    *) rel "$1" ;;
  esac
}

rendered=()
for d in "${targets[@]}"; do
  out="$WORK/render/$(label "$d" | tr '/ +' '___').yaml"
  if kubectl kustomize "$d" >"$out" 2>"$out.err"; then
    n="$(grep -c '^kind:' "$out" || true)"
    ok "$(label "$d"): renders ($n objects)"
    rendered+=("$d")
  else
    fail "$(label "$d"): kubectl kustomize failed: $(grep -m1 . "$out.err" | sed -E 's/^E[0-9]{4} [^]]*\] "command failed" err=//')"
  fi
done

# --- 2. control plane ------------------------------------------------------------------------------------

t_cp="$(date +%s.%N)"
# The control plane's own output (apt-get, the ~8 min build of kube-apiserver when missing, readiness),
# indented. Its servers log to files in $CP, so they do not hold this pipe open.
set +e
"$ROOT/scripts/k8s/control-plane.sh" start "$CP" 2>&1 | sed -u -e 's/^control-plane: /  control plane: /' -e t -e 's/^/  /'
rc="${PIPESTATUS[0]}"
set -e
[ "$rc" = 0 ] || die "the control plane did not start (logs: $CP/*.log; KEEP=1 keeps them)"
cp_secs="$(awk -v a="$t_cp" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
cp "$CP/kubeconfig" "$WORK/kubeconfig"
export KUBECONFIG="$WORK/kubeconfig"
version="$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"

# The ServiceMonitor CRD (and any other under tests/k8s/crds/), for real, then wait until it is served.
for f in "$FIXTURES"/crds/*.yaml; do
  [ -f "$f" ] || continue
  kubectl apply --validate=strict -f "$f" >/dev/null
  name="$(sed -n 's/^  name: *//p' "$f" | head -1)"
  kubectl wait --for=condition=Established --timeout=30s "crd/$name" >/dev/null
done

# namespaces_of FILE: the namespaces the rendered objects in FILE use (metadata.namespace, and the names of
# Namespace objects). kustomize prints top-level keys at column 0 and metadata's fields at two spaces.
namespaces_of() {
  awk '
    /^---/ { kind = ""; meta = 0; next }
    /^kind:/ { kind = $2 }
    /^metadata:/ { meta = 1; next }
    /^[^ #]/ { meta = 0 }
    meta && /^  namespace:/ { v = $2; gsub(/["\047]/, "", v); print v }
    meta && /^  name:/ && kind == "Namespace" { v = $2; gsub(/["\047]/, "", v); print v }
  ' "$1" | sort -u
}

ensure_namespace() {
  local ns="$1"
  # --save-config: a later `kubectl apply` of a Namespace object of the same name must not warn.
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" --save-config >/dev/null
  kubectl label --overwrite namespace "$ns" \
    pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted \
    pod-security.kubernetes.io/audit=restricted >/dev/null
}

# dry_run DIR NS OUT: server-side dry run of kustomization DIR; namespaced objects without a namespace go to
# NS (the kubeconfig context's namespace, not -n, so objects that name their own namespace keep it).
dry_run() {
  local d="$1" ns="$2" out="$3"
  kubectl config set-context --current --namespace="$ns" >/dev/null
  kubectl apply --dry-run=server --validate=strict -k "$d" >"$out.out" 2>"$out.err"
}

# --- 2b. the manifests ------------------------------------------------------------------------------------

for d in "${rendered[@]}"; do
  r="$(label "$d")"
  out="$WORK/render/$(echo "$r" | tr '/ +' '___').yaml"
  mapfile -t nss < <(namespaces_of "$out")
  [ ${#nss[@]} -gt 0 ] || nss=("$DEFAULT_NS")
  for ns in "${nss[@]}"; do ensure_namespace "$ns"; done
  # Objects without a namespace of their own land in the one the overlay targets (the first) or `fastdtm`.
  ctx_ns="$(awk '/^namespace:/ {gsub(/["\047]/, "", $2); print $2; exit}' "$(kfile "$d")")"
  [ -n "$ctx_ns" ] || { [ ${#nss[@]} = 1 ] && ctx_ns="${nss[0]}"; } || ctx_ns="$DEFAULT_NS"
  ensure_namespace "$ctx_ns"
  if dry_run "$d" "$ctx_ns" "$out.apply"; then rc=0; else rc=$?; fi
  n="$(grep -c . "$out.apply.out" || true)"
  if [ "$rc" != 0 ]; then
    fail "$r: refused by kube-apiserver $version (exit $rc):"
    sed 's/^/        /' "$out.apply.err"
  elif grep -q 'Warning:' "$out.apply.err"; then
    fail "$r: accepted with warnings by kube-apiserver $version (a warning fails the check):"
    grep 'Warning:' "$out.apply.err" | sed 's/^/        /'
  else
    ok "$r: $n objects accepted by kube-apiserver $version in namespace $(IFS=,; echo "${nss[*]}") (restricted)"
  fi
done

# --- 3. fixtures: the positive control must pass, every negative one must fail, for its own reason --------

ensure_namespace "$FIXTURE_NS"
for d in "$FIXTURES"/good/*/; do
  [ -d "$d" ] || continue
  d="${d%/}"; r="$(rel "$d")"; out="$WORK/$(echo "$r" | tr '/' '_')"
  if dry_run "$d" "$FIXTURE_NS" "$out"; then rc=0; else rc=$?; fi
  if [ "$rc" != 0 ] || grep -q 'Warning:' "$out.err"; then
    fail "$r: the positive control was not accepted cleanly: $(grep -m1 . "$out.err")"
  else
    ok "$r: $(grep -c . "$out.out") objects accepted (positive control)"
  fi
done

nbad=0
for d in "$FIXTURES"/bad/*/; do
  [ -d "$d" ] || continue
  d="${d%/}"; r="$(rel "$d")"; out="$WORK/$(echo "$r" | tr '/' '_')"
  nbad=$((nbad + 1))
  expect="$(sed -n 's/^# expect: //p' "$(kfile "$d")" | head -1)"
  if dry_run "$d" "$FIXTURE_NS" "$out"; then rc=0; else rc=$?; fi
  if [ "$rc" = 0 ] && ! grep -q 'Warning:' "$out.err"; then
    fail "$r: ACCEPTED, but must be refused ($(grep -c . "$out.out") objects)"
    continue
  fi
  # The first line, shortened: no file name, no Go struct dumps (`policy.PodDisruptionBudgetSpec{...(0x...)}`).
  first="$(grep -m1 . "$out.err" | sed -E -e 's/error when (creating|patching|applying) "[^"]*": //' \
    -e 's/[A-Za-z0-9_.*]+\{[^{}]*\(0x[^{}]*\}/{...}/g' | cut -c1-240)"
  if [ -n "$expect" ] && ! grep -qE -- "$expect" "$out.err"; then
    fail "$r: refused, but not for the expected reason /$expect/: $first"
    continue
  fi
  ok "$r: refused: $first"
done
[ "$nbad" -gt 0 ] || fail "$FIXTURES/bad/: no negative fixture"

if [ "$failures" -gt 0 ]; then
  echo "k8s-validate: $failures check(s) FAILED in $(elapsed) s (control plane: $cp_secs s)"
  exit 1
fi
echo "k8s-validate: all checks passed in $(elapsed) s (control plane: $cp_secs s)"
