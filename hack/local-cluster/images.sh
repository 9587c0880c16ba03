# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# The container images of the local cluster, made here with Debian's buildah and debootstrap
# (sourced by build.sh; needs root). No registry is reachable, so every image is built locally,
# written to an archive under ~/.cache/loginpipe/cluster/images and imported into the cluster's
# containerd by cluster.sh:
#
#   localhost/loginpipe-base-python:3.11-bookworm   stand-in for python:3.11-slim-bookworm:
#       debootstrap minbase + Debian's python3 (3.11), pip/setuptools/wheel under /usr/local and
#       /usr/local/bin/python* links as in the official image, no EXTERNALLY-MANAGED marker
#   localhost/loginpipe:<content hash>               this repository's Dockerfile, built for real
#       (every RUN step runs) with PYTHON_IMAGE set to the base above; pip installs the locked
#       wheels from a wheelhouse downloaded on the host (the build itself is offline)
#   localhost/loginpipe-redis:7-bookworm             Debian's redis-server (7.0) on debootstrap
#   localhost/loginpipe-kafka:<kafka version>        a Debian JRE + the Kafka jars of hack/kafka.sh
#   localhost/loginpipe-coredns:<version>            the CoreDNS binary built by build.sh
#   registry.k8s.io/pause:3.10                       pause.c from the Kubernetes module, static
#   localhost/loginpipe-keda, -keda-metrics-apiserver, -prometheus-operator,
#   -prometheus-config-reloader, -prometheus          the binaries build.sh built from their Go
#       modules (KEDA, prometheus-operator, Prometheus), each alone in its image
#   localhost/loginpipe-kube-network-policies:<v>    the NetworkPolicy agent (root, privileged)

DEBIAN_MIRROR="${LOCAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BUILDAH_ROOT="$CLUSTER_CACHE/buildah/root"
BUILDAH_RUNROOT="$CLUSTER_CACHE/buildah/runroot"
BASE_IMAGE="localhost/loginpipe-base-python:3.11-$LOCAL_DEBIAN_SUITE"
REDIS_IMAGE="localhost/loginpipe-redis:7-$LOCAL_DEBIAN_SUITE"
KAFKA_IMAGE="localhost/loginpipe-kafka:$KAFKA_VERSION"
COREDNS_IMAGE="localhost/loginpipe-coredns:$LOCAL_COREDNS_VERSION"
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
KEDA_IMAGE="localhost/loginpipe-keda:$LOCAL_KEDA_VERSION"
KEDA_METRICS_IMAGE="localhost/loginpipe-keda-metrics-apiserver:$LOCAL_KEDA_VERSION"
PROMETHEUS_IMAGE="localhost/loginpipe-prometheus:$LOCAL_PROMETHEUS_VERSION"
NETPOL_IMAGE="localhost/loginpipe-kube-network-policies:$LOCAL_KUBE_NETWORK_POLICIES_VERSION"

bah() {
  buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver "$(storage_driver)" "$@"
}

# overlay where the kernel allows it (fast, shares layers), else vfs (copies every layer).
storage_driver() {
  if [[ -z "${_STORAGE_DRIVER:-}" ]]; then
    _STORAGE_DRIVER=vfs
    local probe="$CLUSTER_CACHE/buildah/overlay-probe"
    mkdir -p "$probe"/{l,u,w,m}
    if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
      umount "$probe/m"
      _STORAGE_DRIVER=overlay
    fi
    rm -rf "$probe"
  fi
  echo "$_STORAGE_DRIVER"
}

# What a builder function does, as part of its image's key: a changed recipe rebuilds.
recipe() { declare -f "$1" | cksum | cut -d' ' -f1; }

# An image archive is up to date when its key file holds the same key.
archive_fresh() { # NAME KEY
  [[ -f "$IMAGE_DIR/$1.tar" && -f "$IMAGE_DIR/$1.key" && "$(cat "$IMAGE_DIR/$1.key")" == "$2" ]]
}

save_archive() { # NAME IMAGE KEY
  rm -f "$IMAGE_DIR/$1.tar"
  bah push --quiet "$2" "docker-archive:$IMAGE_DIR/$1.tar:$2" >/dev/null
  echo "$3" >"$IMAGE_DIR/$1.key"
  say "  image $2 -> $IMAGE_DIR/$1.tar ($(du -h "$IMAGE_DIR/$1.tar" | cut -f1))"
}

