"""The aggregator's pure part: grouping a batch by partition, the script's arguments, and
its offset commits for monitoring."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from confluent_kafka import Message, TopicPartition

from loginpipe.aggregator import Aggregator, device_of, plan_batch, script_args
from loginpipe.envelope import HEADER_DEVICE_TYPE
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import AggregatorSettings, load


def msg(partition: int, offset: int, device: str | None, value: bytes = b"{}") -> Message:
    headers = [(HEADER_DEVICE_TYPE, device.encode())] if device else None
    return Message(topic="p", partition=partition, offset=offset, value=value, headers=headers)


def test_a_batch_is_grouped_by_partition_with_its_offset_range_and_counts() -> None:
    plan, counted, uncountable = plan_batch(
        [msg(0, 10, "ios"), msg(1, 5, "android"), msg(0, 11, "ios"), msg(0, 14, "android")]
    )
    assert counted == 4 and uncountable == 0
    assert (plan[0].first, plan[0].next, dict(plan[0].counts)) == (10, 15, {"ios": 2, "android": 1})
    assert (plan[1].first, plan[1].next, dict(plan[1].counts)) == (5, 6, {"android": 1})
    assert script_args("t", plan, {0: "10"}) == [
        2,
        "offset:t:0",
        "10",
        10,
        15,
        2,
        "ios",
        2,
        "android",
        1,
        "offset:t:1",
        "",
        5,
        6,
        1,
        "android",
        1,
    ]


def test_the_device_type_comes_from_the_header_else_from_the_json() -> None:
    assert device_of(msg(0, 0, "ios")) == "ios"
    assert device_of(msg(0, 0, None, b'{"device_type": "Android"}')) == "android"
    assert device_of(msg(0, 0, None, b"not json")) is None
    assert device_of(msg(0, 0, "windows")) is None


def test_records_without_a_device_type_are_not_counted_but_advance_the_position() -> None:
    plan, counted, uncountable = plan_batch([msg(2, 0, None, b"[]"), msg(2, 1, "ios")])
    assert (counted, uncountable) == (1, 1)
    assert (plan[2].first, plan[2].next) == (0, 2)


def test_the_hash_splits_into_counts_and_positions_per_topic() -> None:
    from loginpipe.redis_store import position_field, split_hash

    raw = {"ios": "3", position_field("a:b", 0): "10", position_field("a:b", 2): "7"}
    assert split_hash(raw) == ({"ios": 3, "android": 0}, {"a:b": {0: 10, 2: 7}})


class CommitRecorder:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[int, int]], bool]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))


def test_the_aggregator_commits_offsets_for_monitoring_once_a_second_while_busy_and_at_once_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loginpipe import aggregator as agg_module

    now = [100.0]
    clock = SimpleNamespace(
        monotonic=lambda: now[0], time=time.time, perf_counter=time.perf_counter
    )
    monkeypatch.setattr(agg_module, "time", clock)
    metrics = Metrics("aggregator")
    agg = Aggregator(load(AggregatorSettings, {}), metrics, Health(metrics), Stopper())
    consumer = CommitRecorder()
    agg.consumer = consumer  # type: ignore[assignment]
    agg.last_commit = now[0]
    for i in range(8):  # eight busy batches within the second: no commit yet
        agg.uncommitted[i % 2] = 100 + i
        agg._commit_for_monitoring()
        now[0] += 0.125
    assert consumer.commits == []
    agg.uncommitted[0] = 200
    agg._commit_for_monitoring()  # a second since the last: the latest offset of each
    assert consumer.commits == [([(0, 200), (1, 107)], True)]
    agg.uncommitted[1] = 300
    agg._commit_for_monitoring(now=True)  # nothing more came: at once, lag shows 0
    agg._commit_for_monitoring(now=True)  # nothing new: nothing sent
    agg.uncommitted[1] = 301
    agg._commit_for_monitoring(now=True)  # at exit: sent, for close() to finish
    assert consumer.commits[1:] == [([(1, 300)], True), ([(1, 301)], True)]
