"""loginpipe's validation and routing written idiomatically with Quix Streams.

An ``Application``, a dataframe over the input topic, ``apply`` to classify, two filtered
branches with ``set_headers`` and ``to_topic``; the processing guarantee is Quix's own
setting, everything else its defaults (but the state folder, which it would otherwise create
in the working directory). The rules are loginpipe's (``_rules.py``).

    python quix_app.py --bootstrap H:P --input T --processed T --errors T --group G
                       --guarantee exactly-once|at-least-once --state-dir DIR
"""

from __future__ import annotations

import argparse
from typing import Any

from _rules import envelope, validate
from quixstreams import Application, message_context


def classify(value: bytes, key: bytes, timestamp: int, headers: Any) -> dict[str, Any]:
    event, result = validate(value)
    if event is not None:
        return {"valid": True, "event": event, "device_type": result}
    ctx = message_context()
    return {
        "valid": False,
        "envelope": envelope(
            result,
            topic=ctx.topic,
            partition=ctx.partition,
            offset=ctx.offset,
            timestamp_ms=timestamp,
            key=key,
            value=value,
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("bootstrap", "input", "processed", "errors", "group"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--guarantee", choices=("exactly-once", "at-least-once"), required=True)
    ap.add_argument("--state-dir", required=True, help="Quix's state folder (unused here)")
    args = ap.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    processed = app.topic(args.processed, key_serializer="bytes", value_serializer="json")
    errors = app.topic(args.errors, key_serializer="bytes", value_serializer="json")

    sdf = app.dataframe(source)
    sdf = sdf.apply(classify, metadata=True)

    valid = sdf[sdf["valid"]]
    valid = valid.set_headers(
        lambda value, key, timestamp, headers: [
            ("loginpipe-device-type", value["device_type"].encode())
        ]
    )
    valid = valid.apply(lambda value: value["event"])
    valid.to_topic(processed)

    invalid = sdf[~sdf["valid"]]
    invalid = invalid.set_headers(
        lambda value, key, timestamp, headers: [
            ("loginpipe-reason", value["envelope"]["reason"].encode())
        ]
    )
    invalid = invalid.apply(lambda value: value["envelope"])
    invalid.to_topic(errors)

    app.run()


if __name__ == "__main__":
    main()