# A Debian root filesystem with PACKAGES, cached per (suite, packages).
debian_rootfs() { # NAME PACKAGES(comma-separated)
  local dir="$CLUSTER_CACHE/rootfs/$1" key="$LOCAL_DEBIAN_SUITE $2"
  if [[ -f "$dir.key" && "$(cat "$dir.key")" == "$key" ]]; then
    echo "$dir"
    return 0
  fi
  rm -rf "$dir" "$dir.key"
  mkdir -p "$(dirname "$dir")"
  say "  debootstrap $LOCAL_DEBIAN_SUITE minbase + $2 (about a minute) ..." >&2
  debootstrap --variant=minbase --include="$2" "$LOCAL_DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1 ||
    die "debootstrap failed: see $dir.log"
  # Image hygiene: no package lists, caches or docs.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/* "$dir"/var/log/*
  echo "$key" >"$dir.key"
  echo "$dir"
}

# An image from a root filesystem: CONFIG is a list of `buildah config` arguments.
image_from_rootfs() { # IMAGE ROOTFS CONFIG...
  local image="$1" rootfs="$2" ctr mnt
  shift 2
  ctr="$(bah from --quiet scratch)"
  mnt="$(bah mount "$ctr")"
  cp -a "$rootfs"/. "$mnt"/
  bah umount "$ctr" >/dev/null
  bah config "$@" "$ctr"
  bah commit --quiet --rm "$ctr" "$image" >/dev/null
}

host_wheels() { # DIR REQUIREMENT-ARGS...: wheels for the image's Python, downloaded by the host
  local dir="$1"
  shift
  mkdir -p "$dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$dir" "$@"
}

build_base_image() {
  local key
  key="base $(recipe build_base_image) $LOCAL_DEBIAN_SUITE pip=$LOCAL_BASE_PIP_VERSION setuptools=$LOCAL_BASE_SETUPTOOLS_VERSION wheel=$LOCAL_BASE_WHEEL_VERSION"
  if archive_fresh base "$key" && bah inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  say "image $BASE_IMAGE (Debian python3 + pip under /usr/local, like python:3.11-slim) ..."
  local rootfs work="$CLUSTER_CACHE/rootfs/base-work"
  rootfs="$(debian_rootfs python3 python3,python3-venv,ca-certificates,netbase,tzdata)"
  rm -rf "$work" && cp -a "$rootfs" "$work"
  host_wheels "$work/tmp/wheels" "pip==$LOCAL_BASE_PIP_VERSION" \
    "setuptools==$LOCAL_BASE_SETUPTOOLS_VERSION" "wheel==$LOCAL_BASE_WHEEL_VERSION"
  rm -f "$work"/usr/lib/python3.*/EXTERNALLY-MANAGED
  # A clean environment: the host's PIP_* settings (find-links, cert) mean nothing in the image.
  env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    "$(command -v chroot)" "$work" /usr/bin/python3 "/tmp/wheels/pip-$LOCAL_BASE_PIP_VERSION-py3-none-any.whl/pip" \
    install --quiet --no-index --find-links /tmp/wheels --no-cache-dir --root-user-action=ignore \
    "pip==$LOCAL_BASE_PIP_VERSION" "setuptools==$LOCAL_BASE_SETUPTOOLS_VERSION" "wheel==$LOCAL_BASE_WHEEL_VERSION"
  rm -rf "$work/tmp/wheels"
  local v
  for v in python python3 python3.11; do ln -sfn /usr/bin/python3.11 "$work/usr/local/bin/$v"; done
  env -i PATH=/usr/local/bin:/usr/bin:/bin "$(command -v chroot)" "$work" /usr/local/bin/python -m pip --version >/dev/null ||
    die "pip does not run in the base image"
  image_from_rootfs "$BASE_IMAGE" "$work" \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label "org.opencontainers.image.description=loginpipe local stand-in for python:3.11-slim-$LOCAL_DEBIAN_SUITE"
  rm -rf "$work"
  save_archive base "$BASE_IMAGE" "$key"
}

