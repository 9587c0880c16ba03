#!/bin/sh
# Entrypoint of the local cluster's Kafka image (localhost/loginpipe-kafka): one KRaft node,
# broker and controller, the same configuration as hack/kafka.sh but listening on the pod's
# address and advertising KAFKA_ADVERTISED_HOST. Stands in for the Strimzi-managed Kafka of the
# chart, which needs Strimzi's operator and images (not available here).
#
# Environment: KAFKA_ADVERTISED_HOST (required: the Service's DNS name), KAFKA_DATA_DIR
# (default /var/lib/kafka, a volume), KAFKA_HEAP_OPTS (default -Xmx512m -Xms256m).
set -eu

: "${KAFKA_ADVERTISED_HOST:?set KAFKA_ADVERTISED_HOST to the Service name clients dial}"
DATA="${KAFKA_DATA_DIR:-/var/lib/kafka}"
HEAP="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
CP="/opt/kafka/libs/*"
CONF="$DATA/server.properties"
LOG4J="$DATA/log4j2.properties"

mkdir -p "$DATA/kraft-logs"
cat >"$CONF" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://$KAFKA_ADVERTISED_HOST:9092
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/kraft-logs
EOF
cat /opt/kafka/broker.properties >>"$CONF"
cat >"$LOG4J" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF

if [ ! -f "$DATA/kraft-logs/meta.properties" ]; then
  id="$(java -Xmx128m -cp "$CP" -Dlog4j2.configurationFile="$LOG4J" kafka.tools.StorageTool random-uuid | tail -n 1)"
  java -Xmx256m -cp "$CP" -Dlog4j2.configurationFile="$LOG4J" \
    kafka.tools.StorageTool format --config "$CONF" --cluster-id "$id" --ignore-formatted
fi

# shellcheck disable=SC2086 # the heap options are a word list
exec java $HEAP -XX:+UseG1GC -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" \
  -cp "$CP" kafka.Kafka "$CONF"
