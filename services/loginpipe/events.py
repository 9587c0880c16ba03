"""Synthetic login events with the quirks of a real feed. Pure and reproducible from a seed.

Each event comes with its ground truth: the reason it must be rejected with, or the device
type it must be counted under. The generator service produces these; the tests and the
benchmark recompute them from the same seed.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from loginpipe.validation import Reason

LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP", "hi-IN", "ar-EG")
APP_VERSIONS = ("2.3.0", "2.3.1", "2.4.0", "3.0.0", "3.0.1", "3.1", "4")

# Quirks a valid event may carry (it is still valid, and normalised by the consumer).
VALID_QUIRKS = (
    "plain",
    "device_casing",
    "string_timestamp",
    "no_locale",
    "no_device_id",
    "extra_field",
    "ipv6",
)

# Each kind of bad event and the primary reason the consumer must give it.
BAD_KINDS: dict[str, Reason] = {
    "missing_device_type": Reason.MISSING_FIELD,
    "missing_app_version": Reason.MISSING_FIELD,
    "missing_user_id": Reason.MISSING_FIELD,
    "missing_ip": Reason.MISSING_FIELD,
    "null_timestamp": Reason.MISSING_FIELD,
    "empty_user_id": Reason.INVALID_USER_ID,
    "numeric_user_id": Reason.INVALID_USER_ID,
    "bad_app_version": Reason.INVALID_APP_VERSION,
    "empty_app_version": Reason.INVALID_APP_VERSION,
    "unknown_device_type": Reason.INVALID_DEVICE_TYPE,
    "empty_device_type": Reason.INVALID_DEVICE_TYPE,
    "bad_ipv4": Reason.INVALID_IP,
    "bad_ipv6": Reason.INVALID_IP,
    "iso_timestamp": Reason.INVALID_TIMESTAMP,
    "negative_timestamp": Reason.INVALID_TIMESTAMP,
    "non_json_text": Reason.MALFORMED_JSON,
    "truncated_json": Reason.MALFORMED_JSON,
    "binary_garbage": Reason.INVALID_ENCODING,
    "json_array": Reason.NOT_AN_OBJECT,
    "json_string": Reason.NOT_AN_OBJECT,
    "empty_message": Reason.EMPTY_MESSAGE,
}


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    key: bytes
    value: bytes
    kind: str
    expected_reason: Reason | None  # None: valid
    device_type: str | None  # normalised device type of a valid event


@dataclass
class GroundTruth:
    """What a correct pipeline must make of a run of generated events."""

    total: int = 0
    valid_by_device: Counter[str] = field(default_factory=Counter)
    invalid_by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, ev: GeneratedEvent) -> None:
        self.total += 1
        if ev.expected_reason is None:
            assert ev.device_type is not None
            self.valid_by_device[ev.device_type] += 1
        else:
            self.invalid_by_reason[ev.expected_reason.value] += 1

    @property
    def valid(self) -> int:
        return sum(self.valid_by_device.values())

    @property
    def invalid(self) -> int:
        return sum(self.invalid_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "valid_by_device": dict(sorted(self.valid_by_device.items())),
            "invalid_by_reason": dict(sorted(self.invalid_by_reason.items())),
        }


class EventFactory:
    """Makes the i-th event of a seeded run; the same seed gives the same sequence."""

    def __init__(self, seed: int, *, bad_share: float, users: int, start_time: int) -> None:
        if not 0 <= bad_share <= 1:
            raise ValueError("bad_share must be between 0 and 1")
        self.rng = random.Random(seed)  # noqa: S311 - test data, not security
        self.bad_share = bad_share
        self.users = users
        self.start_time = start_time
        self.index = 0
        self._bad_kinds = tuple(BAD_KINDS)

    def _ip(self) -> str:
        r = self.rng
        return f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _ipv6(self) -> str:
        r = self.rng
        return "2001:db8:" + ":".join(f"{r.getrandbits(16):x}" for _ in range(6))

    def _base(self) -> dict[str, Any]:
        r = self.rng
        device_type = "android" if r.random() < 0.55 else "ios"
        return {
            "user_id": f"user-{r.randrange(self.users):06d}",
            "app_version": r.choice(APP_VERSIONS),
            "device_type": device_type,
            "ip": self._ip(),
            "locale": r.choice(LOCALES),
            "device_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "timestamp": self.start_time + self.index // 1000,
        }

    def next(self) -> GeneratedEvent:
        r = self.rng
        ev = self._base()
        key = ev["user_id"].encode()
        self.index += 1
        if r.random() < self.bad_share:
            kind = self._bad_kinds[r.randrange(len(self._bad_kinds))]
            return GeneratedEvent(key, self._corrupt(kind, ev), kind, BAD_KINDS[kind], None)
        kind = VALID_QUIRKS[r.randrange(len(VALID_QUIRKS))]
        device_type = ev["device_type"]
        if kind == "device_casing":
            ev["device_type"] = r.choice(
                {"android": ("Android", "ANDROID", "AnDroid"), "ios": ("iOS", "IOS", "Ios")}[
                    device_type
                ]
            )
        elif kind == "string_timestamp":
            ev["timestamp"] = str(ev["timestamp"])
        elif kind == "no_locale":
            del ev["locale"]
        elif kind == "no_device_id":
            ev["device_id"] = None
        elif kind == "extra_field":
            ev["session_ms"] = r.randrange(10_000)
        elif kind == "ipv6":
            ev["ip"] = self._ipv6()
        return GeneratedEvent(key, orjson.dumps(ev), kind, None, device_type)

    def _corrupt(self, kind: str, ev: dict[str, Any]) -> bytes:
        r = self.rng
        if kind.startswith("missing_"):
            del ev[kind.removeprefix("missing_")]
        elif kind == "null_timestamp":
            ev["timestamp"] = None
        elif kind == "empty_user_id":
            ev["user_id"] = ""
        elif kind == "numeric_user_id":
            ev["user_id"] = r.randrange(1, 10**6)
        elif kind == "bad_app_version":
            ev["app_version"] = r.choice(("v2.3.0", "2.3.0-beta", "1.2.3.4.5", "2..3", "latest"))
        elif kind == "empty_app_version":
            ev["app_version"] = ""
        elif kind == "unknown_device_type":
            ev["device_type"] = r.choice(("windows", "web", "blackberry", "i0s"))
        elif kind == "empty_device_type":
            ev["device_type"] = ""
        elif kind == "bad_ipv4":
            ev["ip"] = r.choice(("300.1.2.3", "10.0.0", "1.2.3.4.5", "256.256.256.256", "a.b.c.d"))
        elif kind == "bad_ipv6":
            ev["ip"] = r.choice(("2001:db8::g1", "::1::2", "2001:db8:0:0:0:0:0:0:1", ":::"))
        elif kind == "iso_timestamp":
            ev["timestamp"] = "2026-11-25T12:00:00Z"
        elif kind == "negative_timestamp":
            ev["timestamp"] = -r.randrange(1, 10**9)
        elif kind == "non_json_text":
            return f"user_id={ev['user_id']}&device_type={ev['device_type']}".encode()
        elif kind == "truncated_json":
            data = orjson.dumps(ev)
            return data[: r.randrange(1, len(data) - 1)]
        elif kind == "binary_garbage":
            return b"\xff\xfe" + r.randbytes(r.randrange(4, 40))
        elif kind == "json_array":
            return orjson.dumps([ev["user_id"], ev["device_type"]])
        elif kind == "json_string":
            return orjson.dumps(ev["user_id"])
        elif kind == "empty_message":
            return b""
        else:  # pragma: no cover - BAD_KINDS and this function are kept in step by a test
            raise AssertionError(kind)
        return orjson.dumps(ev)

    def __iter__(self) -> Iterator[GeneratedEvent]:
        while True:
            yield self.next()


def generate(
    count: int, *, seed: int, bad_share: float, users: int = 10_000, start_time: int = 1_764_000_000
) -> list[GeneratedEvent]:
    factory = EventFactory(seed, bad_share=bad_share, users=users, start_time=start_time)
    return [factory.next() for _ in range(count)]