# The loginpipe image's content key: everything the Dockerfile copies, plus the base.
app_image_key() {
  (
    cd "$ROOT" || exit 1
    cat "$IMAGE_DIR/base.key"
    git ls-files -s Dockerfile .dockerignore requirements.lock pyproject.toml README.md services 2>/dev/null ||
      true
    # Uncommitted edits count too.
    cat Dockerfile .dockerignore requirements.lock pyproject.toml README.md
    find services -type f -name '*.py' -print0 | sort -z | xargs -0 cat
  ) | sha256sum | cut -c1-16
}

app_image() { echo "localhost/loginpipe:$(app_image_key)"; }

build_app_image() {
  local key image wheels pipconf
  key="$(app_image_key)"
  image="localhost/loginpipe:$key"
  if archive_fresh loginpipe "$key"; then return 0; fi
  say "image $image from ./Dockerfile (PYTHON_IMAGE=$BASE_IMAGE) ..."
  wheels="$CLUSTER_CACHE/wheels"
  host_wheels "$wheels" --require-hashes -r "$ROOT/requirements.lock"
  pipconf="$CLUSTER_CACHE/build-pip.conf"
  # The build is offline: pip finds the locked wheels (checked against their hashes) in the
  # wheelhouse mounted for the RUN steps; neither file stays in the image.
  printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$pipconf"
  local started=$SECONDS
  bah bud --quiet --pull-never --layers --isolation chroot \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -v "$wheels:/wheels:ro" -v "$pipconf:/etc/pip.conf:ro" \
    -f "$ROOT/Dockerfile" -t "$image" "$ROOT" >"$CLUSTER_CACHE/loginpipe-build.log" 2>&1 ||
    die "buildah bud of ./Dockerfile failed: see $CLUSTER_CACHE/loginpipe-build.log"
  say "  built in $((SECONDS - started))s"
  save_archive loginpipe "$image" "$key"
}

build_redis_image() {
  local key
  key="redis $(recipe build_redis_image) $LOCAL_DEBIAN_SUITE"
  if archive_fresh redis "$key"; then return 0; fi
  say "image $REDIS_IMAGE (Debian redis-server) ..."
  local rootfs
  rootfs="$(debian_rootfs redis redis-server)"
  image_from_rootfs "$REDIS_IMAGE" "$rootfs" --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --cmd redis-server
  save_archive redis "$REDIS_IMAGE" "$key"
}

build_kafka_image() {
  local key
  key="kafka $(recipe build_kafka_image) $KAFKA_VERSION $LOCAL_DEBIAN_SUITE $(cat "$ROOT/hack/local-cluster/kafka-entrypoint.sh" "$ROOT/hack/kafka/broker.properties" | cksum)"
  if archive_fresh kafka "$key"; then return 0; fi
  say "image $KAFKA_IMAGE (Debian JRE + Kafka $KAFKA_VERSION jars from Maven Central) ..."
  "$ROOT/hack/kafka.sh" fetch >/dev/null
  local rootfs work="$CLUSTER_CACHE/rootfs/kafka-work"
  rootfs="$(debian_rootfs jre openjdk-17-jre-headless)"
  rm -rf "$work" && cp -a "$rootfs" "$work"
  mkdir -p "$work/opt/kafka/libs"
  cp "$ROOT/.cache/kafka/$KAFKA_VERSION/libs/"*.jar "$work/opt/kafka/libs/"
  install -m 0755 "$ROOT/hack/local-cluster/kafka-entrypoint.sh" "$work/opt/kafka/entrypoint.sh"
  install -m 0644 "$ROOT/hack/kafka/broker.properties" "$work/opt/kafka/broker.properties"
  image_from_rootfs "$KAFKA_IMAGE" "$work" --env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --entrypoint '["/opt/kafka/entrypoint.sh"]' --user 1001:1001
  rm -rf "$work"
  save_archive kafka "$KAFKA_IMAGE" "$key"
}

# An image of one static binary at PATH, run as its entrypoint (no shell, no libc).
binary_image() { # NAME IMAGE BINARY PATH KEY [buildah config args...]
  local name="$1" image="$2" binary="$3" path="$4" key="$5" work="$CLUSTER_CACHE/rootfs/$1-work"
  shift 5
  rm -rf "$work" && mkdir -p "$work$(dirname "$path")" "$work/tmp"
  chmod 1777 "$work/tmp"
  install -m 0755 "$binary" "$work$path"
  image_from_rootfs "$image" "$work" --entrypoint "[\"$path\"]" "$@"
  rm -rf "$work"
  save_archive "$name" "$image" "$key"
}

