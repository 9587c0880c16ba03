"""The rules: classify any bytes as a valid, normalised login event or an invalid one.

Pure functions over plain data, no I/O. ``validate`` never raises, whatever the input.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Reason(StrEnum):
    """Stable reason codes of the error topic, in order of precedence.

    The first five describe the message as a whole; the rest a field. When an event has
    several problems, the primary reason is the first one found in field order
    (user_id, app_version, device_type, ip, timestamp); all are listed in ``problems``.
    """

    MESSAGE_TOO_LARGE = "message_too_large"  # value larger than MAX_EVENT_BYTES
    INVALID_ENCODING = "invalid_encoding"  # not valid UTF-8, or a lone surrogate escape
    EMPTY_MESSAGE = "empty_message"  # no value, or only whitespace
    MALFORMED_JSON = "malformed_json"  # UTF-8 but not JSON
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    MISSING_FIELD = "missing_field"  # a required field is absent or null
    INVALID_USER_ID = "invalid_user_id"  # not a non-empty string of at most 256 characters
    INVALID_APP_VERSION = "invalid_app_version"  # not 1-4 dot-separated non-negative integers
    INVALID_DEVICE_TYPE = "invalid_device_type"  # not android or ios (any case)
    INVALID_IP = "invalid_ip"  # not an IPv4 or IPv6 address (zone ids are rejected)
    INVALID_TIMESTAMP = "invalid_timestamp"  # not a positive integer of epoch seconds
    INTERNAL_ERROR = "internal_error"  # the validator itself failed (a bug); never expected


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.MESSAGE_TOO_LARGE: "the value is larger than 64 KiB (a login event is well under "
    "1 KiB); the envelope keeps its first 16 KiB, size and SHA-256",
    Reason.INVALID_ENCODING: "the value is not valid UTF-8, or a string in it holds a lone "
    "surrogate escape (\\ud800), which no UTF-8 reader can take back",
    Reason.EMPTY_MESSAGE: "the value is missing (tombstone), empty or only whitespace",
    Reason.MALFORMED_JSON: "the value is text but not a JSON document",
    Reason.NOT_AN_OBJECT: "the value is JSON but not an object (array, string, number, null)",
    Reason.MISSING_FIELD: "a required field (user_id, app_version, device_type, ip, timestamp) "
    "is absent or null",
    Reason.INVALID_USER_ID: "user_id is not a non-empty string of at most 256 characters",
    Reason.INVALID_APP_VERSION: "app_version is not 1 to 4 dot-separated non-negative integers",
    Reason.INVALID_DEVICE_TYPE: "device_type is not android or ios (any case)",
    Reason.INVALID_IP: "ip is not a valid IPv4 or IPv6 address (scoped IPv6 is rejected)",
    Reason.INVALID_TIMESTAMP: "timestamp is not a positive integer of epoch seconds "
    "(or a string of digits)",
    Reason.INTERNAL_ERROR: "the validator failed on this input (a bug to report); the event is "
    "kept here rather than lost",
}

REQUIRED_FIELDS = ("user_id", "app_version", "device_type", "ip", "timestamp")
OPTIONAL_FIELDS = ("locale", "device_id")
DEVICE_TYPES = ("android", "ios")

MAX_USER_ID_LENGTH = 256
MAX_EVENT_BYTES = 64 * 1024
MAX_TIMESTAMP = 2**63 - 1
_VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9]+){0,3}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Problem:
    code: Reason
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class Valid:
    """A valid event: its normalised JSON and its device type."""

    value: bytes
    device_type: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """An invalid input: the primary reason and every problem found."""

    reason: Reason
    problems: tuple[Problem, ...]


Result = Valid | Invalid


def _whole(code: Reason, message: str) -> Invalid:
    return Invalid(code, (Problem(code, None, message),))


def _has_float(obj: Any) -> bool:
    """Whether a parsed JSON value holds a float anywhere (cheap for flat objects)."""
    t = type(obj)
    if t is dict:
        values = obj.values()
    elif t is list:
        values = obj
    else:
        return t is float
    for v in values:
        tv = type(v)
        if tv is float or ((tv is dict or tv is list) and _has_float(v)):
            return True
    return False


def _exact(obj: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """``obj`` re-read with every number as it was written, if it holds a non-integer number.

    orjson reads ``1e5`` as the float 100000.0 and an integer beyond 64 bits as a float too, and
    would write them back otherwise. Only needed before re-serialising; such numbers are rare
    in login events, so cheap.
    """
    if _has_float(obj):
        exact: dict[str, Any] = _exact_loads(raw)
        return exact
    return obj


def _exact_loads(raw: bytes | str) -> Any:
    """JSON with every number kept as written: floats and out-of-range integers as Literal."""
    return json.loads(
        raw, parse_constant=_reject_constant, parse_float=_float_text, parse_int=_int_or_text
    )


class Literal:
    """A JSON number exactly as written: validated as a number, written back unchanged."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _float_text(text: str) -> Literal:
    if float(text) in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of range for a JSON number")
    return Literal(text)


