"""The error envelope: reason, problems, source coordinates, original bytes unchanged."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loginpipe import envelope
from loginpipe.validation import Invalid, validate


def build(value: bytes | None, key: bytes | None = b"user-1") -> dict:
    result = validate(value)
    assert isinstance(result, Invalid)
    return orjson.loads(
        envelope.build(
            result,
            topic="user-login",
            partition=3,
            offset=42,
            timestamp_ms=1_764_000_000_123,
            key=key,
            value=value,
            detected_at_ms=1_764_000_000_456,
        )
    )


def test_the_envelope_carries_reason_problems_and_source_coordinates() -> None:
    env = build(b'{"user_id": "u", "device_type": "web"}')
    assert env["schema_version"] == 1
    assert env["reason"] == "missing_field"
    assert {p["field"] for p in env["problems"]} >= {
        "app_version",
        "ip",
        "timestamp",
        "device_type",
    }
    assert env["source"] == {
        "topic": "user-login",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1_764_000_000_123,
        "key": {"encoding": "utf-8", "data": "user-1"},
    }
    assert env["original"] == {
        "encoding": "utf-8",
        "data": '{"user_id": "u", "device_type": "web"}',
    }


def test_binary_originals_are_base64_and_tombstones_are_null() -> None:
    env = build(b"\xff\x00\x01", key=b"\xfe")
    assert env["original"]["encoding"] == "base64"
    assert env["source"]["key"]["encoding"] == "base64"
    env = build(None, key=None)
    assert env["original"] == {"encoding": None, "data": None}
    assert env["source"]["key"] == {"encoding": None, "data": None}


@given(st.one_of(st.none(), st.binary(max_size=200)))
def test_the_original_bytes_come_back_unchanged(raw: bytes | None) -> None:
    assert envelope.decode_bytes(envelope.encode_bytes(raw)) == raw


@pytest.mark.parametrize("raw", [b"", b"[]", b"\xff"])
def test_every_envelope_is_json(raw: bytes) -> None:
    assert isinstance(build(raw), dict)


def test_a_large_original_is_truncated_with_its_size_and_hash_so_the_envelope_fits() -> None:
    import hashlib

    for raw in (b"\x01" * 900_000, b"\xff" * 900_000, b'"' * 900_000):
        env = build(raw)
        assert env["reason"] == "message_too_large"
        assert env["original"]["truncated"] is True
        assert env["original"]["size"] == 900_000
        assert env["original"]["sha256"] == hashlib.sha256(raw).hexdigest()
        assert len(orjson.dumps(env)) < 200_000


def sized(value: bytes | None, key: bytes | None, max_record_bytes: int) -> tuple[bytes, dict]:
    result = validate(value)
    assert isinstance(result, Invalid)
    body = envelope.build(
        result,
        topic="user-login",
        partition=1,
        offset=7,
        timestamp_ms=None,
        key=key,
        value=value,
        detected_at_ms=1,
        max_record_bytes=max_record_bytes,
    )
    return body, orjson.loads(body)


def record_size(body: bytes, key: bytes | None) -> int:
    return len(body) + len(envelope.record_key(key) or b"") + envelope.RECORD_OVERHEAD


def test_a_huge_key_and_an_escape_heavy_value_still_make_a_record_that_fits() -> None:
    # 600 KB key and 64 KiB of \x01: escaped, about 1 MB, over Kafka's default record limit.
    key, value = b"k" * 600_000, b"\x01" * (64 * 1024)
    body, env = sized(value, key, envelope.DEFAULT_MAX_RECORD_BYTES)
    assert record_size(body, key) <= envelope.DEFAULT_MAX_RECORD_BYTES
    assert (
        envelope.record_key(key)
        == b"sha256:" + __import__("hashlib").sha256(key).hexdigest().encode()
    )
    assert env["source"]["key"]["truncated"] is True and env["source"]["key"]["size"] == 600_000
    assert env["source"]["partition"] == 1 and env["source"]["offset"] == 7
    assert envelope.decode_bytes(env["original"]) == value  # it fits whole: the key was cut
    # On a topic with smaller records, the value is cut too, its coordinates and hash kept.
    body, env = sized(value, key, 200_000)
    assert record_size(body, key) <= 200_000
    original = env["original"]
    assert original["truncated"] is True and original["size"] == 64 * 1024
    assert original["sha256"] == hashlib.sha256(value).hexdigest()
    assert value.startswith(envelope.decode_bytes(original) or b"")


@given(
    st.binary(max_size=70_000) | st.text(max_size=20_000).map(lambda t: t.encode()),
    st.none() | st.binary(max_size=3000),
    st.integers(min_value=4_000, max_value=1_000_000),
)
def test_any_input_gives_an_envelope_within_the_record_limit(
    value: bytes, key: bytes | None, limit: int
) -> None:
    result = validate(value)
    if not isinstance(result, Invalid):
        return
    body, env = sized(value, key, limit)
    assert record_size(body, key) <= limit
    kept = envelope.decode_bytes(env["original"]) or b""
    assert value.startswith(kept)
    if not env["original"].get("truncated"):
        assert kept == value


def test_a_limit_too_small_for_any_envelope_is_an_error_that_says_so() -> None:
    with pytest.raises(envelope.EnvelopeTooLarge, match="does not fit records of 1100 bytes"):
        sized(b"x" * 10, b"k", 1100)