# An image of one command that build.sh built from a Go module, run as nobody by default.
module_image() { # BINARY IMAGE PATH-IN-IMAGE
  local binary="$1" image="$2" path="$3" name key
  name="$(basename "${image%%:*}")"
  key="$name $(recipe binary_image) $(cksum <"$binary")"
  archive_fresh "$name" "$key" && return 0
  say "image $image ..."
  binary_image "$name" "$image" "$binary" "$path" "$key" --user 65534:65534
}

build_monitoring_and_autoscaling_images() {
  local keda="$BIN_DIR/keda-v$LOCAL_KEDA_VERSION" v="$LOCAL_PROMETHEUS_OPERATOR_VERSION"
  local po="$BIN_DIR/prometheus-operator-v$LOCAL_PROMETHEUS_OPERATOR_VERSION"
  module_image "$keda/operator" "$KEDA_IMAGE" /keda
  module_image "$keda/adapter" "$KEDA_METRICS_IMAGE" /keda-adapter
  module_image "$po/operator" "localhost/loginpipe-prometheus-operator:$v" /bin/operator
  module_image "$po/prometheus-config-reloader" "localhost/loginpipe-prometheus-config-reloader:$v" \
    /bin/prometheus-config-reloader
  module_image "$BIN_DIR/prometheus-v$(prometheus_module_version)/prometheus" "$PROMETHEUS_IMAGE" \
    /bin/prometheus
}

# The NetworkPolicy agent runs as root (privileged, in the node's network namespace: it
# programs nftables and reads the packets of new connections from an nfqueue), as upstream's.
build_network_policies_image() {
  local binary="$BIN_DIR/kube-network-policies-v$LOCAL_KUBE_NETWORK_POLICIES_VERSION/cmd" key
  key="kube-network-policies $(recipe build_network_policies_image) $(recipe binary_image) $(cksum <"$binary")"
  archive_fresh kube-network-policies "$key" && return 0
  say "image $NETPOL_IMAGE ..."
  binary_image kube-network-policies "$NETPOL_IMAGE" "$binary" /bin/netpol "$key" --user 0:0
}

build_coredns_image() {
  local key
  key="coredns $(recipe build_coredns_image) $(recipe binary_image) $LOCAL_COREDNS_VERSION"
  if archive_fresh coredns "$key"; then return 0; fi
  say "image $COREDNS_IMAGE ..."
  binary_image coredns "$COREDNS_IMAGE" "$COREDNS_BIN" /coredns "$key"
}

build_pause_image() {
  local key
  key="pause $(recipe build_pause_image) $(recipe binary_image) $LOCAL_K8S_VERSION"
  if archive_fresh pause "$key"; then return 0; fi
  say "image $PAUSE_IMAGE (pause.c of Kubernetes v$LOCAL_K8S_VERSION, static) ..."
  local out="$CLUSTER_CACHE/build/pause"
  mkdir -p "$(dirname "$out")"
  gcc -Os -static -DVERSION="v$LOCAL_K8S_VERSION" -o "$out" "$(K8S_BIN pause.c)"
  strip "$out"
  binary_image pause "$PAUSE_IMAGE" "$out" /pause "$key" --user 65535:65535
}

# The images made without the Go binaries (Debian, Python, Kafka's jars): a cold run builds them
# while the binaries compile (.ci/run).
cmd_images_early() {
  need_root
  ensure_packages buildah debootstrap gcc libc6-dev
  mkdir -p "$IMAGE_DIR"
  build_base_image
  build_app_image
  build_redis_image
  build_kafka_image
}

cmd_images() {
  cmd_images_early
  [[ -x "$COREDNS_BIN" ]] || die "CoreDNS is not built yet: hack/local-cluster/build.sh binaries"
  build_pause_image
  build_coredns_image
  build_monitoring_and_autoscaling_images
  build_network_policies_image
  say "images ready under $IMAGE_DIR (buildah storage: $(storage_driver))"
}
