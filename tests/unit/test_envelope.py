"""The error envelope: reason, problems, source coordinates, original bytes unchanged."""

from __future__ import annotations

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
