"""`loginpipe replay` on the real broker and Redis: after a rule change, exactly once.

"Yesterday's rules" here refused device types that were not already lower case ("iOS",
"ANDROID"); today's accept and normalise them. The errors topic holds what yesterday's consumer
wrote (envelopes built by the project's own `envelope.build`), the processed topic what it
accepted, and the aggregator counts. A replay of `invalid_device_type` must move exactly the
casing records to the processed topic; a second replay, or one after `kill -9`, nothing more;
the Redis counts end equal to what today's rules make of the inputs.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from loginpipe import envelope
from loginpipe.events import generate
from loginpipe.validation import Invalid, Problem, Reason, Valid, validate
from tests.integration.conftest import Pipeline, wait_for

pytestmark = pytest.mark.integration

DEVICE = envelope.HEADER_DEVICE_TYPE


def yesterdays(raw: bytes) -> Valid | Invalid:
    """Today's rules, plus yesterday's refusal of device types not written in lower case."""
    result = validate(raw)
    if isinstance(result, Valid):
        typed = orjson.loads(raw)["device_type"]
        if typed != typed.lower():
            problem = Problem(
                Reason.INVALID_DEVICE_TYPE,
                "device_type",
                f"device_type {typed!r} is not lower case",
            )
            return Invalid(Reason.INVALID_DEVICE_TYPE, (problem,))
    return result


def routed_yesterday(pl: Pipeline, values: list[bytes]) -> Counter[str]:
    """Write what yesterday's consumer made of ``values``; today's counts by device."""
    processed: dict[str, list[tuple[bytes, bytes]]] = {}
    errors: list[tuple[bytes, bytes]] = []
    today: Counter[str] = Counter()
    for i, raw in enumerate(values):
        key = f"user-{i}".encode()
        now = validate(raw)
        if isinstance(now, Valid):
            today[now.device_type] += 1
        result = yesterdays(raw)
        if isinstance(result, Valid):
            processed.setdefault(result.device_type, []).append((key, result.value))
        else:
            body = envelope.build(
                result, topic=pl.input, partition=0, offset=i, timestamp_ms=None, key=key,
                value=raw, detected_at_ms=0,
            )  # fmt: skip
            errors.append((envelope.record_key(key) or b"", body))
    for device, records in processed.items():
        pl.produce_raw(records, topic=pl.processed, headers=[(DEVICE, device.encode())])
    pl.produce_raw(errors, topic=pl.errors)
    return today


def today_valid(raw: bytes) -> bool:
    return isinstance(validate(raw), Valid)


def replay(pl: Pipeline, *args: str, **env: str) -> dict:
    out = pl.run_cli("replay", "--json", *args, **env)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def ledger_size(pl: Pipeline) -> int:
    """Markers committed on the replay ledger (read_committed)."""
    return len(pl.read_all(pl.replayed, timeout=5.0))


def test_a_replay_after_a_rule_change_routes_exactly_the_newly_valid_once(make_pipeline) -> None:
    pl = make_pipeline(partitions=2)
    values = [ev.value for ev in generate(3000, seed=5, bad_share=0.4, start_time=1_764_000_000)]
    today = routed_yesterday(pl, values)
    casing = sum(1 for v in values if isinstance(yesterdays(v), Invalid) and today_valid(v))
    assert casing > 50  # the generator's device_casing kind
    pl.service("aggregator", "aggregate").start()
    wait_for(
        "yesterday's counts", lambda: sum(pl.counts().values()) == sum(today.values()) - casing, 60
    )

    dry = replay(pl, "--reason=invalid_device_type", "--dry-run")
    assert dry["replayed"] == casing and ledger_size(pl) == 0
    first = replay(pl, "--reason=invalid_device_type")
    assert first["replayed"] == casing
    assert first["still_invalid"] == first["still_invalid_by_reason"]["invalid_device_type"] > 0
    assert first["not_selected"] > 0  # the other reasons stay untouched
    wait_for("today's counts", lambda: pl.counts() == dict(today), 60)

    # Twice, and with every reason: nothing is routed again.
    again = replay(pl)
    assert again["replayed"] == 0 and again["already_replayed"] == casing
    assert ledger_size(pl) == casing
    processed = pl.read_all(pl.processed, expected=sum(today.values()))
    assert len(processed) == sum(today.values())
    assert len({r.value for r in processed}) == len(processed)  # no record twice
    assert pl.counts() == dict(today)


def test_a_replay_killed_mid_way_and_run_again_routes_each_record_once(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    values = [
        orjson.dumps(
            {
                "user_id": f"user-{i}",
                "app_version": "1.2.3",
                "device_type": ("iOS", "Android")[i % 2],
                "ip": "10.0.0.1",
                "timestamp": 1_764_000_000 + i,
            }
        )
        for i in range(20_000)
    ]
    today = routed_yesterday(pl, values)
    pl.service("aggregator", "aggregate").start()
    # One record per transaction: slow enough to be killed half-way.
    run = pl.service("replay", "replay", LOGINPIPE_REPLAY_BATCH_SIZE="1").start()
    wait_for("some replay transactions to commit", lambda: ledger_size(pl) > 200, 60)
    run.kill()
    done = ledger_size(pl)
    assert 0 < done < len(values), "the replay was not killed mid-way"
    second = replay(pl)
    assert second["replayed"] + second["already_replayed"] == len(values)
    assert second["already_replayed"] == done
    processed = pl.read_all(pl.processed, expected=len(values))
    assert len(processed) == len(values) == len({r.value for r in processed})
    wait_for("exact counts", lambda: pl.counts() == dict(today), 60)


def test_a_replay_refuses_an_unknown_reason_and_a_missing_ledger_topic(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    out = pl.run_cli("replay", "--reason=bogus")
    assert out.returncode == 2 and "is not a reason code" in out.stderr, out.stderr
    out = pl.run_cli("replay", LOGINPIPE_TOPIC_REPLAYED="no-such-ledger")
    assert out.returncode == 3 and "loginpipe topics" in out.stderr, out.stderr
