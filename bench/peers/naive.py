"""The naive baseline: the consumer the way take-home solutions of this job are written.

kafka-python, one message at a time, ``json.loads``, ``ipaddress``, ``json.dumps``, a
``send`` per message, auto-commit, and one Redis ``HINCRBY`` per valid event. The validation
rules are loginpipe's (``_rules.py``), so the work done per event is the same.

    python naive.py --bootstrap H:P --input T --processed T --errors T --group G
                    --redis-url URL --counts-key KEY
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import redis
from _rules import envelope, validate
from kafka import KafkaConsumer, KafkaProducer


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("bootstrap", "input", "processed", "errors", "group", "redis-url", "counts-key"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args()

    consumer = KafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    r = redis.Redis.from_url(args.redis_url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    try:
        for message in consumer:
            event, result = validate(message.value)
            if event is not None:
                producer.send(
                    args.processed,
                    key=message.key,
                    value=json.dumps(event).encode("utf-8"),
                    headers=[("loginpipe-device-type", result.encode())],
                )
                r.hincrby(args.counts_key, result, 1)
            else:
                error = envelope(
                    result,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    timestamp_ms=message.timestamp,
                    key=message.key,
                    value=message.value,
                )
                producer.send(
                    args.errors,
                    key=message.key,
                    value=json.dumps(error).encode("utf-8"),
                    headers=[("loginpipe-reason", error["reason"].encode())],
                )
    finally:
        producer.flush()
        producer.close()
        consumer.close()


if __name__ == "__main__":
    main()
