"""The schema registry's wire format, beside plain JSON, for the consumer's output topics.

A record in the wire format is a zero byte, the 4-byte id (big-endian) of its schema in the
registry, then the JSON (Confluent's framing, which confluent-kafka's ``JSONDeserializer``
and every registry-aware reader understand). JSON text never starts with a zero byte, so a
reader tells the two apart by the first byte and takes either (``payload``).
"""

from __future__ import annotations

MAGIC = 0
FRAME_BYTES = 5  # the magic byte and the schema id


def frame(schema_id: int) -> bytes:
    """What goes before the JSON of a record written with schema ``schema_id``."""
    if not 0 < schema_id < 2**31:
        raise ValueError(f"schema id {schema_id} is not a registry's id")
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big")


def payload(value: bytes | None) -> bytes:
    """The JSON of a record in either format (plain, or framed: the frame stripped)."""
    if value and value[0] == MAGIC:
        return value[FRAME_BYTES:]
    return value or b""


def schema_id(value: bytes | None) -> int | None:
    """The schema id of a framed record; None for plain JSON (or a frame cut short)."""
    if value and value[0] == MAGIC and len(value) >= FRAME_BYTES:
        return int.from_bytes(value[1:FRAME_BYTES], "big")
    return None
