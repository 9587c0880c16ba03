"""The aggregator's atomic Redis write: a batch is applied once, whatever is replayed."""

from __future__ import annotations

import uuid

import pytest
import redis

from loginpipe.aggregator import APPLY_BATCH_LUA

pytestmark = pytest.mark.integration


@pytest.fixture
def apply(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(APPLY_BATCH_LUA)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    keys = [prefix + "counts", prefix + "positions"]

    def run(*parts: tuple[int, int, int, dict[str, int]]):
        args: list = [len(parts)]
        for p, first, nxt, counts in parts:
            args += [p, first, nxt, len(counts)]
            for k, v in counts.items():
                args += [k, v]
        applied, _ = script(keys=keys, args=args)
        state = {k.decode(): int(v) for k, v in client.hgetall(keys[0]).items()}
        return applied, state

    return run


def test_a_batch_replayed_after_a_crash_is_not_counted_twice(apply) -> None:
    assert apply((0, 0, 10, {"ios": 6, "android": 4})) == ([1], {"ios": 6, "android": 4})
    assert apply((0, 0, 10, {"ios": 6, "android": 4})) == ([0], {"ios": 6, "android": 4})


def test_partitions_are_applied_independently(apply) -> None:
    apply((0, 0, 10, {"ios": 10}))
    applied, state = apply((0, 5, 12, {"ios": 7}), (1, 0, 3, {"android": 3}))
    assert applied == [0, 1]
    assert state == {"ios": 10, "android": 3}


def test_a_gap_in_offsets_from_transaction_markers_is_accepted(apply) -> None:
    apply((2, 0, 10, {"ios": 9}))
    applied, state = apply((2, 11, 20, {"ios": 8}))
    assert applied == [1]
    assert state == {"ios": 17}
