#!/usr/bin/env bash
# Local Kubernetes cluster for the dev loop: the kind cluster `loginpipe` from k8s/kind-config.yaml
# (one node, Kubernetes 1.35, node image pinned by digest). Deploy onto it with `skaffold dev`.
#
# Usage: hack/kind.sh up|down|status|check
#
#   up      check the prerequisites, create the cluster if it does not exist, wait for the node,
#           create the `loginpipe` namespace (the Strimzi operator watches it); idempotent
#   down    delete the cluster if it exists (its data goes with it); idempotent
#   status  say whether the cluster exists and answers; exit 0 if it does, 3 if not
#   check   only check the prerequisites (docker running, kind, kubectl, helm, skaffold)
#
# Environment (defaults):
#   KIND_CLUSTER_NAME=loginpipe   cluster name (kubectl context kind-$KIND_CLUSTER_NAME)
#   KIND_WAIT=180s                how long `up` waits for the control plane to be ready
#
# Versions this was written for (the node image needs its kind release; others warn):
#   kind v0.33.0, helm v3 (v3.22.0 in hack/versions.env), skaffold reading skaffold/v4beta14,
#   kubectl within one minor of the cluster (1.35).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="$ROOT/k8s/kind-config.yaml"
CLUSTER="${KIND_CLUSTER_NAME:-loginpipe}"
CONTEXT="kind-$CLUSTER"
KIND_WAIT="${KIND_WAIT:-180s}"
NAMESPACE=loginpipe

KIND_VERSION_EXPECTED=v0.33.0
SKAFFOLD_SCHEMA=skaffold/v4beta14

say() { echo "kind[$CLUSTER]: $*"; }
warn() { echo "kind[$CLUSTER]: WARNING: $*" >&2; }
die() { echo "kind[$CLUSTER]: ERROR: $*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# Install hint per tool, printed when it is missing.
hint() {
  case "$1" in
    docker) echo "install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/" ;;
    kind) echo "go install sigs.k8s.io/kind@$KIND_VERSION_EXPECTED, or a release binary: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    kubectl) echo "https://kubernetes.io/docs/tasks/tools/ (a 1.34-1.36 client)" ;;
    helm) echo "https://helm.sh/docs/intro/install/ (v3), or PATH=\"\$(hack/tools.sh path):\$PATH\" after hack/tools.sh install" ;;
    skaffold) echo "https://skaffold.dev/docs/install/ (v2, reading $SKAFFOLD_SCHEMA)" ;;
  esac
}

# check TOOL...: every listed tool on PATH, and a reachable Docker daemon if docker is listed.
# Reports all problems at once, then fails.
check() {
  local missing=() tool
  for tool in "$@"; do
    have "$tool" || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    for tool in "${missing[@]}"; do
      echo "kind[$CLUSTER]: missing: $tool -> $(hint "$tool")" >&2
    done
    die "prerequisites missing: ${missing[*]}"
  fi
  local t
  for t in "$@"; do
    case "$t" in
      docker)
        if ! docker info >/dev/null 2>&1; then
          die "docker is installed but its daemon is not reachable (is Docker running? does this user have access to the socket?): $(docker info 2>&1 | tail -n 1)"
        fi
        ;;
      kind)
        local v
        v="$(kind version 2>/dev/null | awk '{print $2}')"
        [[ "$v" == "$KIND_VERSION_EXPECTED" ]] \
          || warn "kind $v found; the node image in k8s/kind-config.yaml is built for kind $KIND_VERSION_EXPECTED"
        ;;
      helm)
        local hv
        hv="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
        [[ "$hv" == v3.* ]] || warn "helm ${hv:-of unknown version} found; the dev loop is tested with helm v3"
        ;;
      skaffold)
        local schemas
        schemas="$(skaffold schema list 2>/dev/null || true)"
        grep -qx "$SKAFFOLD_SCHEMA" <<<"$schemas" \
          || warn "this skaffold does not list $SKAFFOLD_SCHEMA (skaffold.yaml's version): upgrade skaffold"
        ;;
    esac
  done
}

exists() {
  local clusters
  clusters="$(kind get clusters 2>/dev/null || true)"
  grep -qx "$CLUSTER" <<<"$clusters"
}

cmd_up() {
  check docker kind kubectl helm skaffold
  [[ -f "$CONFIG" ]] || die "no $CONFIG"
  if exists; then
    say "cluster exists (context $CONTEXT)"
    kind export kubeconfig --name "$CLUSTER" >/dev/null
  else
    say "creating the cluster from ${CONFIG#"$ROOT"/} (first time: pulls the node image, ~1 GB)"
    kind create cluster --name "$CLUSTER" --config "$CONFIG" --wait "$KIND_WAIT"
  fi
  kubectl --context "$CONTEXT" wait --for=condition=Ready node --all --timeout="$KIND_WAIT" >/dev/null
  # Pod Security `restricted` enforced on the release's namespace (the chart's pods, Redis and,
  # with STRIMZI_POD_SECURITY_PROVIDER_CLASS=restricted in skaffold.yaml, Strimzi's all pass it).
  kubectl --context "$CONTEXT" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
EOF
  say "ready: kubectl context $CONTEXT, namespace $NAMESPACE"
  say "next: skaffold dev   (or: skaffold run; profiles: -p keda, -p minimal)"
}

cmd_down() {
  check docker kind
  if exists; then
    kind delete cluster --name "$CLUSTER"
    say "deleted"
  else
    say "no such cluster: nothing to delete"
  fi
}

cmd_status() {
  check docker kind
  if ! exists; then
    say "not created (hack/kind.sh up)"
    exit 3
  fi
  if ! have kubectl; then
    say "exists (kubectl not found: cannot check that it answers)"
    return 0
  fi
  if ! kubectl --context "$CONTEXT" get nodes -o wide; then
    say "exists but does not answer (is its container running? docker ps -a --filter name=$CLUSTER)"
    exit 3
  fi
  if have helm; then
    helm --kube-context "$CONTEXT" list --all-namespaces
  fi
  say "running (context $CONTEXT)"
}

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  check)
    check docker kind kubectl helm skaffold
    say "prerequisites found"
    ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
