#!/usr/bin/env bash
# Build what the project's local Kubernetes runs, from the package registries alone:
#
#   hack/local-cluster/build.sh binaries   Kubernetes (apiserver, controller-manager, scheduler,
#                                          kubelet, kube-proxy, kubectl), etcd, CoreDNS, KEDA,
#                                          prometheus-operator, Prometheus and kube-network-policies
#                                          from the Go module proxy
#   hack/local-cluster/build.sh images     the container images: a Debian base standing in for
#                                          python:3.11-slim-bookworm, loginpipe from this
#                                          repository's Dockerfile, Redis, Kafka, CoreDNS, pause
#   hack/local-cluster/build.sh images-early  only the images that need no Go binary (base,
#                                          loginpipe, Redis, Kafka)
#   hack/local-cluster/build.sh all        both (what `make cluster-up` runs)
#   hack/local-cluster/build.sh path       print the folder of the binaries
#
# Everything is cached under ~/.cache/loginpipe/cluster (LOGINPIPE_HOME_CACHE), keyed by the
# versions in hack/versions.env (and, for images, by their inputs), so a second run, or a fresh
# clone on the same machine, rebuilds only what changed: the loginpipe image, when the code did.
# A cold build of the binaries takes about 15 minutes on 2 cores (Go's own caches under $HOME).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../versions.env
. "$ROOT/hack/versions.env"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/hack/local-cluster/lib.sh"

# ---- binaries -----------------------------------------------------------------------------------

# The version stamp every Kubernetes binary carries (without it the server says v0.0.0-master
# and a chart's kubeVersion check fails).
k8s_ldflags() {
  local v="v$LOCAL_K8S_VERSION" major minor flags="" pkg
  major="${LOCAL_K8S_VERSION%%.*}"
  minor="$(cut -d. -f2 <<<"$LOCAL_K8S_VERSION")"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$flags"
}

