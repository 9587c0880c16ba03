#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for development and CI.
#
# Usage: hack/kafka.sh fetch|start|stop|status|logs [-f]|run-class CLASS [ARGS...]
#
#   fetch      download the Kafka jars (Maven Central, cached under .cache/) -- instant when cached
#   start      fetch if needed, format storage once per data dir, start in the background and
#              wait until the broker answers API requests (exit 0 if it is already running)
#   stop       SIGTERM, wait for a clean shutdown, SIGKILL as a last resort
#   status     exit 0 if running, 3 if not
#   logs [-f]  print (or follow) the broker log of this instance
#   run-class  run a Kafka class on the same classpath, e.g.
#              hack/kafka.sh run-class org.apache.kafka.tools.ConsumerPerformance --help
#
# Environment (defaults):
#   KAFKA_PORT=9092                client listener PLAINTEXT://127.0.0.1:$KAFKA_PORT
#   KAFKA_CONTROLLER_PORT=9093     KRaft controller listener on 127.0.0.1
#   KAFKA_DATA_DIR=.cache/run/kafka-$KAFKA_PORT   (relative to the repo root when defaulted)
#   KAFKA_HEAP="-Xmx1g -Xms256m"   broker heap
#   KAFKA_START_TIMEOUT=60         seconds to wait for readiness
#   KAFKA_STOP_TIMEOUT=30          seconds to wait for a clean exit before SIGKILL
#   KAFKA_EXTRA_CONFIG=""          extra server.properties lines (newline separated, they win)
#   KAFKA_TOOL_OPTS="-Xmx512m"     JVM options for run-class
#   KAFKA_SECURITY=plaintext       sasl_ssl: the client listener is SASL_SSL (SCRAM-SHA-512 over
#                                  TLS) with the StandardAuthorizer and no access without an ACL;
#                                  made once per data dir: a CA and a broker certificate for
#                                  127.0.0.1 (tls/, clients trust tls/ca.crt) and the super user
#                                  `admin` (password in admin.password; tools and admin clients:
#                                  --command-config client.properties)
#   JAVA_HOME                      used when set, else `java` from PATH
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$ROOT/hack/versions.env"
# shellcheck source-path=SCRIPTDIR source=lib/tls.sh
. "$ROOT/hack/lib/tls.sh"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$ROOT/.cache/run/kafka-$KAFKA_PORT}"
KAFKA_HEAP="${KAFKA_HEAP:--Xmx1g -Xms256m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_EXTRA_CONFIG="${KAFKA_EXTRA_CONFIG:-}"
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xmx512m}"
KAFKA_SECURITY="${KAFKA_SECURITY:-plaintext}"
# Short-lived internal JVMs (storage format, readiness probe): optimise for startup time.
PROBE_OPTS="-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto"

KAFKA_DATA_DIR="$(realpath -m "$KAFKA_DATA_DIR")"

M2_REPO="$ROOT/.cache/m2"
KAFKA_HOME="$ROOT/.cache/kafka/$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
STAMP="$KAFKA_HOME/.fetched"
TOOLS_LOG4J="$KAFKA_HOME/tools-log4j2.properties"
POM="$ROOT/hack/kafka/pom.xml"

PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_FILE="$KAFKA_DATA_DIR/kafka.log"
CONFIG_FILE="$KAFKA_DATA_DIR/server.properties"
LOG4J_FILE="$KAFKA_DATA_DIR/log4j2.properties"
LOG_DIRS="$KAFKA_DATA_DIR/kraft-logs"
TLS_DIR="$KAFKA_DATA_DIR/tls"
ADMIN_PASSWORD_FILE="$KAFKA_DATA_DIR/admin.password"
CLIENT_CONFIG="$KAFKA_DATA_DIR/client.properties"
COMMAND_CONFIG=()
[[ "$KAFKA_SECURITY" == sasl_ssl ]] && COMMAND_CONFIG=(--command-config "$CLIENT_CONFIG")

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

NAME="kafka[$KAFKA_PORT]"
say() { echo "$NAME: $*"; }
die() { echo "$NAME: ERROR: $*" >&2; exit 1; }

# What the stamp records: any change (versions, pom) triggers a re-fetch.
fetch_key() {
  echo "kafka=$KAFKA_VERSION scala=$KAFKA_SCALA_VERSION log4j=$LOG4J_VERSION slf4j=$SLF4J_VERSION plugin=$MAVEN_DEPENDENCY_PLUGIN_VERSION"
  cksum <"$POM"
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 ||
    die "java not found. Install a JDK >= 17 (Debian: apt-get install -y openjdk-17-jdk-headless) or set JAVA_HOME."
  local major
  major="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  [[ "${major%%.*}" =~ ^[0-9]+$ && "${major%%.*}" -ge 17 ]] ||
    die "Kafka $KAFKA_VERSION needs Java >= 17, found '$major' ($JAVA)."
}

