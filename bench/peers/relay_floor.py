"""The latency floor: the least a Python pipeline can do between the same topics and Redis.

Two roles, each its own process, as loginpipe's consumer and aggregator are:

- ``relay`` reads the input topic and writes each event to the processed topic (valid, with
  the device-type header) or to the errors topic (invalid: the raw bytes, no envelope). The
  rules are loginpipe's own ``validate``, so both route the same events; what it leaves out
  is everything else: no commit window, no error envelope, no metrics or health, offsets
  auto-committed (at most once on a crash, which a floor may ignore). Producer settings are
  the consumer's at-least-once ones (idempotent, acks=all, lz4, and its default linger:
  ``ConsumerSettings.linger_in_effect_ms``).
- ``count`` reads the processed topic and adds each batch's per-device counts to the same
  Redis hash with one ``HINCRBY`` pipeline: no positions, no script, auto-committed offsets.

The fetch settings are loginpipe's (``consumer_base_config``), and so is the way a batch is
taken (``kafka_io.take``). The latency phase runs it beside loginpipe at the same load
points: what loginpipe adds to the tail is the difference.

    python relay_floor.py relay --bootstrap H:P --input T --processed T --errors T --group G
    python relay_floor.py count --bootstrap H:P --processed T --group G --redis-url U --key K
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections import Counter
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, Producer

from loginpipe.envelope import DEVICE_HEADERS, HEADER_DEVICE_TYPE
from loginpipe.kafka_io import Rebalances, consumer_base_config, take
from loginpipe.settings import CommonSettings, ConsumerSettings
from loginpipe.validation import Valid, validate

BATCH = 2000


def _consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    conf: dict[str, Any] = consumer_base_config(CommonSettings(kafka_bootstrap=bootstrap), group)
    conf.pop("logger", None)
    conf["statistics.interval.ms"] = 0
    conf["enable.auto.commit"] = True
    conf["enable.auto.offset.store"] = True
    c = Consumer(conf)
    c.subscribe([topic])
    return c


def relay(a: argparse.Namespace, stop: threading.Event) -> None:
    consumer = _consumer(a.bootstrap, a.group, a.input)
    producer = Producer(
        {
            "bootstrap.servers": a.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": ConsumerSettings(delivery="at_least_once").linger_in_effect_ms,
            "compression.type": "lz4",
        }
    )
    rebalances = Rebalances()
    produce = producer.produce
    try:
        while not stop.is_set():
            for m in take(consumer, BATCH, 0.1, rebalances):
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                result = validate(m.value())
                if isinstance(result, Valid):
                    headers = DEVICE_HEADERS[result.device_type]
                    produce(a.processed, result.value, m.key(), headers=headers)
                else:
                    produce(a.errors, m.value(), m.key())
            producer.poll(0)
    finally:
        producer.flush(10)
        consumer.close()


def count(a: argparse.Namespace, stop: threading.Event) -> None:
    consumer = _consumer(a.bootstrap, a.group, a.processed)
    r = redis.Redis.from_url(a.redis_url)
    rebalances = Rebalances()
    try:
        while not stop.is_set():
            msgs = take(consumer, BATCH, 0.1, rebalances)
            counts: Counter[str] = Counter()
            for m in msgs:
                if m.error() is None:
                    for header in m.headers() or []:
                        if header[0] == HEADER_DEVICE_TYPE and isinstance(header[1], bytes):
                            counts[header[1].decode()] += 1
            if counts:
                pipe = r.pipeline(transaction=False)
                for device, n in counts.items():
                    pipe.hincrby(a.key, device, n)
                pipe.execute()
    finally:
        consumer.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("relay", "count"))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--input")
    ap.add_argument("--processed", required=True)
    ap.add_argument("--errors")
    ap.add_argument("--redis-url")
    ap.add_argument("--key")
    a = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (relay if a.role == "relay" else count)(a, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
