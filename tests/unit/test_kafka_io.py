"""Kafka plumbing that needs no broker: take(), lag from statistics, URL masking."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from loginpipe.kafka_io import LagFromStats, Rebalances, backlog, take
from loginpipe.metrics import Metrics
from loginpipe.settings import AggregatorSettings, describe, load


class FakeConsumer:
    """Hands out scripted batches; may run a 'rebalance' inside a call, as librdkafka does."""

    def __init__(
        self,
        batches: list[list[Message]],
        rebalance_on_call: int | None = None,
        revoke: list[int] | None = None,
    ):
        self.batches = batches
        self.calls = 0
        self.rebalance_on_call = rebalance_on_call
        self.revoke = [TopicPartition("t", p) for p in revoke or []]
        self.rebalances = Rebalances()

    def consume(self, n: int, timeout: float) -> list[Message]:
        self.calls += 1
        if self.calls == self.rebalance_on_call:
            self.rebalances.revoked(self.revoke)
            self.rebalances.assigned()
        return self.batches.pop(0)[:n] if self.batches else []


def msg(offset: int, partition: int = 0) -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=b"{}")


def test_take_returns_what_is_there_without_waiting_for_a_full_batch() -> None:
    c = FakeConsumer([[msg(0), msg(1)]])
    assert [m.offset() for m in take(c, 1000, 0.5, c.rebalances)] == [0, 1]
    assert c.calls == 1


def test_take_waits_for_one_message_then_drains_the_rest() -> None:
    c = FakeConsumer([[], [msg(0)], [msg(1), msg(2)]])
    assert [m.offset() for m in take(c, 1000, 0.5, c.rebalances)] == [0, 1, 2]


def test_take_drops_a_message_whose_partition_was_revoked_meanwhile() -> None:
    # Eager: every partition revoked (and maybe handed back, restarting from the commit).
    c = FakeConsumer([[], [msg(0)], [msg(7)]], rebalance_on_call=3, revoke=[0])
    assert [m.offset() for m in take(c, 1000, 0.5, c.rebalances)] == [7]


def test_take_keeps_a_message_whose_partition_a_cooperative_rebalance_left_alone() -> None:
    # Partition 0 keeps its position past offset 5: dropping 5 would lose it.
    c = FakeConsumer([[], [msg(5)], [msg(6), msg(3, partition=2)]], rebalance_on_call=3, revoke=[1])
    assert [(m.partition(), m.offset()) for m in take(c, 1000, 0.5, c.rebalances)] == [
        (0, 5),
        (0, 6),
        (2, 3),
    ]


def test_a_partition_revoked_before_the_message_was_taken_does_not_drop_it() -> None:
    r = Rebalances()
    r.revoked([TopicPartition("t", 0)])
    generation = r.count
    r.assigned()
    assert r.kept_since(generation, msg(4))
    r.revoked([TopicPartition("t", 0)])
    assert not r.kept_since(generation, msg(4))


def test_lag_comes_from_what_was_consumed_not_from_the_consumers_own_commits() -> None:
    m = Metrics("consumer")
    stats = {
        "topics": {
            "user-login": {
                "partitions": {
                    "0": {
                        "fetch_state": "active",
                        "app_offset": 90,
                        "ls_offset": 100,
                        "consumer_lag": 5000,
                    },
                    "-1": {"fetch_state": "none"},
                }
            }
        }
    }
    LagFromStats(m)(json.dumps(stats))
    assert m.consumer_lag.labels("user-login", "0")._value.get() == 10


def test_redis_url_credentials_never_reach_the_logs() -> None:
    s = load(AggregatorSettings, {"LOGINPIPE_REDIS_URL": "redis://:s3cr3t@redis:6379/0"})
    shown = describe(s)["LOGINPIPE_REDIS_URL"]
    assert "s3cr3t" not in shown
    assert shown == "redis://***@redis:6379/0"


def test_a_call_that_hangs_past_its_timeout_is_reported_stuck_instead_of_blocking() -> None:
    import threading
    import time

    from loginpipe.kafka_io import CallStuck, call_bounded

    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CallStuck, match=r"0\.2s timeout"):
        call_bounded(lambda t: release.wait(), 0.2, 0.3)  # ignores its timeout, as librdkafka#5456
    assert time.monotonic() - started < 5
    release.set()


def test_a_bounded_call_returns_or_raises_what_the_call_does() -> None:
    from loginpipe.kafka_io import call_bounded

    seen: list[float] = []
    call_bounded(seen.append, 1.5, 1.0)
    assert seen == [1.5]

    def fail(t: float) -> None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "late"))

    with pytest.raises(KafkaException, match="late"):
        call_bounded(fail, 1.0, 1.0)


class WatermarkConsumer:
    """Positions and cached high watermarks, as librdkafka keeps them."""

    def __init__(self, positions: dict[int, int], highs: dict[int, int]) -> None:
        self.positions = positions
        self.highs = highs

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", p) for p in self.positions]

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("t", tp.partition, self.positions[tp.partition]) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached, "the backlog must not cost a request"
        if tp.partition not in self.highs:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 0, self.highs[tp.partition]


def test_the_backlog_counts_what_waits_behind_each_known_position_and_nothing_else() -> None:
    consumer = WatermarkConsumer(
        # 0: 700 waiting; 1: caught up; 2: not handed a record yet (-1001); 3: unknown to the
        # client; 4: a watermark older than the position (a fetch not back yet).
        positions={0: 300, 1: 50, 2: -1001, 3: 10, 4: 90},
        highs={0: 1000, 1: 50, 2: 500, 4: 80},
    )
    assert backlog(consumer) == 700  # type: ignore[arg-type]
    assert backlog(WatermarkConsumer({}, {})) == 0  # type: ignore[arg-type]