cmd_fetch() {
  check_java
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fetch_key)" ]]; then
    say "jars for Kafka $KAFKA_VERSION already in ${LIBS#"$ROOT"/}"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found. Install Maven >= 3.6 (Debian: apt-get install -y maven)."
  say "fetching Kafka $KAFKA_VERSION jars via Maven (cache: ${M2_REPO#"$ROOT"/}) ..."
  local tmp="$KAFKA_HOME/libs.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$KAFKA_HOME"
  if ! mvn -B -q -f "$POM" \
      -Dmaven.repo.local="$M2_REPO" \
      -Dkafka.version="$KAFKA_VERSION" \
      -Dkafka.scala.version="$KAFKA_SCALA_VERSION" \
      -Dlog4j.version="$LOG4J_VERSION" \
      -Dslf4j.version="$SLF4J_VERSION" \
      -Dmaven.dependency.plugin.version="$MAVEN_DEPENDENCY_PLUGIN_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime \
      >"$KAFKA_HOME/mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$KAFKA_HOME/mvn.log" >&2
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed (output above, also in $KAFKA_HOME/mvn.log)."
  fi
  [[ -f "$tmp/kafka_$KAFKA_SCALA_VERSION-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] ||
    die "Kafka jars missing after mvn run (in $tmp)."
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  write_tools_log4j
  fetch_key >"$STAMP"
  say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars into ${LIBS#"$ROOT"/}"
}

ensure_libs() {
  if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$(fetch_key)" ]]; then cmd_fetch; fi
  [[ -f "$TOOLS_LOG4J" ]] || write_tools_log4j
}

# CLI tools: warnings and errors only, on stderr.
write_tools_log4j() {
  cat >"$TOOLS_LOG4J" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# pid of our broker if it is running, else nothing (and status 1).
running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: it must be a kafka.Kafka JVM using this instance's config.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $CONFIG_FILE" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
  echo "---- last 40 lines of $LOG_FILE ----" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
  echo "----" >&2
}

# KAFKA_SECURITY=sasl_ssl: a CA, the broker's certificate and key (one PEM file, the key in
# PKCS#8, as Kafka's PEM keystore takes it) and the admin password, made once per data dir.
make_secrets() {
  if [[ ! -f "$TLS_DIR/broker.pem" ]]; then
    make_tls "$TLS_DIR" "loginpipe Kafka $KAFKA_PORT" || die "KAFKA_SECURITY=sasl_ssl: no certificates."
    (umask 077 && cat "$TLS_DIR/server.key" "$TLS_DIR/server.crt" "$TLS_DIR/ca.crt" >"$TLS_DIR/broker.pem")
    say "TLS certificates made in ${TLS_DIR#"$ROOT"/} (clients trust ca.crt)"
  fi
  if [[ ! -s "$ADMIN_PASSWORD_FILE" ]]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ADMIN_PASSWORD_FILE")
  fi
  local pw
  pw="$(cat "$ADMIN_PASSWORD_FILE")"
  (
    umask 077
    cat >"$CLIENT_CONFIG" <<EOF
# The super user's client settings, for Kafka's tools: --command-config $CLIENT_CONFIG
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
EOF
  )
}

write_config() {
  local client_listener=PLAINTEXT
  [[ "$KAFKA_SECURITY" == sasl_ssl ]] && client_listener=SASL_SSL
  cat >"$CONFIG_FILE" <<EOF
# Generated by hack/kafka.sh on every start -- edits are overwritten (use KAFKA_EXTRA_CONFIG).
# Single-node KRaft: this process is both broker and controller. Loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$client_listener://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=$client_listener://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$client_listener:$client_listener
controller.listener.names=CONTROLLER
inter.broker.listener.name=$client_listener
log.dirs=$LOG_DIRS

EOF
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    (umask 077 && cat >>"$CONFIG_FILE" <<EOF
# KAFKA_SECURITY=sasl_ssl: SCRAM-SHA-512 over TLS; nothing is allowed without an ACL.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$ADMIN_PASSWORD_FILE")";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# admin: the super user. ANONYMOUS: the broker's own requests to its controller, over the
# loopback-only CONTROLLER listener (PLAINTEXT, never advertised to clients).
super.users=User:admin;User:ANONYMOUS

EOF
    )
  fi
  cat "$ROOT/hack/kafka/broker.properties" >>"$CONFIG_FILE"
  if [[ -n "$KAFKA_EXTRA_CONFIG" ]]; then
    printf '\n# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$CONFIG_FILE"
  fi

  cat >"$LOG4J_FILE" <<'EOF'
# Generated by hack/kafka.sh. Everything goes to stdout, which is redirected to kafka.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
}

format_storage() {
  [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
  local cluster_id
  # shellcheck disable=SC2086 # word splitting of JVM options is intended
  cluster_id="$("$JAVA" $PROBE_OPTS -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | tail -n 1)"
  [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "could not generate a cluster id (got '$cluster_id')."
  say "formatting storage in ${LOG_DIRS#"$ROOT"/} (cluster id $cluster_id)"
  local scram=()
  if [[ "$KAFKA_SECURITY" == sasl_ssl ]]; then
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$ADMIN_PASSWORD_FILE")]")
  fi
  # shellcheck disable=SC2086 # word splitting of JVM options is intended
  "$JAVA" $PROBE_OPTS -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    kafka.tools.StorageTool format --config "$CONFIG_FILE" --cluster-id "$cluster_id" --ignore-formatted \
    "${scram[@]}" >>"$LOG_FILE" 2>&1 || { log_tail; die "storage format failed."; }
  echo "$cluster_id" >"$KAFKA_DATA_DIR/cluster.id"
}

# One request round trip to the broker (ApiVersions); true when it answers.
broker_answers() {
  local out
  # shellcheck disable=SC2086
  out="$(timeout 20 "$JAVA" $PROBE_OPTS -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J" \
    org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    "${COMMAND_CONFIG[@]}" 2>/dev/null)" || return 1
  grep -q "(id: 1 " <<<"$out"
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail
      rm -f "$PID_FILE"
      die "broker process $pid exited during startup."
    fi
    # Cheap pre-check (no JVM) before the real API round trip.
    if port_open "$KAFKA_PORT" && broker_answers; then
      return 0
    fi
    sleep 0.25
  done
  log_tail
  die "broker not ready after ${KAFKA_START_TIMEOUT}s (pid $pid still running; stop it with: $0 stop)."
}

cmd_start() {
  check_java
  ensure_libs
  mkdir -p "$KAFKA_DATA_DIR"
  exec 9>"$KAFKA_DATA_DIR/.lock"
  flock 9
  local pid t0=$SECONDS
  if pid="$(running_pid)"; then
    say "already running (pid $pid)"
    wait_ready "$pid"
    return 0
  fi
  rm -f "$PID_FILE"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)."
  done
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"
  case "$KAFKA_SECURITY" in
    plaintext) ;;
    sasl_ssl) make_secrets ;;
    *) die "KAFKA_SECURITY=$KAFKA_SECURITY: set it to plaintext or sasl_ssl." ;;
  esac
  write_config
  format_storage

  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data ${KAFKA_DATA_DIR#"$ROOT"/})"
  # shellcheck disable=SC2086 # word splitting of JVM options is intended
  nohup "$JAVA" $KAFKA_HEAP \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_FILE" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG_FILE" \
    >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid"
  say "ready (pid $pid) in $((SECONDS - t0))s"
}

cmd_stop() {
  [[ -d "$KAFKA_DATA_DIR" ]] || { say "not running"; return 0; }
  exec 9>"$KAFKA_DATA_DIR/.lock"
  flock 9
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    say "not running"
    return 0
  fi
  say "stopping (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    say "no clean exit after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  say "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    say "running (pid $pid, 127.0.0.1:$KAFKA_PORT, controller :$KAFKA_CONTROLLER_PORT, data ${KAFKA_DATA_DIR#"$ROOT"/})"
    return 0
  fi
  say "not running"
  return 3
}

cmd_logs() {
  [[ -f "$LOG_FILE" ]] || die "no log yet ($LOG_FILE)"
  if [[ "${1:-}" == "-f" ]]; then exec tail -n 100 -F "$LOG_FILE"; fi
  tail -n "${LINES_TO_SHOW:-200}" "$LOG_FILE"
}

cmd_run_class() {
  [[ $# -ge 1 ]] || die "usage: $0 run-class CLASS [ARGS...]"
  ensure_libs >&2
  # shellcheck disable=SC2086 # word splitting of JVM options is intended
  exec "$JAVA" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" "$@"
}

usage() {
  sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  run-class) shift; cmd_run_class "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
