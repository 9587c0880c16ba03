"""The error summary (``loginpipe errors``): counts, bounded top lists, samples, time windows."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from loginpipe import envelope
from loginpipe.error_report import ErrorSummary, TopK, parse_when
from loginpipe.events import GroundTruth, generate
from loginpipe.validation import Invalid, validate


def envelopes(count: int, seed: int) -> tuple[list[bytes], GroundTruth]:
    """Error envelopes as the consumer writes them for a seeded generator run."""
    truth, out = GroundTruth(), []
    for i, ev in enumerate(generate(count, seed=seed, bad_share=0.5)):
        truth.add(ev)
        result = validate(ev.value)
        if isinstance(result, Invalid):
            out.append(
                envelope.build(
                    result,
                    topic="user-login",
                    partition=i % 3,
                    offset=i,
                    timestamp_ms=1_764_000_000_000 + i,
                    key=ev.key,
                    value=ev.value,
                    detected_at_ms=1_764_000_000_500 + i,
                )
            )
    return out, truth


def test_the_summary_counts_each_reason_as_the_generator_made_them() -> None:
    records, truth = envelopes(4000, seed=7)
    s = ErrorSummary()
    for offset, value in enumerate(records):
        s.add(value, partition=0, offset=offset, timestamp_ms=1_764_000_000_000 + offset)
    assert s.records == truth.invalid == len(records)
    assert dict(s.by_reason) == dict(truth.invalid_by_reason)
    assert sum(s.by_source.values()) == truth.invalid
    assert set(s.by_source) == {"user-login/0", "user-login/1", "user-login/2"}
    assert s.first_ms == 1_764_000_000_000 and s.last_ms == 1_764_000_000_000 + len(records) - 1
    # Every reason has samples, with the source coordinates and original bytes.
    for reason, kept in s.samples.items():
        assert 1 <= len(kept) <= 3, reason
        assert {"topic", "partition", "offset"} <= set(kept[0]["source"])
    d = s.as_dict()
    assert orjson.loads(orjson.dumps(d)) == d  # --json prints it as it is
    text = s.render()
    for reason, n in truth.invalid_by_reason.items():
        assert reason in text and str(n) in text


def test_offending_values_name_the_bad_values_of_each_field() -> None:
    s = ErrorSummary()
    bad = [
        b'{"user_id":"u","app_version":"1.x","device_type":"toaster","ip":"1.2.3.4","timestamp":5}'
    ]
    bad.append(
        b'{"user_id":"u","app_version":"1.x","device_type":"ios","ip":"1.2.3","timestamp":5}'
    )
    bad.append(b'{"user_id":"u","device_type":"ios","ip":"1.2.3.4","timestamp":5}')
    for i, raw in enumerate(bad):
        result = validate(raw)
        assert isinstance(result, Invalid)
        value = envelope.build(
            result, topic="t", partition=0, offset=i, timestamp_ms=None, key=None, value=raw,
            detected_at_ms=0,
        )  # fmt: skip
        s.add(value, partition=1, offset=i, timestamp_ms=None)
    top = s.as_dict()["top_values"]
    assert top["app_version"][0] == {"value": '"1.x"', "count": 2}
    assert top["app_version"][1] == {"value": "(absent)", "count": 1}
    assert top["device_type"] == [{"value": '"toaster"', "count": 1}]
    assert top["ip"] == [{"value": '"1.2.3"', "count": 1}]
    assert s.by_problem["missing_field:app_version"] == 1


def test_records_that_are_not_envelopes_are_counted_apart_not_fatal() -> None:
    s = ErrorSummary()
    s.add(b"not json", partition=2, offset=40, timestamp_ms=None)
    s.add(b'{"reason": "x"}', partition=2, offset=41, timestamp_ms=None)
    s.add(None, partition=2, offset=42, timestamp_ms=None)
    assert s.records == 3 and s.unreadable == 3
    assert s.as_dict()["unreadable_first"] == {"partition": 2, "offset": 40}
    assert "3 not error envelopes" in s.render()


def test_top_k_is_exact_within_its_capacity() -> None:
    t = TopK(capacity=5)
    for item, n in {"a": 5, "b": 3, "c": 1}.items():
        for _ in range(n):
            t.add(item)
    assert t.exact and t.top(2) == [("a", 5, 0), ("b", 3, 0)]


def test_top_k_keeps_heavy_hitters_and_bounds_its_counts_beyond_capacity() -> None:
    rng = random.Random(3)
    stream = [f"heavy-{i}" for i in range(5) for _ in range(400)]
    stream += [f"rare-{i}" for i in range(5000)]  # 5000 distinct values seen once
    rng.shuffle(stream)
    truth = Counter(stream)
    t = TopK(capacity=50)
    for item in stream:
        t.add(item)
    assert len(t.counts) == 50  # bounded memory
    assert not t.exact
    top = t.top(5)
    assert {item for item, _, _ in top} == {f"heavy-{i}" for i in range(5)}
    for item, count, error in t.top(50):
        assert count - error <= truth[item] <= count, item


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 1_000_000_000_000 - 90_000),
        ("15m", 1_000_000_000_000 - 900_000),
        ("1h", 1_000_000_000_000 - 3_600_000),
        ("2d", 1_000_000_000_000 - 172_800_000),
        ("1764072000123", 1_764_072_000_123),
        ("2026-11-25T12:00:00Z", 1_795_608_000_000),
        ("2026-11-25T13:00:00+01:00", 1_795_608_000_000),
        ("2026-11-25T12:00:00", 1_795_608_000_000),
    ],
)
def test_since_and_until_take_durations_epoch_milliseconds_and_iso_times(
    text: str, expected: int
) -> None:
    assert parse_when(text, now_ms=1_000_000_000_000) == expected


def test_a_time_that_is_none_says_what_to_give() -> None:
    with pytest.raises(ValueError, match="duration ago"):
        parse_when("yesterday", now_ms=0)
