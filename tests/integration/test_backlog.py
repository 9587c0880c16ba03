"""The commit pacer's signal on a real broker: what waits behind the consumer's position."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from loginpipe.kafka_io import backlog
from tests.integration.conftest import Pipeline, wait_for

RECORDS = 3000


def test_the_backlog_is_what_waits_behind_the_position_as_the_client_last_fetched_it(
    make_pipeline,
) -> None:
    pl: Pipeline = make_pipeline(partitions=2)
    producer = Producer({"bootstrap.servers": pl.bootstrap, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(pl.input, b"x", partition=i % 2)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": pl.bootstrap,
            "group.id": f"backlog-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # Small prefetch: the position, not the fetch, is what the backlog counts from.
            "queued.max.messages.kbytes": 64,
        }
    )
    try:
        assert backlog(consumer) == 0, "nothing assigned, nothing waits"
        consumer.assign([TopicPartition(pl.input, p, 0) for p in range(2)])
        taken: list[Message] = []

        def take_some() -> bool:
            taken.extend(consumer.consume(100, 0.2))
            return {m.partition() for m in taken} == {0, 1}

        # A partition counts once the application has been handed one of its records (its
        # position is unknown before that).
        wait_for("records of both partitions", take_some, timeout=30)
        assert len(taken) < RECORDS
        # Both partitions' high watermarks come with their first fetch responses.
        wait_for(
            "the backlog to be everything not yet handed out",
            lambda: backlog(consumer) == RECORDS - len(taken),
            timeout=30,
        )

        def take_all() -> bool:
            taken.extend(consumer.consume(RECORDS, 0.2))
            return len(taken) >= RECORDS

        wait_for("every record", take_all, timeout=30)
        assert len(taken) == RECORDS
        assert backlog(consumer) == 0
    finally:
        consumer.close()
