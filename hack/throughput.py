"""Measure a local run's throughput: the consumer and the aggregator on pre-filled topics.

    .venv/bin/python hack/throughput.py [--events N] [--delivery exactly_once|at_least_once]

Needs the local Kafka and Redis (`make infra-up`). Uses fresh, uniquely named topics, groups
and Redis keys, so it never touches the pipeline's own data. The consumer's rate is events
over the span between its first and last output record (their Kafka timestamps); the
aggregator's is events over the span between its first and last change of the Redis counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from loginpipe.events import EventFactory, GroundTruth


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--delivery", default="exactly_once")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    a = ap.parse_args()
    run = uuid.uuid4().hex[:8]
    t_in, t_ok, t_err = f"tp-in-{run}", f"tp-ok-{run}", f"tp-err-{run}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for f in admin.create_topics(
        [NewTopic(t, num_partitions=a.partitions, replication_factor=1) for t in (t_in, t_ok, t_err)]
    ).values():
        f.result(30)

    truth = GroundTruth()
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 20, "compression.type": "lz4",
                  "queue.buffering.max.messages": 2_000_000})
    factory = EventFactory(1, bad_share=0.2, users=10_000, start_time=1_764_000_000)
    for _ in range(a.events):
        ev = factory.next()
        truth.add(ev)
        while True:
            try:
                p.produce(t_in, ev.value, ev.key)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    print(f"pre-filled {a.events} events ({truth.invalid} invalid) into {t_in}", file=sys.stderr)

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOGINPIPE_")},
        "LOGINPIPE_KAFKA_BOOTSTRAP": a.bootstrap,
        "LOGINPIPE_REDIS_URL": a.redis_url,
        "LOGINPIPE_TOPIC_INPUT": t_in,
        "LOGINPIPE_TOPIC_PROCESSED": t_ok,
        "LOGINPIPE_TOPIC_ERRORS": t_err,
        "LOGINPIPE_CONSUMER_GROUP": f"tp-c-{run}",
        "LOGINPIPE_AGGREGATOR_GROUP": f"tp-a-{run}",
        "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID": f"tp-{run}",
        "LOGINPIPE_CONSUMER_DELIVERY": a.delivery,
        "LOGINPIPE_REDIS_KEY_PREFIX": f"throughput:{run}:",
        "LOGINPIPE_METRICS_PORT": "0",
        "LOGINPIPE_LOG_LEVEL": "WARNING",
    }
    cons = subprocess.Popen([sys.executable, "-m", "loginpipe", "consume"], env=env)
    probe = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"tp-c-{run}"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tps = probe.committed([TopicPartition(t_in, i) for i in range(a.partitions)], timeout=10)
        if sum(max(tp.offset, 0) for tp in tps) >= a.events:
            break
        time.sleep(0.2)
    probe.close()
    cons.terminate()
    cons.wait(30)
    first, last = span_of([t_ok, t_err], a.bootstrap, a.partitions)
    consumer_rate = a.events / ((last - first) / 1000)

    r = redis.Redis.from_url(a.redis_url)
    key = f"throughput:{run}:device_counts"
    agg = subprocess.Popen([sys.executable, "-m", "loginpipe", "aggregate"], env=env)
    t_first = t_last = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        total = sum(int(v) for v in r.hgetall(key).values())
        now = time.monotonic()
        if total and t_first is None:
            t_first = now
        if total >= truth.valid:
            t_last = now
            break
        time.sleep(0.01)
    agg.terminate()
    agg.wait(30)
    assert t_first is not None and t_last is not None, "aggregator did not finish"
    aggregator_rate = truth.valid / max(t_last - t_first, 1e-3)
    out = {
        "events": a.events,
        "delivery": a.delivery,
        "consumer_events_per_second": round(consumer_rate),
        "aggregator_events_per_second": round(aggregator_rate),
    }
    print(json.dumps(out))
    for f in admin.delete_topics([t_in, t_ok, t_err]).values():
        f.result(30)
    r.delete(key, f"throughput:{run}:offsets:{t_ok}")
    return 0


def span_of(topics: list[str], bootstrap: str, partitions: int) -> tuple[int, int]:
    """Earliest and latest record timestamps (ms) over the topics, committed records only."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"span-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    c.assign([TopicPartition(t, i, 0) for t in topics for i in range(partitions)])
    lo, hi, eof = None, None, 0
    while eof < len(topics) * partitions:
        for m in c.consume(10_000, 1.0):
            if m.error():
                eof += 1
                continue
            ts = m.timestamp()[1]
            lo = ts if lo is None else min(lo, ts)
            hi = ts if hi is None else max(hi, ts)
    c.close()
    assert lo is not None and hi is not None
    return lo, hi


if __name__ == "__main__":
    raise SystemExit(main())
