# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# Shared by hack/local-cluster/*.sh: where things live, and small helpers.

# Long-lived builds (binaries, images) outside the checkout, keyed by version.
HOME_CACHE="${LOGINPIPE_HOME_CACHE:-$HOME/.cache/loginpipe}"
CLUSTER_CACHE="$HOME_CACHE/cluster"
BIN_DIR="$CLUSTER_CACHE/bin"
BUILD_DIR="$CLUSTER_CACHE/build"
IMAGE_DIR="$CLUSTER_CACHE/images"

# The running cluster's state (certificates, etcd data, logs, pids) lives in the checkout,
# ignored by git; `make cluster-down` removes it.
STATE_DIR="${LOCAL_CLUSTER_STATE:-$ROOT/.cache/local-cluster}"
KUBECONFIG_FILE="$STATE_DIR/kubeconfig"

# The network namespace the whole cluster runs in, and the veth pair that joins it to the host:
# the host reaches the API server (and through it the pods) at NODE_IP, and nothing inside the
# namespace has a route anywhere else.
NETNS="loginpipe-k8s"
HOST_IF="lpk8s-host"
NODE_IF="lpk8s-node"
HOST_IP="10.213.0.1"
NODE_IP="10.213.0.2"
NODE_NAME="loginpipe-node"
POD_CIDR="10.244.0.0/24"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SERVICE_IP="10.96.0.1"
DNS_SERVICE_IP="10.96.0.10"
CLUSTER_DOMAIN="cluster.local"

K8S_BIN() { echo "$BIN_DIR/kubernetes-v$LOCAL_K8S_VERSION/$1"; }
# Prometheus 3.M.P is the Go module github.com/prometheus/prometheus v0.3MM.P.
prometheus_module_version() {
  local minor patch
  minor="$(cut -d. -f2 <<<"$LOCAL_PROMETHEUS_VERSION")"
  patch="$(cut -d. -f3 <<<"$LOCAL_PROMETHEUS_VERSION")"
  printf '0.3%02d.%d' "$minor" "$patch"
}
ETCD_BIN="$BIN_DIR/etcd-v$LOCAL_ETCD_VERSION/etcd"
COREDNS_BIN="$BIN_DIR/coredns-v$LOCAL_COREDNS_VERSION/coredns"

say() { echo "local-cluster: $*"; }
die() {
  echo "local-cluster: ERROR: $*" >&2
  exit 1
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "the local cluster needs root (network namespace, mounts, containerd): run as root or with sudo"
}

# Debian packages the cluster needs, installed once (their services are never started).
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing Debian packages ${missing[*]} and no apt-get"
  say "installing ${missing[*]} with apt-get ..."
  # shellcheck source-path=SCRIPTDIR source=../lib/apt.sh
  . "$ROOT/hack/lib/apt.sh"
  local policy=/usr/sbin/policy-rc.d own=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own=1
  fi
  _apt_get_install "${missing[@]}" || { apt-get update -qq && _apt_get_install "${missing[@]}"; }
  [[ $own -eq 1 ]] && rm -f "$policy"
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now containerd >/dev/null 2>&1 || true
  fi
  return 0
}

# Wait until COMMAND succeeds, at most SECONDS; WHAT names it in the error.
wait_until() { # SECONDS WHAT COMMAND...
  local seconds="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what"
    sleep 0.5
  done
}
