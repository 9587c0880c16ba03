"""The JSON Schemas are the data contracts: the README agrees, the consumer keeps to them."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from loginpipe import envelope, schemas
from loginpipe.events import EventFactory
from loginpipe.validation import REQUIRED_FIELDS, Invalid, Reason, Valid, validate
from tests.strategies import JSON

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SCHEMA_DIR = ROOT / "services" / "loginpipe" / "schemas"


def validator(name: str) -> Draft7Validator:
    return Draft7Validator(schemas.load(name), format_checker=Draft7Validator.FORMAT_CHECKER)


LOGIN_EVENT = validator("login-event")
PROCESSED = validator("processed-event")
ENVELOPE = validator("error-envelope")


def errors_of(v: Draft7Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def readme_table(heading: str) -> list[list[str]]:
    """The rows (cells, backticks removed) of the first table under a README heading."""
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith("| ---"):
            rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    return rows[1:]  # without the header


def test_every_schema_is_a_draft_07_schema_whose_file_id_and_field_agree_on_its_version() -> None:
    files = sorted(p.name for p in SCHEMA_DIR.glob("*.v*.json"))
    assert files == sorted(schemas.file_name(n) for n in schemas.VERSIONS)
    for name, version in schemas.VERSIONS.items():
        doc = schemas.load(name)
        Draft7Validator.check_schema(doc)
        assert doc["$id"] == f"urn:loginpipe:schema:{name}:{version}"
        assert doc["x-loginpipe-version"] == version


def test_the_envelope_schema_names_every_reason_code_and_the_envelopes_version() -> None:
    doc = schemas.load("error-envelope")
    codes = [r.value for r in Reason]
    assert doc["properties"]["reason"]["enum"] == codes
    assert doc["properties"]["problems"]["items"]["properties"]["code"]["enum"] == codes
    # No $ref: Apicurio's compatibility checker cannot resolve local references (measured: a
    # 500, "Unresolved JSON Schema reference: #/definitions/bytes"), so every part is inline.
    assert "$ref" not in schemas.text("error-envelope")
    assert doc["properties"]["schema_version"]["const"] == envelope.SCHEMA_VERSION
    field = doc["properties"]["problems"]["items"]["properties"]["field"]["enum"]
    assert field == [*REQUIRED_FIELDS, None]


def test_the_readmes_login_event_table_lists_the_schemas_fields_and_which_are_required() -> None:
    rows = {r[0]: r for r in readme_table("### Login event") if r[0] != "anything else"}
    accepted = schemas.load("login-event")
    assert set(rows) == set(accepted["properties"])
    assert {f for f, r in rows.items() if r[1] == "yes"} == set(accepted["required"])
    # Every field of the processed event is there: the optional ones become null.
    assert set(schemas.load("processed-event")["required"]) == set(rows)


def test_the_readmes_reason_codes_are_the_envelope_schemas() -> None:
    codes = [r[0] for r in readme_table("### Reason codes")]
    assert codes == schemas.load("error-envelope")["properties"]["reason"]["enum"]


def route(raw: bytes | None, key: bytes | None = b"user-1") -> tuple[str, Any]:
    """What the consumer writes for one input: (topic kind, the record's value, parsed)."""
    result = validate(raw)
    if isinstance(result, Valid):
        return "processed", orjson.loads(result.value)
    assert isinstance(result, Invalid)
    body = envelope.build(
        result,
        topic="user-login",
        partition=3,
        offset=1042,
        timestamp_ms=1764072000123,
        key=key,
        value=raw,
        detected_at_ms=1764072000150,
    )
    return "errors", orjson.loads(body)


def assert_fits_its_schema(raw: bytes | None, key: bytes | None = b"user-1") -> str:
    kind, doc = route(raw, key)
    if kind == "processed":
        assert not errors_of(PROCESSED, doc), (raw, doc)
        # The input it came from is an accepted login event too.
        assert not errors_of(LOGIN_EVENT, orjson.loads(raw or b"")), raw
    else:
        assert not errors_of(ENVELOPE, doc), (raw, doc)
    return kind


FIELD_VALUES = st.one_of(
    JSON,
    st.sampled_from(
        ["ios", "IOS", "Android", "2.3.0", "1", "::1", "10.0.0.1", "1764000000", "fe80::1%eth0"]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
)
FIELDS = [*REQUIRED_FIELDS, "locale", "device_id", "x"]
BASE = {
    "user_id": "user-1",
    "app_version": "2.3.0",
    "device_type": "ios",
    "ip": "203.0.113.7",
    "timestamp": 1764000000,
}


@settings(max_examples=2000, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=8),
    st.booleans(),
)
def test_every_routed_record_fits_its_schema_processed_or_error(
    changes: dict[str, Any], on_a_valid_base: bool
) -> None:
    obj = {**BASE, **changes} if on_a_valid_base else changes
    assert_fits_its_schema(json.dumps(obj).encode())


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=40)))
def test_any_bytes_and_key_make_an_error_record_that_fits_the_envelope_schema(
    raw: bytes | None, key: bytes | None
) -> None:
    assert_fits_its_schema(raw, key)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"x" * (64 * 1024 + 1), b"k"),  # message_too_large: truncated, size, sha256
        (b"\xff" * 70_000, b"\xfe" * 2000),  # base64 and truncated, a key over 1 KiB
        (b'{"user_id": "\xc3\x28"}', None),  # invalid UTF-8, no key
    ],
    ids=["too-large", "binary-and-huge-key", "bad-utf8-no-key"],
)
def test_truncated_and_binary_originals_fit_the_envelope_schema(raw: bytes, key: bytes) -> None:
    assert assert_fits_its_schema(raw, key) == "errors"


