#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in this folder; no cluster needed.
#   deploy/k8s/test.sh                      # VENV_BIN defaults to <repo>/.venv/bin
#   VENV_BIN=/path/to/venv/bin deploy/k8s/test.sh
# Needs, in that venv: kubernetes-validate (bundles the Kubernetes JSON schemas) and yamllint.
# The ECS files have their own validator (deploy/ecs/validate.py); it is not run from here.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
VENV_BIN="${VENV_BIN:-$here/../../.venv/bin}"
for tool in kubernetes-validate yamllint python; do
  [[ -x "$VENV_BIN/$tool" ]] || { echo "test.sh: no $VENV_BIN/$tool (pip install kubernetes-validate yamllint)" >&2; exit 2; }
done
cd "$here"
manifests=(*.yaml)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

# kubernetes-validate exits 0 on a kind it has no schema for (a typo'd kind, say) and only
# prints WARN, so a WARN counts as a failure here. --strict rejects unknown fields.
kv() {
  local out rc=0
  out="$("$VENV_BIN/kubernetes-validate" --strict --quiet "$@" 2>&1)" || rc=$?
  [[ -n "$out" ]] && echo "$out"
  [[ $rc -eq 0 ]] && ! grep -q '^WARN' <<<"$out"
}

# 1.29: the first release with native sidecars (initContainers restartPolicy: Always) on by
# default. And the newest release whose schemas this kubernetes-validate bundles.
newest="$("$VENV_BIN/python" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')"
for k in 1.29 "$newest"; do
  if kv -k "$k" "${manifests[@]}"; then ok "kubernetes-validate --strict -k $k"; else bad "kubernetes-validate --strict -k $k"; fi
done

if "$VENV_BIN/yamllint" -s -c .yamllint "${manifests[@]}"; then ok "yamllint -s"; else bad "yamllint -s"; fi
if "$VENV_BIN/python" check_manifests.py "${manifests[@]}"; then ok "check_manifests.py"; else bad "check_manifests.py"; fi

# Negative checks: broken copies must be rejected, or the checks above prove nothing.
# reject NAME CHECKER SED-EXPR FILE: the copy must differ from FILE and CHECKER must fail on it.
reject() {
  local name="$1" checker="$2" expr="$3" file="$4" copy="$tmp/$1.yaml"
  sed "$expr" "$file" >"$copy"
  if cmp -s "$file" "$copy"; then bad "negative '$name': the edit changed nothing"; return; fi
  case "$checker" in
    kv) if kv -k 1.29 "$copy" >/dev/null; then bad "negative '$name' was accepted"; else ok "negative '$name' rejected by kubernetes-validate"; fi ;;
    yamllint) if "$VENV_BIN/yamllint" -s -c .yamllint "$copy" >/dev/null; then bad "negative '$name' was accepted"; else ok "negative '$name' rejected by yamllint"; fi ;;
    check) if "$VENV_BIN/python" check_manifests.py "$copy" >/dev/null; then bad "negative '$name' was accepted"; else ok "negative '$name' rejected by check_manifests.py"; fi ;;
  esac
}
reject typo-field kv 's/readinessProbe:/readinesProbe:/' pod-sidecar.yaml
reject wrong-type kv 's/replicas: 3/replicas: three/' gateway.yaml
reject typo-kind kv 's/^kind: DaemonSet$/kind: DaemonSett/' daemonset.yaml
reject duplicate-key yamllint 's/^\( *\)terminationGracePeriodSeconds: 35/&\n\1terminationGracePeriodSeconds: 35/' gateway.yaml
reject not-a-sidecar check 's/restartPolicy: Always /restartPolicy: Allways /' pod-sidecar.yaml
reject memory-over-limit check 's/value: 96MiB/value: 127MiB/' pod-sidecar.yaml
reject readyz-path check 's/path: \/readyz/path: \/healthz/' gateway.yaml
reject no-udp-hostport check 's/hostPort: 2000, protocol: UDP/protocol: UDP/' daemonset.yaml

echo "k8s test.sh: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
