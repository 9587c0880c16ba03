#!/usr/bin/env bash
# The project's own single-node Kubernetes, run inside a network namespace it creates.
#
# Usage: hack/local-cluster/cluster.sh up|down|status|kubeconfig|logs NAME
#
#   up          build what is missing (build.sh all), then start etcd, the API server,
#               controller-manager, scheduler, containerd, kubelet and kube-proxy inside the
#               network namespace `loginpipe-k8s`; import the images; install cluster DNS
#               (CoreDNS), NetworkPolicy enforcement (kube-network-policies), a default
#               StorageClass with pre-made volumes, the vendored CRDs
#               (Strimzi, prometheus-operator, KEDA), a single-node Kafka in namespace `kafka`,
#               KEDA (namespace `keda`) and prometheus-operator with a Prometheus (namespace
#               `monitoring`); wait until everything is Ready. Idempotent.
#   down        stop every process it started (by pid), remove the pods' containers, mounts,
#               namespaces and cgroups, restore the sysctls the kubelet changed, delete the
#               namespace (and with it the bridge, the veth pair and the iptables rules) and
#               the state folder. Safe to run twice.
#   status      exit 0 if the API server answers, 3 if not
#   kubeconfig  print the path of the admin kubeconfig (KUBECONFIG=$(... kubeconfig) kubectl ...)
#   logs NAME   print a component's log (etcd, kube-apiserver, kubelet, containerd, ...)
#
# The host reaches the cluster only through a veth pair: the API server listens on
# 10.213.0.2:6443 inside the namespace, the host side is 10.213.0.1. The namespace has no other
# route, so nothing in the cluster can reach any other address. Needs root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../versions.env
. "$ROOT/hack/versions.env"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/hack/local-cluster/lib.sh"

PKI="$STATE_DIR/pki"
RUN="$STATE_DIR/run"
LOGS="$STATE_DIR/logs"
CTRD="$STATE_DIR/containerd"
# Images stay in containerd's store between clusters (keyed by digest): a new cluster only
# imports what changed.
CTRD_ROOT="$CLUSTER_CACHE/containerd-root"
CTRD_SOCK="$CTRD/containerd.sock"
KUBELET_ROOT="$STATE_DIR/kubelet"
SAVED="$STATE_DIR/saved"
GLOBAL_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_DIRS=(/var/log/pods /var/log/containers /run/netns /var/lib/cni /etc/cni /opt/cni)

# nsenter joins only the network namespace: kubelet, containerd and the pods must share the
# host's mount namespace (`ip netns exec` would give each its own, hiding volume mounts).
in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }

# Write stdin to FILE only if it differs: a running kube-proxy (and kubelet) restarts or exits
# when its config file changes, so a second `up` must leave identical files alone.
write_if_changed() { # FILE
  local tmp="$1.new"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
kctl() { "$(K8S_BIN kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---- certificates -------------------------------------------------------------------------------

cert() { # NAME CN O SANS(comma list or "") CA(default ca)
  local name="$1" cn="$2" org="$3" sans="$4" ca="${5:-ca}" ext="$PKI/$1.ext"
  [[ -f "$PKI/$name.crt" ]] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  local subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

ca() { # NAME CN
  [[ -f "$PKI/$1.crt" ]] && return 0
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -x509 -new -nodes -key "$PKI/$1.key" -subj "/CN=$2" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  ca ca loginpipe-local-ca
  ca front-proxy-ca loginpipe-local-front-proxy-ca
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  cert admin kubernetes-admin system:masters ""
  cert controller-manager system:kube-controller-manager "" ""
  cert scheduler system:kube-scheduler "" ""
  cert kube-proxy system:kube-proxy "" ""
  cert kubelet-client "system:node:$NODE_NAME" system:nodes ""
  cert kubelet "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
  cert front-proxy-client front-proxy-client "" "" front-proxy-ca
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

kubeconfig() { # FILE CERT-NAME USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: loginpipe-local
    cluster:
      server: https://$NODE_IP:6443
      certificate-authority: $PKI/ca.crt
users:
  - name: $3
    user:
      client-certificate: $PKI/$2.crt
      client-key: $PKI/$2.key
contexts:
  - name: loginpipe-local
    context: {cluster: loginpipe-local, user: $3}
current-context: loginpipe-local
EOF
  chmod 600 "$1"
}

# ---- processes ----------------------------------------------------------------------------------

pid_of() { # NAME -> pid if running
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() { # NAME COMMAND... (inside the namespace, in the background, logged)
  local name="$1"
  shift
  if pid_of "$name" >/dev/null; then return 0; fi
  mkdir -p "$RUN" "$LOGS"
  nsenter --net="/run/netns/$NETNS" setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop() { # NAME
  local pid
  pid="$(pid_of "$1")" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
}

alive() { # NAME: fail with its log's tail if it died
  pid_of "$1" >/dev/null && return 0
  echo "---- last 30 lines of $LOGS/$1.log ----" >&2
  tail -n 30 "$LOGS/$1.log" >&2 || true
  die "$1 exited"
}

wait_http() { # NAME URL SECONDS [curl args...]
  local name="$1" url="$2" seconds="$3" deadline
  shift 3
  deadline=$((SECONDS + seconds))
  until in_ns curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; do
    alive "$name"
    ((SECONDS < deadline)) || die "$name did not answer $url within ${seconds}s (log: $LOGS/$name.log)"
    sleep 0.5
  done
}

# ---- network ------------------------------------------------------------------------------------

net_up() {
  if ! ip netns list 2>/dev/null | grep -qw "$NETNS"; then
    ip netns add "$NETNS"
  fi
  in_ns ip link set lo up
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NODE_IF"
    ip link set "$NODE_IF" netns "$NETNS"
    ip addr add "$HOST_IP/24" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    in_ns ip addr add "$NODE_IP/24" dev "$NODE_IF"
    in_ns ip link set "$NODE_IF" up
  fi
  # Inside the namespace only: forwarding between the pods' bridge and the node address, and
  # bridged traffic through iptables (Service DNAT between pods on the same bridge).
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    say "WARNING: net.bridge.bridge-nf-call-iptables is not settable here; Services between pods on the node may not answer"
}

save_host_state() {
  [[ -f "$SAVED/sysctl" ]] && return 0
  mkdir -p "$SAVED"
  local s d
  for s in "${GLOBAL_SYSCTLS[@]}"; do
    echo "$s=$(sysctl -n "$s" 2>/dev/null || echo '')" >>"$SAVED/sysctl"
  done
  for d in "${HOST_DIRS[@]}"; do
    [[ -e "$d" ]] || echo "$d" >>"$SAVED/created-dirs"
  done
  ip netns list 2>/dev/null | awk '{print $1}' >"$SAVED/netns-before"
  touch "$SAVED/created-dirs"
}

# ---- components ---------------------------------------------------------------------------------

start_etcd() {
  mkdir -p "$STATE_DIR/etcd"
  chmod 700 "$STATE_DIR/etcd"
  start etcd "$ETCD_BIN" --name loginpipe --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster loginpipe=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_http etcd http://127.0.0.1:2381/health 60
}

start_apiserver() {
  start kube-apiserver "$(K8S_BIN kube-apiserver)" \
    --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port 6443 \
    --etcd-servers http://127.0.0.1:2379 \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --requestheader-group-headers X-Remote-Group --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --profiling=false --v=1
  wait_http kube-apiserver "https://127.0.0.1:6443/readyz" 90 --cacert "$PKI/ca.crt" \
    --cert "$PKI/admin.crt" --key "$PKI/admin.key"
}

start_controllers() {
  start kube-controller-manager "$(K8S_BIN kube-controller-manager)" \
    --kubeconfig "$STATE_DIR/controller-manager.conf" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.conf" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.conf" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --controllers '*,bootstrapsigner,tokencleaner' \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --v=1
  start kube-scheduler "$(K8S_BIN kube-scheduler)" \
    --kubeconfig "$STATE_DIR/scheduler.conf" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.conf" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.conf" \
    --bind-address 127.0.0.1 --leader-elect=false --v=1
  wait_http kube-controller-manager https://127.0.0.1:10257/healthz 60 -k
  wait_http kube-scheduler https://127.0.0.1:10259/healthz 60 -k
}

snapshotter() {
  local probe="$STATE_DIR/overlay-probe"
  mkdir -p "$probe"/{l,u,w,m}
  if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
    umount "$probe/m"
    rm -rf "$probe"
    echo overlayfs
  else
    rm -rf "$probe"
    echo native
  fi
}

start_containerd() {
  mkdir -p "$CTRD" "$CTRD_ROOT" "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/ipam"
  write_if_changed "$STATE_DIR/cni/net.d/10-loginpipe.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "loginpipe",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  write_if_changed "$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD_ROOT"
state = "$CTRD/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This VM lacks CAP_SYS_RESOURCE: runc cannot lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$(snapshotter)"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
EOF
  start containerd containerd --config "$CTRD/config.toml"
  wait_until 60 "containerd's socket" test -S "$CTRD_SOCK"
  wait_until 60 "containerd to answer" ctr --address "$CTRD_SOCK" version
}

import_images() {
  local f name key have
  for f in "$IMAGE_DIR"/*.tar; do
    name="$(basename "$f" .tar)"
    [[ "$name" == base ]] && continue # only a build stage's base; no pod runs it
    key="$(cat "$IMAGE_DIR/$name.key")"
    have="$(cat "$CTRD_ROOT/imported-$name.key" 2>/dev/null || true)"
    if [[ "$have" == "$key" ]]; then continue; fi
    say "importing image $name into containerd ..."
    ctr --address "$CTRD_SOCK" -n k8s.io images import --no-unpack "$f" >/dev/null
    echo "$key" >"$CTRD_ROOT/imported-$name.key"
  done
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT"
  # The host's / is a private mount: give the kubelet's root its own shared bind mount, as
  # the kubelet wants for mount propagation (removed again by `down`).
  if ! findmnt -rn -o TARGET "$KUBELET_ROOT" >/dev/null; then
    mount --bind "$KUBELET_ROOT" "$KUBELET_ROOT"
    mount --make-rshared "$KUBELET_ROOT"
  fi
  echo "nameserver 127.0.0.1" >"$STATE_DIR/resolv.conf"
  write_if_changed "$STATE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# The host is on cgroup v1, which Kubernetes 1.35 still runs on when told to.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE_DIR/resolv.conf
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
readOnlyPort: 0
serializeImagePulls: false
# A shared development machine: evict only when really out of room.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
EOF
  start kubelet "$(K8S_BIN kubelet)" --config "$STATE_DIR/kubelet.yaml" \
    --kubeconfig "$STATE_DIR/kubelet.conf" --root-dir "$KUBELET_ROOT" \
    --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
  wait_until 120 "node $NODE_NAME to register" kctl get node "$NODE_NAME"
}

start_kube_proxy() {
  write_if_changed "$STATE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.conf}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's (not per-namespace) conntrack table settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$(K8S_BIN kube-proxy)" --config "$STATE_DIR/kube-proxy.yaml" --v=1
  wait_http kube-proxy http://127.0.0.1:10256/healthz 60
}

# The packet capture of kube-network-policies (network-policies.yaml), as iptables rules: upstream
# programs them with nftables' `queue` expression, which this kernel lacks (see
# patches/kube-network-policies-v*.patch). Same place and order as upstream's chain: after DNAT
# and before SNAT, the node's root user (the kubelet's probes) and established connections pass,
# the first packet of any other connection to or from the pod network goes to queue 100, where
# the agent accepts or drops it by the NetworkPolicies. --queue-bypass: while no agent listens,
# packets pass, as upstream's rules exist only while the agent runs. One addition: upstream
# judges only what leaves through POSTROUTING, so a pod's connection to an address of its own
# node (the API server here, and on a one-node kind) is never judged; here new connections from
# pods to the node go through the queue too (INPUT), so a pod's egress policy covers them.
network_policy_rules() {
  local hook chain rule
  for hook in POSTROUTING INPUT; do
    chain="LOGINPIPE-NETPOL-$hook"
    in_ns iptables -t mangle -N "$chain" 2>/dev/null || true
    in_ns iptables -t mangle -C "$hook" -j "$chain" 2>/dev/null ||
      in_ns iptables -t mangle -A "$hook" -j "$chain"
    while read -r -a rule; do
      [[ ${#rule[@]} -gt 0 ]] || continue
      in_ns iptables -t mangle -C "$chain" "${rule[@]}" 2>/dev/null ||
        in_ns iptables -t mangle -A "$chain" "${rule[@]}"
    done < <(
      # (the owner match exists only for locally made packets: POSTROUTING, not INPUT)
      [[ "$hook" == POSTROUTING ]] && echo "-m owner --uid-owner 0 -j RETURN"
      echo "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
      echo "-s $POD_CIDR -j NFQUEUE --queue-num 100 --queue-bypass"
      [[ "$hook" == POSTROUTING ]] && echo "-d $POD_CIDR -j NFQUEUE --queue-num 100 --queue-bypass"
      true
    )
  done
}

addons() {
  say "installing cluster DNS, storage, CRDs and Kafka ..."
  local pv
  for pv in $(seq 0 7); do
    mkdir -p "$STATE_DIR/volumes/pv-$pv"
    chmod 1777 "$STATE_DIR/volumes/pv-$pv"
  done
  sed "s#@VOLUMES@#$STATE_DIR/volumes#g; s#@DNS_IP@#$DNS_SERVICE_IP#g; s#@COREDNS_IMAGE@#localhost/loginpipe-coredns:$LOCAL_COREDNS_VERSION#g; s#@KAFKA_IMAGE@#localhost/loginpipe-kafka:$KAFKA_VERSION#g; s#@NODE@#$NODE_NAME#g" \
    "$ROOT/hack/local-cluster/addons.yaml" | kctl apply --server-side --force-conflicts -f - >/dev/null
  sed -e "s#@NETPOL_IMAGE@#localhost/loginpipe-kube-network-policies:$LOCAL_KUBE_NETWORK_POLICIES_VERSION#g" -e "s#@NODE_IP@#$NODE_IP#g" \
    "$ROOT/hack/local-cluster/network-policies.yaml" | kctl apply --server-side --force-conflicts -f - >/dev/null
  local crd
  for crd in "$ROOT"/k8s/vendor/crds/*/*.yaml; do
    kctl apply --server-side --force-conflicts -f "$crd" >/dev/null
  done
  addons_autoscaling_and_monitoring
  wait_until 120 "the node to be Ready" kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  kctl -n kube-system rollout status deploy/coredns --timeout=180s >/dev/null ||
    die "CoreDNS did not become ready: kubectl -n kube-system describe pods"
  kctl -n kube-system rollout status daemonset/kube-network-policies --timeout=120s >/dev/null ||
    die "kube-network-policies did not become ready: kubectl -n kube-system logs ds/kube-network-policies"
  kctl -n kafka rollout status statefulset/kafka --timeout=300s >/dev/null ||
    die "Kafka did not become ready: kubectl -n kafka logs kafka-0"
  local d
  for d in keda/keda-operator keda/keda-metrics-apiserver monitoring/prometheus-operator; do
    kctl -n "${d%%/*}" rollout status "deploy/${d#*/}" --timeout=180s >/dev/null ||
      die "${d#*/} did not become ready: kubectl -n ${d%%/*} logs deploy/${d#*/}"
  done
  wait_until 180 "KEDA's external metrics API (APIService v1beta1.external.metrics.k8s.io) to be Available" \
    kctl wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=5s
  wait_until 180 "Prometheus (monitoring/prometheus-kube-prometheus-stack-prometheus-0) to be Ready" \
    kctl -n monitoring wait --for=condition=Ready pod/prometheus-kube-prometheus-stack-prometheus-0 --timeout=5s
}

# KEDA (operator and external metrics API server) and prometheus-operator with a Prometheus,
# from the manifests of their Go modules (build.sh), with the images built here.
addons_autoscaling_and_monitoring() {
  local keda="$BIN_DIR/keda-v$LOCAL_KEDA_VERSION" po="$BIN_DIR/prometheus-operator-v$LOCAL_PROMETHEUS_OPERATOR_VERSION"
  sed -e "s#image: ghcr.io/kedacore/keda:.*#image: localhost/loginpipe-keda:$LOCAL_KEDA_VERSION#" \
    -e "s#image: ghcr.io/kedacore/keda-metrics-apiserver:.*#image: localhost/loginpipe-keda-metrics-apiserver:$LOCAL_KEDA_VERSION#" \
    -e "s#imagePullPolicy: Always#imagePullPolicy: Never#" "$keda/keda.yaml" |
    kctl apply --server-side --force-conflicts -f - >/dev/null
  kctl create namespace monitoring --dry-run=client -o yaml | kctl apply -f - >/dev/null
  local f
  for f in "$po"/manifests/crds/*.yaml; do
    kctl apply --server-side --force-conflicts -f "$f" >/dev/null
  done
  for f in "$po"/manifests/operator/*.yaml; do printf -- '---\n' && cat "$f"; done |
    sed -e "s#namespace: default#namespace: monitoring#" \
      -e "s#image: quay.io/prometheus-operator/prometheus-operator:.*#image: localhost/loginpipe-prometheus-operator:$LOCAL_PROMETHEUS_OPERATOR_VERSION\n        imagePullPolicy: Never#" \
      -e "s#--prometheus-config-reloader=.*#--prometheus-config-reloader=localhost/loginpipe-prometheus-config-reloader:$LOCAL_PROMETHEUS_OPERATOR_VERSION#" |
    kctl apply --server-side --force-conflicts -f - >/dev/null
  wait_until 120 "the Prometheus CRD" kctl wait --for=condition=Established crd/prometheuses.monitoring.coreos.com --timeout=5s
  sed -e "s#@PROMETHEUS_IMAGE@#localhost/loginpipe-prometheus:$LOCAL_PROMETHEUS_VERSION#" \
    -e "s#@PROMETHEUS_VERSION@#$LOCAL_PROMETHEUS_VERSION#" "$ROOT/hack/local-cluster/monitoring.yaml" |
    kctl apply --server-side --force-conflicts -f - >/dev/null
}

cmd_up() {
  need_root
  ensure_packages containerd runc containernetworking-plugins iptables conntrack iproute2 openssl curl patch
  "$ROOT/hack/local-cluster/build.sh" all
  [[ -x "$(K8S_BIN kube-apiserver)" && -x "$ETCD_BIN" ]] || die "binaries missing after the build"
  local started=$SECONDS
  if ip netns list 2>/dev/null | grep -qw "$NETNS" && ! pid_of etcd >/dev/null; then
    die "network namespace $NETNS exists but no cluster of this checkout runs in it: another checkout's local cluster is up (run its \`make cluster-down\`), or a crashed one left it (ip netns delete $NETNS)"
  fi
  mkdir -p "$STATE_DIR" "$RUN" "$LOGS"
  save_host_state
  net_up
  make_pki
  kubeconfig "$KUBECONFIG_FILE" admin kubernetes-admin
  kubeconfig "$STATE_DIR/controller-manager.conf" controller-manager system:kube-controller-manager
  kubeconfig "$STATE_DIR/scheduler.conf" scheduler system:kube-scheduler
  kubeconfig "$STATE_DIR/kubelet.conf" kubelet-client "system:node:$NODE_NAME"
  kubeconfig "$STATE_DIR/kube-proxy.conf" kube-proxy system:kube-proxy
  start_etcd
  start_apiserver
  start_controllers
  start_containerd
  import_images
  start_kubelet
  start_kube_proxy
  network_policy_rules
  addons
  say "up in $((SECONDS - started))s: KUBECONFIG=$KUBECONFIG_FILE (API server https://$NODE_IP:6443, Kubernetes v$LOCAL_K8S_VERSION)"
}

# ---- down ---------------------------------------------------------------------------------------

cmd_down() {
  need_root
  [[ -d "$STATE_DIR" ]] || {
    say "no local cluster state in $STATE_DIR: nothing to stop"
    if ip netns list 2>/dev/null | grep -qw "$NETNS"; then ip netns delete "$NETNS"; fi
    return 0
  }
  say "stopping ..."
  local name pid
  for name in kube-proxy kubelet; do stop "$name"; done
  # The pods' processes: every shim of our containerd and what runs under it.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  done
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
  # Mounts the kubelet and containerd made (volumes, rootfs, shm), deepest first.
  local mnt
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | grep -E "^($STATE_DIR|$CTRD_ROOT|/run/netns/cni-)" | sort -r)
  # Network namespaces of pods (created by the CNI plugins), then ours with everything in it.
  if [[ -f "$SAVED/netns-before" ]]; then
    for name in $(ip netns list 2>/dev/null | awk '{print $1}'); do
      if [[ "$name" == cni-* ]] && ! grep -qx "$name" "$SAVED/netns-before"; then
        ip netns delete "$name" 2>/dev/null || true
      fi
    done
  fi
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then ip netns delete "$NETNS"; fi
  if ip link show "$HOST_IF" >/dev/null 2>&1; then ip link delete "$HOST_IF"; fi
  # The pods' cgroups.
  find /sys/fs/cgroup/*/kubepods* -depth -type d -exec rmdir {} \; 2>/dev/null || true
  # Host state the kubelet changed.
  if [[ -f "$SAVED/sysctl" ]]; then
    local line
    while read -r line; do
      if [[ -n "${line#*=}" ]]; then sysctl -qw "$line" 2>/dev/null || true; fi
    done <"$SAVED/sysctl"
  fi
  if [[ -f "$SAVED/created-dirs" ]]; then
    while read -r mnt; do
      [[ -n "$mnt" && -e "$mnt" ]] || continue
      # /run/netns is a mount point of its own once `ip netns` has used it.
      if mountpoint -q "$mnt"; then umount -l "$mnt" 2>/dev/null || true; fi
      rm -rf "$mnt" 2>/dev/null || say "WARNING: could not remove $mnt"
    done <"$SAVED/created-dirs"
  fi
  rm -rf /var/log/pods/*_"$NODE_NAME"* 2>/dev/null || true
  rm -rf "$STATE_DIR"
  say "down: processes stopped, namespace $NETNS and $STATE_DIR removed, host sysctls restored"
}

cmd_status() {
  [[ -f "$KUBECONFIG_FILE" ]] && kctl get --raw /readyz >/dev/null 2>&1 && {
    say "running: KUBECONFIG=$KUBECONFIG_FILE"
    return 0
  }
  say "not running"
  return 3
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  logs) cat "$LOGS/${2:?name}.log" ;;
  *)
    sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