build_kubernetes() {
  local out="$BIN_DIR/kubernetes-v$LOCAL_K8S_VERSION" work="$BUILD_DIR/kubernetes-v$LOCAL_K8S_VERSION"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  if [[ -f "$out/.built" ]]; then return 0; fi
  say "building Kubernetes v$LOCAL_K8S_VERSION (${cmds[*]}) from the Go module proxy: ~15 min cold ..."
  mkdir -p "$work" "$out"
  local gomod staging_minor="0.${LOCAL_K8S_VERSION#*.}"
  gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$LOCAL_K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || die "go mod download k8s.io/kubernetes@v$LOCAL_K8S_VERSION gave no go.mod"
  {
    echo "module loginpipe.local/kubernetes-build"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$gomod" | head -1
    echo
    echo "require k8s.io/kubernetes v$LOCAL_K8S_VERSION"
    echo
    # k8s.io/kubernetes replaces its staging modules with ./staging/...: point them at the
    # published modules of the same release instead.
    sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*$#replace \1 => \1 v'"$staging_minor"'#p' "$gomod"
  } >"$work/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for c in "${cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$work/tools.go"
  (
    cd "$work"
    GOFLAGS=-mod=mod go mod tidy
    for c in "${cmds[@]}"; do
      say "  go build $c"
      CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out/$c" "k8s.io/kubernetes/cmd/$c"
    done
  )
  "$out/kube-apiserver" --version | grep -qx "Kubernetes v$LOCAL_K8S_VERSION" ||
    die "kube-apiserver reports '$("$out/kube-apiserver" --version)', not v$LOCAL_K8S_VERSION"
  # pause.c, the sandbox's init, from the same module (compiled statically in build_images).
  cp "$(go env GOMODCACHE)/k8s.io/kubernetes@v$LOCAL_K8S_VERSION/build/pause/linux/pause.c" "$out/pause.c"
  chmod u+w "$out/pause.c"
  touch "$out/.built"
}

build_etcd() {
  local out="$BIN_DIR/etcd-v$LOCAL_ETCD_VERSION" work="$BUILD_DIR/etcd-v$LOCAL_ETCD_VERSION" m
  if [[ -f "$out/.built" ]]; then return 0; fi
  say "building etcd v$LOCAL_ETCD_VERSION ..."
  mkdir -p "$work" "$out"
  {
    echo "module loginpipe.local/etcd-build"
    echo
    echo "go 1.24"
    echo
    echo "require go.etcd.io/etcd/server/v3 v$LOCAL_ETCD_VERSION"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m v$LOCAL_ETCD_VERSION"
    done
  } >"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$work/tools.go"
  (
    cd "$work"
    GOFLAGS=-mod=mod go mod tidy
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  )
  "$out/etcd" --version | grep -q "etcd Version: $LOCAL_ETCD_VERSION" || die "etcd reports the wrong version"
  touch "$out/.built"
}

build_coredns() {
  # The module's main package is its root; a patch of ours trims the compiled-in plugins
  # (patches/coredns-v*.patch says which and why).
  build_module_cmds coredns github.com/coredns/coredns "$LOCAL_COREDNS_VERSION" "" .
  "$COREDNS_BIN" -version | grep -q "CoreDNS-$LOCAL_COREDNS_VERSION" || die "coredns reports the wrong version"
}

# Commands of a Go module whose go.mod has replace directives (`go install` refuses those): the
# module's own source from the proxy, built as the main module with its go.sum.
build_module_cmds() { # NAME MODULE VERSION LDFLAGS CMD-DIR...
  local name="$1" module="$2" version="$3" ldflags="$4" out dir work p
  shift 4
  out="$BIN_DIR/$name-v$version"
  # Patches of ours for this module version (hack/local-cluster/patches/<name>-v<version>*.patch,
  # each saying why), applied to the module's copy; a changed patch rebuilds.
  local patches=() stamp=""
  for p in "$ROOT/hack/local-cluster/patches/$name-v$version"*.patch; do
    [[ -f "$p" ]] && patches+=("$p")
  done
  ((${#patches[@]} == 0)) || stamp="$(cat "${patches[@]}" | cksum)"
  # Build tags (GO_BUILD_TAGS in the caller's environment) are part of what was built, too.
  [[ -z "${GO_BUILD_TAGS:-}" ]] || stamp+=" tags=$GO_BUILD_TAGS"
  if [[ -f "$out/.built" && "$(cat "$out/.built")" == "$stamp" ]]; then return 0; fi
  rm -rf "$out"
  local extras=""
  ((${#patches[@]} == 0)) || extras+=", with ${#patches[@]} patch(es) of ours"
  [[ -z "${GO_BUILD_TAGS:-}" ]] || extras+=", tags $GO_BUILD_TAGS"
  say "building $name v$version ($*) from the Go module proxy$extras ..."
  work="$BUILD_DIR/$name-v$version"
  dir="$(cd "$BUILD_DIR" && go mod download -json "$module@v$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || die "go mod download $module@v$version failed"
  rm -rf "$work" && mkdir -p "$work" "$out"
  cp -r "$dir/." "$work/" && chmod -R u+w "$work"
  # A replace that points into a nested module (its own go.mod, so not in this module's zip)
  # becomes a requirement of that module at the same version, as published.
  local mod path
  while read -r mod path; do
    [[ -n "$mod" && ! -d "$work/$path" ]] || continue
    (cd "$work" && go mod edit -dropreplace="$mod" -require="$mod@v$version")
  done < <(cd "$work" && go mod edit -json |
    python3 -c 'import json,sys; [print(r["Old"]["Path"], r["New"]["Path"]) for r in json.load(sys.stdin).get("Replace") or [] if r["New"]["Path"].startswith("./")]')
  for p in "${patches[@]}"; do
    patch -s -p1 -d "$work" <"$p" || die "$(basename "$p") does not apply to $module v$version"
  done
  local pkgs=() c
  for c in "$@"; do pkgs+=("./$c"); done
  (cd "$work" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -tags "${GO_BUILD_TAGS:-}" \
    -ldflags "-s -w $ldflags" -o "$out/" "${pkgs[@]}")
  # (the module's root package is built under the module's last path element, NAME here)
  for c in "$@"; do
    [[ "$c" == "." ]] && c="$name"
    [[ -f "$out/$(basename "$c")" && -x "$out/$(basename "$c")" ]] || die "$name: $c was not built"
  done
  rm -rf "$work"
  echo "$stamp" >"$out/.built"
}

module_dir() { # MODULE VERSION -> the module's folder in Go's module cache
  (cd "$BUILD_DIR" && go mod download -json "$1@v$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
}

build_monitoring_and_autoscaling() {
  local keda_out="$BIN_DIR/keda-v$LOCAL_KEDA_VERSION"
  local po_out="$BIN_DIR/prometheus-operator-v$LOCAL_PROMETHEUS_OPERATOR_VERSION" dir
  build_module_cmds keda github.com/kedacore/keda/v2 "$LOCAL_KEDA_VERSION" \
    "-X github.com/kedacore/keda/v2/version.Version=$LOCAL_KEDA_VERSION -X github.com/kedacore/keda/v2/version.GitCommit=v$LOCAL_KEDA_VERSION" \
    cmd/operator cmd/adapter
  build_module_cmds prometheus-operator github.com/prometheus-operator/prometheus-operator \
    "$LOCAL_PROMETHEUS_OPERATOR_VERSION" \
    "-X github.com/prometheus/common/version.Version=$LOCAL_PROMETHEUS_OPERATOR_VERSION" \
    cmd/operator cmd/prometheus-config-reloader
  # Only the service discoveries prometheus-operator's configs use (Kubernetes; file and HTTP
  # are always in): Prometheus' own build tags leave out the cloud providers' SDKs, most of a
  # cold build's time.
  GO_BUILD_TAGS="remove_all_sd,enable_kubernetes_sd" \
    build_module_cmds prometheus github.com/prometheus/prometheus "$(prometheus_module_version)" \
    "-X github.com/prometheus/common/version.Version=$LOCAL_PROMETHEUS_VERSION" \
    cmd/prometheus
  # Their install manifests, from the same module versions: KEDA's `config/minimal` (CRDs,
  # RBAC, operator, metrics API server; no admission webhooks) rendered by kubectl's kustomize,
  # prometheus-operator's CRDs and its RBAC example.
  if [[ ! -f "$keda_out/keda.yaml" ]]; then
    dir="$(module_dir github.com/kedacore/keda/v2 "$LOCAL_KEDA_VERSION")"
    "$(K8S_BIN kubectl)" kustomize "$dir/config/minimal" >"$keda_out/keda.yaml.tmp"
    mv "$keda_out/keda.yaml.tmp" "$keda_out/keda.yaml"
  fi
  if [[ ! -d "$po_out/manifests" ]]; then
    dir="$(module_dir github.com/prometheus-operator/prometheus-operator "$LOCAL_PROMETHEUS_OPERATOR_VERSION")"
    mkdir -p "$po_out/manifests.tmp/crds" "$po_out/manifests.tmp/operator"
    cp "$dir"/example/prometheus-operator-crd/*.yaml "$po_out/manifests.tmp/crds/"
    cp "$dir"/example/rbac/prometheus-operator/prometheus-operator-{cluster-role,cluster-role-binding,deployment,service-account,service}.yaml \
      "$po_out/manifests.tmp/operator/"
    chmod -R u+w "$po_out/manifests.tmp"
    mv "$po_out/manifests.tmp" "$po_out/manifests"
  fi
}

# The NetworkPolicy agent (its one command is ./cmd, built as `cmd`), patched to leave the
# packet capture to the node's iptables rules (patches/kube-network-policies-v*.patch says why).
build_network_policies() {
  build_module_cmds kube-network-policies sigs.k8s.io/kube-network-policies \
    "$LOCAL_KUBE_NETWORK_POLICIES_VERSION" "" cmd
}

cmd_binaries() {
  command -v go >/dev/null 2>&1 || die "Go is needed to build the cluster's binaries (go >= 1.24)"
  command -v patch >/dev/null 2>&1 || ensure_packages patch
  mkdir -p "$BIN_DIR" "$BUILD_DIR"
  build_kubernetes
  build_etcd
  build_coredns
  build_monitoring_and_autoscaling
  build_network_policies
  say "binaries ready under $BIN_DIR"
}

# ---- images -------------------------------------------------------------------------------------

# shellcheck source-path=SCRIPTDIR source=images.sh
. "$ROOT/hack/local-cluster/images.sh"

case "${1:-}" in
  binaries) cmd_binaries ;;
  images) cmd_images ;;
  images-early) cmd_images_early ;;
  all)
    # (not `cmd_binaries && cmd_images`: set -e does not apply left of &&)
    cmd_binaries
    cmd_images
    ;;
  path) echo "$BIN_DIR" ;;
  *)
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
