#!/usr/bin/env bash
# A local Redis Cluster of three masters (no replicas), each a hack/redis.sh instance with
# cluster mode on, loopback only. For tests and for trying the aggregator on Redis Cluster.
#
# Usage: hack/redis-cluster.sh start|stop|status
#
#   start    start the three instances (installing redis-server if needed), create the cluster
#            (16384 slots over the three) unless it exists, wait until it reports cluster_state:ok
#   stop     stop the three instances (their data stays in REDIS_CLUSTER_DIR)
#   status   exit 0 if all three run and the cluster is ok, 3 if not
#
# Environment (defaults):
#   REDIS_CLUSTER_PORTS="7001 7002 7003"   one port per master; the cluster bus uses port+10000
#   REDIS_CLUSTER_DIR=.cache/run/redis-cluster (relative to the repo root when defaulted)
#   REDIS_CLUSTER_TIMEOUT=30               seconds to wait for cluster_state:ok
#
# The aggregator then runs with LOGINPIPE_REDIS_CLUSTER=true and LOGINPIPE_REDIS_URL pointing at
# any one of the masters, e.g. redis://127.0.0.1:7001/0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7001 7002 7003}"
DIR="$(realpath -m "${REDIS_CLUSTER_DIR:-$ROOT/.cache/run/redis-cluster}")"
TIMEOUT="${REDIS_CLUSTER_TIMEOUT:-30}"

NAME="redis-cluster[${PORTS[*]}]"
say() { echo "$NAME: $*"; }
die() { echo "$NAME: ERROR: $*" >&2; exit 1; }

[[ ${#PORTS[@]} -eq 3 ]] || die "REDIS_CLUSTER_PORTS must name three ports, got '${PORTS[*]}'"

node() {  # node <port> <redis.sh command>
  local port="$1"
  REDIS_PORT="$port" REDIS_DATA_DIR="$DIR/$port" \
    REDIS_EXTRA_CONFIG=$'cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000' \
    "$ROOT/hack/redis.sh" "$2"
}

cluster_ok() {
  redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok'
}

cmd_start() {
  local p
  for p in "${PORTS[@]}"; do node "$p" start; done
  if ! redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info | tr -d '\r' | grep -qx 'cluster_known_nodes:3'; then
    say "creating the cluster (three masters, no replicas) ..."
    redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 \
      || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  local deadline=$((SECONDS + TIMEOUT))
  until cluster_ok; do
    ((SECONDS < deadline)) || die "cluster_state is not ok after ${TIMEOUT}s (see $DIR/*/redis.log)"
    sleep 0.2
  done
  say "ready: redis://127.0.0.1:${PORTS[0]}/0 (LOGINPIPE_REDIS_CLUSTER=true)"
}

cmd_stop() {
  local p
  for p in "${PORTS[@]}"; do node "$p" stop; done
}

cmd_status() {
  local p
  for p in "${PORTS[@]}"; do node "$p" status >/dev/null || { say "node $p not running"; exit 3; }; done
  cluster_ok || { say "cluster_state is not ok"; exit 3; }
  say "running, cluster_state:ok"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
esac
