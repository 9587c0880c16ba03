#!/usr/bin/env bash
# Local Apicurio Registry (its Confluent-compatible API) on the local Kafka, for development and CI.
#
# Usage: hack/registry.sh fetch|start|stop|status|logs [-f]|java|fetched
#
#   fetch      download the registry (Maven Central: io.apicurio:apicurio-registry-app, the `all`
#              tar.gz, a complete Quarkus app) into the cache under $HOME -- instant when cached
#   start      fetch if needed, start in the background on the local Kafka (KafkaSQL storage: the
#              schemas live in the broker's topics kafkasql-journal and kafkasql-snapshots, and
#              survive restarts) and wait until /health/ready answers (exit 0 if already running)
#   stop       SIGTERM, wait for a clean shutdown, SIGKILL as a last resort
#   status     exit 0 if running, 3 if not
#   logs [-f]  print (or follow) its log
#   java       print the Java 21+ it would use (exit 1 if there is none)
#   fetched    exit 0 if the registry is downloaded already, 1 if not
#
# Environment (defaults):
#   REGISTRY_PORT=8081             HTTP on 127.0.0.1: the API, ccompat at /apis/ccompat/v7
#   REGISTRY_MANAGEMENT_PORT=9000  health (/health/ready, /health/live) and metrics, 127.0.0.1
#   REGISTRY_KAFKA=127.0.0.1:9092  the Kafka it stores its schemas in (start it first)
#   REGISTRY_HEAP="-Xmx384m"       heap
#   REGISTRY_START_TIMEOUT=120     seconds to wait for readiness (it replays its journal)
#   REGISTRY_DATA_DIR=.cache/run/registry-$REGISTRY_PORT  pid, log, tmp
#   REGISTRY_JAVA_HOME             a JDK or JRE 21+ (the app's classes need it); else the first
#                                  of JAVA_HOME, /usr/lib/jvm/* and `java` on PATH that is 21+
#   LOGINPIPE_HOME_CACHE=~/.cache/loginpipe   where the download is kept, keyed by version
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$ROOT/hack/versions.env"

REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-9000}"
REGISTRY_KAFKA="${REGISTRY_KAFKA:-127.0.0.1:9092}"
REGISTRY_HEAP="${REGISTRY_HEAP:--Xmx384m}"
REGISTRY_START_TIMEOUT="${REGISTRY_START_TIMEOUT:-120}"
REGISTRY_DATA_DIR="$(realpath -m "${REGISTRY_DATA_DIR:-$ROOT/.cache/run/registry-$REGISTRY_PORT}")"
HOME_CACHE="${LOGINPIPE_HOME_CACHE:-$HOME/.cache/loginpipe}"

APP_HOME="$HOME_CACHE/apicurio/$APICURIO_REGISTRY_VERSION"
STAMP="$APP_HOME/.fetched"
M2_REPO="$HOME_CACHE/m2"
PID_FILE="$REGISTRY_DATA_DIR/registry.pid"
LOG_FILE="$REGISTRY_DATA_DIR/registry.log"
ARTIFACT="io.apicurio:apicurio-registry-app:$APICURIO_REGISTRY_VERSION:tar.gz:all"

NAME="registry[$REGISTRY_PORT]"
say() { echo "$NAME: $*"; }
die() { echo "$NAME: ERROR: $*" >&2; exit 1; }

java_major() { # the major version of a java binary, or nothing
  "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'
}

find_java() {
  local c
  for c in ${REGISTRY_JAVA_HOME:+"$REGISTRY_JAVA_HOME/bin/java"} ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
    /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [[ -x "$c" ]] || continue
    local v
    v="$(java_major "$c")"
    if [[ -n "$v" && "$v" -ge 21 ]]; then echo "$c"; return 0; fi
  done
  return 1
}

