"""The error envelope written to the error topic for every invalid input. Pure."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from loginpipe.validation import Invalid

SCHEMA_VERSION = 1
HEADER_REASON = "loginpipe-reason"
HEADER_DEVICE_TYPE = "loginpipe-device-type"


ORIGINAL_LIMIT = 64 * 1024  # whole originals up to this size (MAX_EVENT_BYTES)
TRUNCATED_KEEP = 16 * 1024  # of a larger one, this much, so the envelope stays small


def encode_bytes(data: bytes | None) -> dict[str, Any]:
    """Original bytes, unchanged: as text when they are UTF-8, else base64, saying which.

    Bytes over ``ORIGINAL_LIMIT`` keep only their first ``TRUNCATED_KEEP`` bytes, with the
    full size and SHA-256, so that an envelope always fits in a Kafka record (JSON escaping
    can make text six times larger).
    """
    if data is None:
        return {"encoding": None, "data": None}
    extra: dict[str, Any] = {}
    if len(data) > ORIGINAL_LIMIT:
        extra = {"truncated": True, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        data = data[:TRUNCATED_KEEP]
    try:
        return {"encoding": "utf-8", "data": data.decode("utf-8"), **extra}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii"), **extra}


def decode_bytes(encoded: dict[str, Any]) -> bytes | None:
    """Inverse of ``encode_bytes``: the original bytes back (for replays and tests)."""
    if encoded["encoding"] is None:
        return None
    if encoded["encoding"] == "base64":
        return base64.b64decode(encoded["data"])
    data: str = encoded["data"]
    return data.encode("utf-8", "surrogatepass")


def build(
    invalid: Invalid,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    detected_at_ms: int,
) -> bytes:
    envelope = {
        "schema_version": SCHEMA_VERSION,
        "reason": invalid.reason.value,
        "problems": [p.as_dict() for p in invalid.problems],
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "key": encode_bytes(key),
        },
        "original": encode_bytes(value),
        "detected_at_ms": detected_at_ms,
    }
    return orjson.dumps(envelope)
