"""helm test: one valid and one invalid login event must be routed to their topics.

Sends two events with a unique marker to the input topic, then reads the processed and error
topics (read_committed, from the offsets they had before the send) until both markers are seen
where they belong, or the deadline passes. Exit 0 on success, 1 on a misrouting or a timeout.

Runs in the application image (confluent-kafka is installed there) with the release's Kafka
settings: LOGINPIPE_KAFKA_* from the ConfigMap and the Secrets, topics from LOGINPIPE_TOPIC_*.
"""

import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def log(msg: str) -> None:
    sys.stderr.write(f"routing-test: {msg}\n")
    sys.stderr.flush()


def kafka_conf() -> dict:
    env = os.environ
    conf = {
        "bootstrap.servers": env["LOGINPIPE_KAFKA_BOOTSTRAP"],
        "security.protocol": env.get("LOGINPIPE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
    }
    if conf["security.protocol"].startswith("SASL"):
        conf["sasl.mechanism"] = env.get("LOGINPIPE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        conf["sasl.username"] = env.get("LOGINPIPE_KAFKA_SASL_USERNAME", "")
        conf["sasl.password"] = env.get("LOGINPIPE_KAFKA_SASL_PASSWORD", "")
    if env.get("LOGINPIPE_KAFKA_SSL_CA_LOCATION"):
        conf["ssl.ca.location"] = env["LOGINPIPE_KAFKA_SSL_CA_LOCATION"]
    return conf


def end_offsets(consumer: Consumer, topic: str, timeout: float) -> list[TopicPartition]:
    """Every partition of ``topic`` at its current high watermark."""
    meta = consumer.list_topics(topic, timeout=timeout)
    t = meta.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} not found: {t.error if t else 'no metadata'}")
    out = []
    for p in sorted(t.partitions):
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        out.append(TopicPartition(topic, p, high))
    return out


def main() -> int:
    deadline = time.monotonic() + float(os.environ.get("ROUTING_TEST_TIMEOUT_SECONDS", "120"))
    input_topic = os.environ.get("LOGINPIPE_TOPIC_INPUT", "user-login")
    processed = os.environ.get("LOGINPIPE_TOPIC_PROCESSED", "user-login-processed")
    errors = os.environ.get("LOGINPIPE_TOPIC_ERRORS", "user-login-errors")
    marker = f"helm-test-{uuid.uuid4().hex}"
    good_key, bad_key = f"{marker}-valid", f"{marker}-invalid"
    now = int(time.time())
    good = {
        "user_id": good_key,
        "app_version": "1.0.0",
        "device_type": "android",
        "ip": "192.0.2.10",
        "timestamp": now,
        "locale": "en_US",
        "device_id": marker,
    }
    bad = {
        "user_id": bad_key,
        "app_version": "1.0.0",
        "device_type": "android",
        "ip": "300.1.2.3",
        "timestamp": now,
    }

    conf = kafka_conf()
    consumer = Consumer(
        {
            **conf,
            "group.id": marker,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        # Start reading where the output topics end now: the markers can only come after.
        assignment = end_offsets(consumer, processed, 30) + end_offsets(consumer, errors, 30)
        consumer.assign(assignment)

        producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
        for key, event in ((good_key, good), (bad_key, bad)):
            producer.produce(input_topic, key=key.encode(), value=json.dumps(event).encode())
        if producer.flush(30) != 0:
            log("the two test events were not delivered to the input topic within 30 s")
            return 1
        log(f"sent {good_key} (valid) and {bad_key} (invalid ip) to {input_topic}")

        seen: dict[str, tuple[str, dict]] = {}
        while time.monotonic() < deadline and len(seen) < 2:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                log(f"consumer error: {msg.error()}")
                continue
            key = (msg.key() or b"").decode("utf-8", "replace")
            if key in (good_key, bad_key):
                headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
                seen[key] = (msg.topic(), headers)
                log(f"{key} arrived on {msg.topic()} with headers {headers}")

        ok = True
        if seen.get(good_key, ("",))[0] != processed:
            log(f"FAIL: the valid event is not on {processed} (seen: {seen.get(good_key)})")
            ok = False
        if seen.get(bad_key, ("",))[0] != errors:
            log(f"FAIL: the invalid event is not on {errors} (seen: {seen.get(bad_key)})")
            ok = False
        elif seen[bad_key][1].get("loginpipe-reason") != "invalid_ip":
            log(f"FAIL: the invalid event's reason is {seen[bad_key][1]}, expected invalid_ip")
            ok = False
        if ok:
            log("PASS: valid event routed to processed, invalid one to errors (invalid_ip)")
        return 0 if ok else 1
    except (KafkaException, RuntimeError) as exc:
        log(f"FAIL: {exc}")
        return 1
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
