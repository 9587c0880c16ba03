"""The aggregator's pure part: grouping a batch by partition and the script's arguments."""

from __future__ import annotations

from confluent_kafka import Message

from loginpipe.aggregator import device_of, plan_batch, script_args
from loginpipe.envelope import HEADER_DEVICE_TYPE


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
