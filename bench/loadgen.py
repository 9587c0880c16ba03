"""The load generator of the latency runs: generator events at a fixed rate, stamped.

Makes ``rate * seconds`` events with loginpipe's ``EventFactory`` (fixed seed) before it
starts, then produces them on schedule with the generator service's producer settings. Each
record's timestamp (CreateTime) is the wall time of its ``produce`` call, which is also
written, as float seconds, to ``--times`` (native doubles, one per event, in order). Prints a
JSON summary.

    python -m bench.loadgen --bootstrap H:P --topic T --rate R --seconds S --seed K --times F
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import signal
import sys
import time

from confluent_kafka import Producer

from loginpipe.events import EventFactory

START_TIME = 1_764_000_000
BAD_SHARE = 0.2
USERS = 10_000
TICK = 0.001  # seconds: the shortest sleep between produce bursts


WARM_UP_RECORDS = 1  # written before the clock starts (see main); readers of its topic see it


def factory(seed: int) -> EventFactory:
    """The events of a latency run; the benchmark recomputes them from the same seed."""
    return EventFactory(seed, bad_share=BAD_SHARE, users=USERS, start_time=START_TIME)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--times", required=True)
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    total = max(1, round(args.rate * args.seconds))
    f = factory(args.seed)
    events = [(ev.key, ev.value) for ev in (f.next() for _ in range(total))]
    # The events live to the end: keep the collector from scanning them again and again
    # (it did, at every few thousand produce calls: the load generator's own CPU competes
    # with the pipeline it measures on a small machine).
    gc.collect()
    gc.freeze()
    # The generator service's producer settings (loginpipe.generator).
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 10,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            # No callback reads the reports: flush() counts what is left undelivered.
            "delivery.report.only.error": True,
        }
    )
    # Be ready before the clock starts: connected to the partition leaders, with the idempotent
    # producer id acquired. Otherwise the first ~0.5 s of every load point waits for that and
    # shows as pipeline latency. The warm-up record is empty, so the pipeline routes it to the
    # error topic (empty_message): it reaches neither the processed topic nor the counts.
    producer.list_topics(args.topic, timeout=10)
    producer.produce(args.topic, b"", b"bench-loadgen-warm-up")
    if producer.flush(30):
        raise SystemExit("load generator: the warm-up record was not delivered in 30 s")
    times = array.array("d", bytes(8 * total))
    topic, rate, produce, now = args.topic, args.rate, producer.produce, time.time
    began = now()
    n = 0
    while n < total and not stop:
        due = min(total, int((now() - began) * rate) + 1)
        while n < due:
            key, value = events[n]
            t = now()
            while True:
                try:
                    produce(topic, value, key, timestamp=int(t * 1000))
                    break
                except BufferError:
                    producer.poll(0.01)
            times[n] = t
            n += 1
        producer.poll(0)
        # Produce in ticks of at least TICK: at 10k/s a wake-up per event cost the load
        # generator half a core. Each record is stamped at its own produce call, so a record
        # a tick late is late for the load generator, never for the pipeline.
        wait = began + n / rate - now()
        if wait > 0:
            time.sleep(min(max(wait, TICK), 0.05))
    left = producer.flush(30)
    with open(args.times, "wb") as out:
        times[:n].tofile(out)
    span = times[n - 1] - times[0] if n > 1 else 0.0
    sys.stdout.write(
        json.dumps(
            {
                "produced": n,
                "undelivered": left,
                "first": times[0],
                "last": times[n - 1],
                "achieved_rate": (n - 1) / span if span > 0 else 0.0,
            }
        )
        + "\n"
    )
    return 0 if left == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
