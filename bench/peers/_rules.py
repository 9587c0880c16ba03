"""loginpipe's validation rules and error envelope, written plainly for the peers.

The README's "Login event" table and reason codes, with ``json`` and ``ipaddress`` as anyone
would write them. Shared by the naive baseline and the Quix Streams version so that both do
exactly the work loginpipe does; the benchmark checks every contender's output counts per
device type and per reason against the generator's ground truth.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import time
from typing import Any

REQUIRED_FIELDS = ("user_id", "app_version", "device_type", "ip", "timestamp")
VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,3}")
DIGITS_RE = re.compile(r"[0-9]{1,19}")
MAX_TIMESTAMP = 2**63 - 1


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _problem(code: str, field: str | None, message: str) -> dict[str, Any]:
    return {"code": code, "field": field, "message": message}


def _timestamp(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 < v <= MAX_TIMESTAMP else None
    if isinstance(v, str) and DIGITS_RE.fullmatch(v):
        return int(v) if 0 < int(v) <= MAX_TIMESTAMP else None
    return None


def _check(name: str, v: Any) -> dict[str, Any] | None:
    if name == "user_id":
        if not isinstance(v, str) or not v.strip() or len(v) > 256:
            return _problem("invalid_user_id", name, f"user_id {str(v)[:64]!r} is not valid")
    elif name == "app_version":
        if not isinstance(v, str) or len(v) > 64 or not VERSION_RE.fullmatch(v):
            return _problem("invalid_app_version", name, f"app_version {str(v)[:64]!r} is bad")
    elif name == "device_type":
        if not isinstance(v, str) or v.lower() not in ("android", "ios"):
            return _problem("invalid_device_type", name, f"device_type {str(v)[:64]!r} is bad")
    elif name == "ip":
        ok = isinstance(v, str) and len(v) <= 45 and "%" not in v
        if ok:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                ok = False
        if not ok:
            return _problem("invalid_ip", name, f"ip {str(v)[:64]!r} is not an IP address")
    elif name == "timestamp" and _timestamp(v) is None:
        return _problem("invalid_timestamp", name, f"timestamp {str(v)[:64]!r} is bad")
    return None


def validate(raw: bytes | None) -> tuple[dict[str, Any], str] | tuple[None, list[dict[str, Any]]]:
    """(normalised event, device type) if valid, else (None, problems); never raises."""
    try:
        if not raw:
            return None, [_problem("empty_message", None, "the value is empty or missing")]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, [_problem("invalid_encoding", None, f"not UTF-8: {e.reason}")]
        if not text.strip():
            return None, [_problem("empty_message", None, "the value is only whitespace")]
        try:
            event = json.loads(text, parse_constant=_no_constants)
        except (ValueError, RecursionError) as e:
            return None, [_problem("malformed_json", None, f"not JSON: {str(e)[:200]}")]
        if not isinstance(event, dict):
            return None, [_problem("not_an_object", None, "the JSON value is not an object")]
        problems = []
        for name in REQUIRED_FIELDS:
            if event.get(name) is None:
                problems.append(_problem("missing_field", name, f"{name} is missing"))
                continue
            p = _check(name, event[name])
            if p:
                problems.append(p)
        if problems:
            return None, problems
        device_type = event["device_type"].lower()
        event["device_type"] = device_type
        event["timestamp"] = _timestamp(event["timestamp"])
        event.setdefault("locale", None)
        event.setdefault("device_id", None)
        return event, device_type
    except Exception as e:  # a bug must not stop the peer either
        return None, [_problem("internal_error", None, f"validator error: {e!r}"[:300])]


def _encode(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {"encoding": None, "data": None}
    try:
        return {"encoding": "utf-8", "data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(data).decode("ascii")}


def envelope(
    problems: list[dict[str, Any]],
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
) -> dict[str, Any]:
    """The README's error envelope."""
    return {
        "schema_version": 1,
        "reason": problems[0]["code"],
        "problems": problems,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "key": _encode(key),
        },
        "original": _encode(value),
        "detected_at_ms": int(time.time() * 1000),
    }