def test_the_generators_events_good_and_bad_fit_their_schemas() -> None:
    factory = EventFactory(7, bad_share=0.3, users=500, start_time=1_764_000_000)
    kinds = {assert_fits_its_schema(factory.next().value) for _ in range(3000)}
    assert kinds == {"processed", "errors"}


def test_a_schema_catches_what_the_consumer_would_never_write() -> None:
    """The checks above could fail: records off the contract are refused, naming the field."""
    _, ok = route(orjson.dumps(BASE))
    bad = {**ok, "device_type": "iOS", "timestamp": "1764000000"}
    assert {re.sub(r":.*", "", e) for e in errors_of(PROCESSED, bad)} == {
        "device_type",
        "timestamp",
    }
    _, env = route(b"not json")
    env["reason"] = "bad_vibes"
    env["original"] = {"encoding": "utf-8", "data": "x", "truncated": True}
    assert {re.sub(r":.*", "", e) for e in errors_of(ENVELOPE, env)} == {"original", "reason"}


def test_a_released_format_is_never_edited_a_change_is_a_new_version() -> None:
    for name, rel in schemas.released().items():
        path = SCHEMA_DIR / schemas.file_name(name, rel["version"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == rel["sha256"], (
            f"{path.name} is released and must not change: put the change in "
            f"{schemas.file_name(name, rel['version'] + 1)} and raise VERSIONS[{name!r}]"
        )
        assert rel["version"] <= schemas.VERSIONS[name]


def test_the_changes_of_a_new_version_are_named_field_by_field() -> None:
    old = schemas.load("processed-event")
    new = copy.deepcopy(old)
    new["required"].append("session_id")
    new["properties"]["session_id"] = {"type": "string"}
    new["properties"]["device_type"]["enum"] = ["android"]
    del new["properties"]["ip"]
    assert schemas.changed_fields(old, new) == [
        "session_id: now required",
        "ip: removed",
        "session_id: added",
        "device_type: enum changed",
    ]
    env = schemas.load("error-envelope")
    env2 = copy.deepcopy(env)
    env2["properties"]["source"]["properties"]["partition"]["type"] = "string"
    env2["additionalProperties"] = False
    assert schemas.changed_fields(env, env2) == [
        "source.partition: type changed",
        "(top level): additionalProperties changed",
    ]
    assert schemas.changed_fields(old, old) == []
