"""The Python ceiling: a confluent-kafka batch-consume loop that does no work.

The same client version and fetch settings as loginpipe's services (``consumer_base_config``)
and the consumer's batch size; it only counts. Runs in the project's venv. Prints one JSON
line: the records read, the size of the first batch and the wall times at which the first and
the last batch arrived.

    python bare_confluent.py --bootstrap H:P --topic T --group G --records N [--batch B]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException

from loginpipe.kafka_io import consumer_base_config
from loginpipe.settings import CommonSettings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    conf = consumer_base_config(CommonSettings(kafka_bootstrap=args.bootstrap), args.group)
    conf.pop("logger", None)
    conf["statistics.interval.ms"] = 0
    consumer = Consumer(conf)
    consumer.subscribe([args.topic])
    n = first_batch = 0
    first = last = 0.0
    deadline = time.monotonic() + args.timeout
    try:
        while n < args.records and time.monotonic() < deadline:
            msgs = consumer.consume(args.batch, 0.5)
            if not msgs:
                continue
            now = time.time()
            for m in msgs:
                err = m.error()
                if err is not None and err.fatal():
                    raise KafkaException(err)
            if n == 0:
                first, first_batch = now, len(msgs)
            n += len(msgs)
            last = now
    finally:
        consumer.close()
    sys.stdout.write(
        json.dumps({"records": n, "first_batch": first_batch, "first": first, "last": last}) + "\n"
    )
    return 0 if n >= args.records else 1


if __name__ == "__main__":
    raise SystemExit(main())