fetch() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$ARTIFACT" ]]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found. Install Maven >= 3.6 (Debian: apt-get install -y maven)."
  say "fetching $ARTIFACT (about 160 MB) into $APP_HOME"
  local tmp
  tmp="$(mktemp -d)"
  if ! mvn -B -q -Dmaven.repo.local="$M2_REPO" \
      "org.apache.maven.plugins:maven-dependency-plugin:$MAVEN_DEPENDENCY_PLUGIN_VERSION:copy" \
      -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" >"$tmp/mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$tmp/mvn.log" >&2
    die "mvn could not fetch $ARTIFACT (output above)."
  fi
  rm -rf "$APP_HOME" && mkdir -p "$APP_HOME"
  tar -xzf "$tmp"/apicurio-registry-app-*.tar.gz -C "$APP_HOME"
  [[ -f "$APP_HOME/quarkus-run.jar" ]] || die "no quarkus-run.jar in $ARTIFACT"
  # The tar.gz stays in Maven's cache, where a re-fetch finds it.
  rm -rf "$tmp"
  echo "$ARTIFACT" >"$STAMP"
}

running_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-Dloginpipe.registry=$REGISTRY_PORT" || return 1
  echo "$pid"
}

ready() {
  curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$REGISTRY_MANAGEMENT_PORT/health/ready"
}

start() {
  if pid="$(running_pid)"; then say "already running (pid $pid)"; return 0; fi
  local java
  java="$(find_java)" || die "needs Java 21 or newer (the registry's classes are Java 21): install a JDK 21+ and set REGISTRY_JAVA_HOME to it"
  fetch
  mkdir -p "$REGISTRY_DATA_DIR/tmp"
  say "starting Apicurio Registry $APICURIO_REGISTRY_VERSION on 127.0.0.1:$REGISTRY_PORT (Kafka $REGISTRY_KAFKA, Java $(java_major "$java"))"
  # shellcheck disable=SC2086 # REGISTRY_HEAP holds several JVM options
  (cd "$REGISTRY_DATA_DIR" && exec setsid "$java" $REGISTRY_HEAP -XX:+UseSerialGC \
    "-Dloginpipe.registry=$REGISTRY_PORT" \
    "-Djava.io.tmpdir=$REGISTRY_DATA_DIR/tmp" \
    -Dquarkus.http.host=127.0.0.1 "-Dquarkus.http.port=$REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 "-Dquarkus.management.port=$REGISTRY_MANAGEMENT_PORT" \
    -Dapicurio.storage.kind=kafkasql "-Dapicurio.kafkasql.bootstrap.servers=$REGISTRY_KAFKA" \
    "-Dapicurio.storage.snapshot.location=$REGISTRY_DATA_DIR/tmp" \
    -Dapicurio.rules.global.compatibility=BACKWARD \
    -jar "$APP_HOME/quarkus-run.jar" >"$LOG_FILE" 2>&1 </dev/null) &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + REGISTRY_START_TIMEOUT))
  until ready; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$LOG_FILE" >&2
      die "exited during start-up (log above, all of it in $LOG_FILE); is Kafka up at $REGISTRY_KAFKA (make infra-up)?"
    fi
    if ((SECONDS > deadline)); then
      tail -n 30 "$LOG_FILE" >&2
      die "not ready after ${REGISTRY_START_TIMEOUT}s (log above)"
    fi
    sleep 0.5
  done
  say "ready (pid $(cat "$PID_FILE")): http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then say "not running"; rm -f "$PID_FILE"; return 0; fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS > deadline)); then say "no clean exit in 30s: SIGKILL"; kill -KILL "$pid"; break; fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  say "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if pid="$(running_pid)"; then say "running (pid $pid)"; else say "not running"; exit 3; fi ;;
  logs) if [[ "${2:-}" == "-f" ]]; then tail -F "$LOG_FILE"; else cat "$LOG_FILE"; fi ;;
  java) find_java ;;
  fetched) [[ -f "$STAMP" && "$(cat "$STAMP")" == "$ARTIFACT" ]] ;;
  *) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