def _int_or_text(text: str) -> int | Literal:
    value = int(text)
    # What orjson writes as an integer; anything wider goes out as written.
    return value if -(2**63) <= value < 2**64 else Literal(text)


def _fragment(obj: Any) -> orjson.Fragment:
    if type(obj) is Literal:
        return orjson.Fragment(obj.text)
    raise TypeError(f"{type(obj).__name__} is not JSON")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _surrogate(obj: Any) -> str | None:
    """The first string (key or value) holding a lone surrogate, if any."""
    t = type(obj)
    if t is str:
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return str(obj)
        return None
    items = obj.items() if t is dict else obj if t is list else ()
    for item in items:
        for part in item if t is dict else (item,):
            found = _surrogate(part)
            if found is not None:
                return found
    return None


def _decode(raw: bytes) -> Any | Invalid:
    """Parse JSON, or say why the bytes are not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # Slow path, only for inputs orjson refuses: tell the reasons apart, and accept what is
    # still valid JSON that orjson does not take.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _whole(Reason.INVALID_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}")
    if not text.strip():
        return _whole(Reason.EMPTY_MESSAGE, "the value is only whitespace")
    try:
        decoded = _exact_loads(text)
    except (ValueError, RecursionError) as exc:
        return _whole(Reason.MALFORMED_JSON, f"not JSON: {str(exc)[:200]}")
    # JSON's \uXXXX escapes can name half of a surrogate pair: not text in any encoding, and
    # no UTF-8 reader (the processed topic's) could take it back.
    bad = _surrogate(decoded)
    if bad is not None:
        return _whole(
            Reason.INVALID_ENCODING,
            f"a lone surrogate escape in {bad.encode('utf-8', 'backslashreplace')[:64]!r}",
        )
    return decoded


def check_user_id(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"user_id must be a string, got {type(v).__name__}"
    if not v.strip():
        return "user_id is empty"
    if len(v) > MAX_USER_ID_LENGTH:
        return f"user_id is longer than {MAX_USER_ID_LENGTH} characters"
    return None


def check_app_version(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"app_version must be a string, got {type(v).__name__}"
    if len(v) > 64 or _VERSION_RE.fullmatch(v) is None:
        return f"app_version {v[:64]!r} is not 1 to 4 dot-separated non-negative integers"
    return None


def check_ip(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"ip must be a string, got {type(v).__name__}"
    if len(v) > 45:
        return "ip is longer than any IPv6 address"
    if "%" in v:
        return f"ip {v!r} has a zone index, which is host-local and not accepted"
    if not is_ip(v):
        return f"ip {v!r} is not a valid IPv4 or IPv6 address"
    return None


_inet_pton = socket.inet_pton
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def is_ip(v: str) -> bool:
    """IPv4 or IPv6 without a zone index, by the C library's parser.

    Agrees with ``ipaddress.ip_address`` on every input a test compares, zone ids aside:
    ``ipaddress`` accepts ``fe80::1%eth0``, this does not. Several times faster.
    """
    try:
        if ":" in v:
            if "%" in v:
                return False
            _inet_pton(_AF_INET6, v)
        else:
            _inet_pton(_AF_INET, v)
    except (OSError, ValueError):  # ValueError: NUL bytes, lone surrogates
        return False
    return True


def is_ip_reference(v: str) -> bool:
    """The readable definition ``is_ip`` is tested against."""
    if "%" in v:
        return False
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def normalise_device_type(v: Any) -> str | None:
    if isinstance(v, str):
        low = v.lower()
        if low in DEVICE_TYPES:
            return low
    return None


def normalise_timestamp(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 < v <= MAX_TIMESTAMP else None
    if isinstance(v, str) and _DIGITS_RE.fullmatch(v):
        n = int(v)
        return n if 0 < n <= MAX_TIMESTAMP else None
    return None


def _fast_valid(obj: dict[str, Any], raw: bytes) -> Valid | None:
    """The common case, checked with the fewest operations: a valid event, or None.

    None means "look closer": ``validate_object`` then finds every problem, or accepts an
    event this path does not (it is conservative). A test checks both always agree.
    """
    try:
        user_id = obj["user_id"]
        version = obj["app_version"]
        device = obj["device_type"]
        ip = obj["ip"]
        ts = obj["timestamp"]
    except KeyError:
        return None
    if not (
        type(user_id) is str
        and user_id
        and len(user_id) <= MAX_USER_ID_LENGTH
        and not user_id.isspace()
        and type(version) is str
        and len(version) <= 64
        and _VERSION_RE.fullmatch(version) is not None
        and type(ip) is str
        and len(ip) <= 45
        and is_ip(ip)
    ):
        return None
    if device == "android" or device == "ios":
        normal_device = True
    elif type(device) is str and device.lower() in DEVICE_TYPES:
        normal_device = False
        device = device.lower()
    else:
        return None
    if type(ts) is int and 0 < ts <= MAX_TIMESTAMP:
        normal_ts = True
    elif type(ts) is str and _DIGITS_RE.fullmatch(ts) and 0 < int(ts) <= MAX_TIMESTAMP:
        normal_ts = False
        ts = int(ts)
    else:
        return None
    if (
        normal_device
        and normal_ts
        and "locale" in obj
        and "device_id" in obj
        # Exactly one colon per key, one brace and no bracket: then every colon is a key's,
        # so no key is repeated (JSON readers disagree on which duplicate wins) and no
        # value is an object or an array, and the bytes can be forwarded as they are.
        # (Braces or brackets inside strings only send an event down the slower path.)
        and raw.count(b":") == len(obj)
        and raw.count(b"{") == 1
        and b"[" not in raw
    ):
        return Valid(raw, device)
    obj = _exact(obj, raw)
    normal = dict(obj)
    normal["device_type"] = device
    normal["timestamp"] = ts
    normal.setdefault("locale", None)
    normal.setdefault("device_id", None)
    return Valid(_dumps(normal), device)


def validate_object(obj: dict[str, Any]) -> Result:
    """Validate a decoded JSON object and build its normalised form."""
    problems: list[Problem] = []
    for name in REQUIRED_FIELDS:
        if obj.get(name) is None:
            what = "is null" if name in obj else "is missing"
            problems.append(Problem(Reason.MISSING_FIELD, name, f"{name} {what}"))
            continue
        v = obj[name]
        if name == "user_id":
            msg = check_user_id(v)
            if msg:
                problems.append(Problem(Reason.INVALID_USER_ID, name, msg))
        elif name == "app_version":
            msg = check_app_version(v)
            if msg:
                problems.append(Problem(Reason.INVALID_APP_VERSION, name, msg))
        elif name == "device_type":
            if normalise_device_type(v) is None:
                problems.append(
                    Problem(
                        Reason.INVALID_DEVICE_TYPE,
                        name,
                        f"device_type {str(v)[:64]!r} is not android or ios",
                    )
                )
        elif name == "ip":
            msg = check_ip(v)
            if msg:
                problems.append(Problem(Reason.INVALID_IP, name, msg))
        elif name == "timestamp" and normalise_timestamp(v) is None:
            problems.append(
                Problem(
                    Reason.INVALID_TIMESTAMP,
                    name,
                    f"timestamp {str(v)[:64]!r} is not a positive integer of epoch seconds",
                )
            )
    if problems:
        return Invalid(problems[0].code, tuple(problems))
    device_type = normalise_device_type(obj["device_type"])
    timestamp = normalise_timestamp(obj["timestamp"])
    assert device_type is not None and timestamp is not None
    if (
        obj["device_type"] == device_type
        and obj["timestamp"] == timestamp
        and all(f in obj for f in OPTIONAL_FIELDS)
    ):
        normal = obj
    else:
        normal = dict(obj)
        normal["device_type"] = device_type
        normal["timestamp"] = timestamp
        for f in OPTIONAL_FIELDS:
            normal.setdefault(f, None)
    return Valid(_dumps(normal), device_type)


def _dumps(obj: dict[str, Any]) -> bytes:
    # Numbers orjson would change arrive as Literal (see _exact_loads) and go out as written;
    # lone surrogates never get here (invalid_encoding).
    return orjson.dumps(obj, default=_fragment)


def validate(raw: bytes | None) -> Result:
    """Classify one Kafka message value. Never raises."""
    if not raw:
        return _whole(
            Reason.EMPTY_MESSAGE,
            "the value is empty" if raw is not None else "the value is missing (tombstone)",
        )
    if len(raw) > MAX_EVENT_BYTES:
        return _whole(
            Reason.MESSAGE_TOO_LARGE, f"the value is {len(raw)} bytes, over {MAX_EVENT_BYTES}"
        )
    decoded = _decode(raw)
    if isinstance(decoded, Invalid):
        return decoded
    if not isinstance(decoded, dict):
        kind = "null" if decoded is None else type(decoded).__name__
        return _whole(Reason.NOT_AN_OBJECT, f"the JSON value is a {kind}, not an object")
    try:
        return _fast_valid(decoded, raw) or validate_object(_exact(decoded, raw))
    except Exception as exc:  # a bug must not stop the pipeline: route the event as invalid
        return _whole(Reason.INTERNAL_ERROR, f"validator error: {exc!r}"[:300])
