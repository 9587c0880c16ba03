"""The error envelope written to the error topic for every invalid input. Pure."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from loginpipe.validation import DEVICE_TYPES, Invalid

SCHEMA_VERSION = 1
HEADER_REASON = "loginpipe-reason"
HEADER_DEVICE_TYPE = "loginpipe-device-type"
# The header list of a processed record, one per device type, built once and shared by every
# record the consumer (and a replay) produces.
DEVICE_HEADERS: dict[str, list[tuple[str, str | bytes | None]]] = {
    d: [(HEADER_DEVICE_TYPE, d.encode())] for d in DEVICE_TYPES
}


ORIGINAL_LIMIT = 64 * 1024  # whole originals up to this size (MAX_EVENT_BYTES)
TRUNCATED_KEEP = 16 * 1024  # of a larger one, this much, so the envelope stays small
KEY_LIMIT = 1024  # an input key up to this size is also the error record's key
# What a record costs besides its key and value: Kafka's record framing, the reason header, and
# room for librdkafka's own accounting. An envelope is sized to fit the limit minus this.
RECORD_OVERHEAD = 1024
# librdkafka's default message.max.bytes (and below the broker's default max.message.bytes).
DEFAULT_MAX_RECORD_BYTES = 1_000_000


class EnvelopeTooLarge(Exception):
    """Even with nothing of the original kept, the envelope does not fit the record limit."""


def encode_bytes(data: bytes | None, keep: int = ORIGINAL_LIMIT) -> dict[str, Any]:
    """Original bytes, unchanged: as text when they are UTF-8, else base64, saying which.

    Bytes over ``keep`` (``ORIGINAL_LIMIT`` unless the record limit asks for less) keep only
    their first bytes (``TRUNCATED_KEEP`` of them, or ``keep`` when smaller), with the full
    size and SHA-256 and ``"truncated": true``: the source coordinates still point at the whole
    record.
    """
    if data is None:
        return {"encoding": None, "data": None}
    extra: dict[str, Any] = {}
    if len(data) > keep:
        extra = {"truncated": True, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        data = data[: min(keep, TRUNCATED_KEEP)]
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


def record_key(key: bytes | None) -> bytes | None:
    """The error record's Kafka key: the input's key, or for a huge one its SHA-256.

    A key can be almost as large as Kafka allows; repeated on the error record beside the
    envelope, it would not fit. The envelope keeps (a truncated copy of) the key itself.
    """
    if key is None or len(key) <= KEY_LIMIT:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


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
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> bytes:
    """The envelope, sized so that the error record (key included) fits ``max_record_bytes``.

    JSON escaping can make text six times larger (a control character becomes ``\\u0001``):
    whatever the input's key and value, the kept parts are cut down until the record fits.
    """
    budget = max_record_bytes - RECORD_OVERHEAD - len(record_key(key) or b"")
    keep_value, keep_key = ORIGINAL_LIMIT, ORIGINAL_LIMIT
    while True:
        body = orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "reason": invalid.reason.value,
                "problems": [p.as_dict() for p in invalid.problems],
                "source": {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp_ms": timestamp_ms,
                    "key": encode_bytes(key, keep_key),
                },
                "original": encode_bytes(value, keep_value),
                "detected_at_ms": detected_at_ms,
            }
        )
        if len(body) <= budget:
            return body
        kept_value = min(keep_value, len(value or b""))
        kept_key = min(keep_key, len(key or b""))
        if kept_value == 0 and kept_key == 0:
            raise EnvelopeTooLarge(
                f"an error envelope of {len(body)} bytes does not fit records of "
                f"{max_record_bytes} bytes, even without the original's bytes"
            )
        # Halve the larger kept part (the value first); each at most TRUNCATED_KEEP once cut.
        if kept_value >= kept_key:
            keep_value = min(kept_value, TRUNCATED_KEEP) // 2
        else:
            keep_key = min(kept_key, TRUNCATED_KEEP) // 2
