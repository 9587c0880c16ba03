"""The aggregator's atomic Redis write: a batch is applied once, whatever is replayed."""

from __future__ import annotations

import uuid

import pytest
import redis

from loginpipe.redis_store import APPLY_BATCH_LUA, position_field, split_hash

pytestmark = pytest.mark.integration


@pytest.fixture
def apply(redis_url: str):
    """Run the script for (partition, expected position, first, next, counts) tuples."""
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(APPLY_BATCH_LUA)
    key = f"test:{uuid.uuid4().hex[:8]}:device_counts"

    def run(*parts: tuple[int, str, int, int, dict[str, int]]):
        args: list = [len(parts)]
        for p, expected, first, nxt, counts in parts:
            args += [position_field("t", p), expected, first, nxt, len(counts)]
            for k, v in counts.items():
                args += [k, v]
        outcomes, _ = script(keys=[key], args=args)
        return [o.decode() for o in outcomes], state()

    def state() -> dict[str, int]:
        """The counters present (positions left out)."""
        return {
            k.decode(): int(v)
            for k, v in client.hgetall(key).items()
            if not k.startswith(b"offset:")
        }

    def set_position(p: int, offset: int) -> None:
        client.hset(key, position_field("t", p), offset)

    run.client = client  # type: ignore[attr-defined]
    run.key = key  # type: ignore[attr-defined]
    run.state = state  # type: ignore[attr-defined]
    run.set_position = set_position  # type: ignore[attr-defined]
    return run


def test_a_batch_replayed_after_a_crash_is_not_counted_twice(apply) -> None:
    assert apply((0, "", 0, 10, {"ios": 6, "android": 4})) == (["ok"], {"ios": 6, "android": 4})
    # The replay expects the position it read before the crash; Redis says 10.
    assert apply((0, "", 0, 10, {"ios": 6, "android": 4})) == (["10"], {"ios": 6, "android": 4})


def test_partitions_are_applied_independently(apply) -> None:
    apply((0, "", 0, 10, {"ios": 10}))
    outcomes, state = apply((0, "", 5, 12, {"ios": 7}), (1, "", 0, 3, {"android": 3}))
    assert outcomes == ["10", "ok"]
    assert state == {"ios": 10, "android": 3}


def test_a_gap_in_offsets_from_transaction_markers_is_accepted(apply) -> None:
    apply((2, "", 0, 10, {"ios": 9}))
    outcomes, state = apply((2, "10", 11, 20, {"ios": 8}))
    assert outcomes == ["ok"]
    assert state == {"ios": 17}


def test_a_redis_rollback_is_detected_instead_of_skipping_the_lost_range(apply) -> None:
    apply((0, "", 0, 10, {"ios": 10}))
    apply((0, "10", 10, 20, {"ios": 10}))
    # Redis loses the second write (AOF everysec, failover): the position goes back to 10.
    apply.set_position(0, 10)
    apply.client.hset(apply.key, "ios", 10)
    outcomes, state = apply((0, "20", 20, 30, {"ios": 10}))
    assert outcomes == ["10"], "the aggregator must be told to re-read from 10"
    assert state == {"ios": 10}


def test_a_writer_with_a_stale_position_cannot_overwrite_a_newer_one(apply) -> None:
    apply.set_position(0, 100)
    assert apply((0, "100", 100, 101, {"ios": 1}))[0] == ["ok"]
    # A second owner that read 100 before the first wrote tries a longer batch: refused.
    assert apply((0, "100", 100, 600, {"ios": 500})) == (["101"], {"ios": 1})


def test_a_batch_before_the_stored_position_is_refused(apply) -> None:
    apply.set_position(0, 500)
    assert apply((0, "500", 0, 50, {"ios": 50})) == (["500"], {})


def test_counts_and_positions_share_one_key_and_go_together(apply) -> None:
    apply((0, "", 0, 10, {"ios": 6, "android": 4}), (1, "", 0, 5, {"ios": 5}))
    raw = {k.decode(): v.decode() for k, v in apply.client.hgetall(apply.key).items()}
    counts, positions = split_hash(raw)
    assert counts == {"ios": 11, "android": 4}
    assert positions == {"t": {0: 10, 1: 5}}
    # Deleted (or evicted), the key takes both: the replay from the start counts once.
    apply.client.delete(apply.key)
    assert apply((0, "", 0, 10, {"ios": 6, "android": 4})) == (["ok"], {"ios": 6, "android": 4})


def test_a_counter_that_is_not_an_integer_fails_the_script_before_any_change(apply) -> None:
    apply((0, "", 0, 10, {"ios": 1}))
    apply.client.hset(apply.key, "android", "oops")
    with pytest.raises(redis.ResponseError, match=r"android .* is not an integer"):
        apply((0, "10", 10, 12, {"ios": 1}), (1, "", 0, 1, {"android": 1}))
    assert apply.client.hget(apply.key, "ios") == b"1"  # partition 0 untouched
    assert apply.client.hget(apply.key, position_field("t", 0)) == b"10"
