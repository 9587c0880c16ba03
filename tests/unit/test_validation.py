"""The validation rules, table-driven over every reason code, and property-based."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loginpipe.validation import (
    REASON_DESCRIPTIONS,
    Invalid,
    Reason,
    Valid,
    _fast_valid,
    is_ip,
    is_ip_reference,
    validate,
    validate_object,
)
from tests.strategies import JSON

BASE = {
    "user_id": "user-1",
    "app_version": "2.3.0",
    "device_type": "ios",
    "ip": "203.0.113.7",
    "locale": "en-US",
    "device_id": "d-1",
    "timestamp": 1764000000,
}


def event(**changes: object) -> bytes:
    ev = dict(BASE)
    for k, v in changes.items():
        if v is ...:
            del ev[k]
        else:
            ev[k] = v
    return orjson.dumps(ev)


INVALID_CASES = [
    # whole-message reasons
    (None, Reason.EMPTY_MESSAGE),
    (b"", Reason.EMPTY_MESSAGE),
    (b"  \n\t", Reason.EMPTY_MESSAGE),
    (b"\xff\xfe\x00garbage", Reason.INVALID_ENCODING),
    (b'{"user_id": "\xc3\x28"}', Reason.INVALID_ENCODING),
    (b"user_id=1&device_type=ios", Reason.MALFORMED_JSON),
    (b'{"user_id": "u"', Reason.MALFORMED_JSON),
    (b"{'user_id': 'single quotes'}", Reason.MALFORMED_JSON),
    (b'{"timestamp": NaN}', Reason.MALFORMED_JSON),
    (b"[" * 50_000, Reason.MALFORMED_JSON),
    (b'{"x": 1e400}', Reason.MALFORMED_JSON),
    (b"x" * (64 * 1024 + 1), Reason.MESSAGE_TOO_LARGE),
    (event(user_id="u" * 70_000), Reason.MESSAGE_TOO_LARGE),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (b'"user-1"', Reason.NOT_AN_OBJECT),
    (b"42", Reason.NOT_AN_OBJECT),
    (b"null", Reason.NOT_AN_OBJECT),
    # missing or null required fields
    (event(user_id=...), Reason.MISSING_FIELD),
    (event(app_version=...), Reason.MISSING_FIELD),
    (event(device_type=...), Reason.MISSING_FIELD),
    (event(ip=...), Reason.MISSING_FIELD),
    (event(timestamp=...), Reason.MISSING_FIELD),
    (event(device_type=None), Reason.MISSING_FIELD),
    (b"{}", Reason.MISSING_FIELD),
    # user_id
    (event(user_id=""), Reason.INVALID_USER_ID),
    (event(user_id="   "), Reason.INVALID_USER_ID),
    (event(user_id=123), Reason.INVALID_USER_ID),
    (event(user_id="u" * 257), Reason.INVALID_USER_ID),
    # app_version
    (event(app_version=""), Reason.INVALID_APP_VERSION),
    (event(app_version="v2.3.0"), Reason.INVALID_APP_VERSION),
    (event(app_version="2.3.0-beta"), Reason.INVALID_APP_VERSION),
    (event(app_version="1.2.3.4.5"), Reason.INVALID_APP_VERSION),
    (event(app_version="2..3"), Reason.INVALID_APP_VERSION),
    (event(app_version="-1.0"), Reason.INVALID_APP_VERSION),
    (event(app_version="\u0662.3"), Reason.INVALID_APP_VERSION),  # Arabic-Indic digit
    (event(app_version=2.3), Reason.INVALID_APP_VERSION),
    # device_type
    (event(device_type=""), Reason.INVALID_DEVICE_TYPE),
    (event(device_type="windows"), Reason.INVALID_DEVICE_TYPE),
    (event(device_type=" ios"), Reason.INVALID_DEVICE_TYPE),
    (event(device_type=1), Reason.INVALID_DEVICE_TYPE),
    # ip
    (event(ip="300.1.2.3"), Reason.INVALID_IP),
    (event(ip="10.0.0"), Reason.INVALID_IP),
    (event(ip="01.2.3.4"), Reason.INVALID_IP),
    (event(ip="2001:db8::g1"), Reason.INVALID_IP),
    (event(ip="::1::2"), Reason.INVALID_IP),
    (event(ip="fe80::1%eth0"), Reason.INVALID_IP),
    (event(ip=""), Reason.INVALID_IP),
    (event(ip=16909060), Reason.INVALID_IP),
    # timestamp
    (event(timestamp="2026-11-25T12:00:00Z"), Reason.INVALID_TIMESTAMP),
    (event(timestamp=-5), Reason.INVALID_TIMESTAMP),
    (event(timestamp=0), Reason.INVALID_TIMESTAMP),
    (event(timestamp="0"), Reason.INVALID_TIMESTAMP),
    (event(timestamp=1764000000.5), Reason.INVALID_TIMESTAMP),
    (event(timestamp=True), Reason.INVALID_TIMESTAMP),
    (event(timestamp=""), Reason.INVALID_TIMESTAMP),
    (event(timestamp=" 1764000000"), Reason.INVALID_TIMESTAMP),
    (event(timestamp="9" * 20), Reason.INVALID_TIMESTAMP),
    (
        b'{"user_id":"u","app_version":"1","device_type":"ios","ip":"::1","timestamp":'
        + b"9" * 30
        + b"}",
        Reason.INVALID_TIMESTAMP,
    ),
]


@pytest.mark.parametrize(("raw", "reason"), INVALID_CASES, ids=lambda v: repr(v)[:60])
def test_invalid_input_gets_its_reason(raw: bytes | None, reason: Reason) -> None:
    result = validate(raw)
    assert isinstance(result, Invalid)
    assert result.reason is reason
    assert result.problems[0].code is reason


def test_every_reason_code_is_covered_by_the_table_and_documented() -> None:
    covered = {reason for _, reason in INVALID_CASES}
    assert covered == set(Reason) - {Reason.INTERNAL_ERROR}
    assert set(REASON_DESCRIPTIONS) == set(Reason)


def test_all_problems_are_listed_and_the_primary_is_the_first_in_field_order() -> None:
    result = validate(event(user_id=..., device_type="web", ip="nope", timestamp="yesterday"))
    assert isinstance(result, Invalid)
    assert [p.code for p in result.problems] == [
        Reason.MISSING_FIELD,
        Reason.INVALID_DEVICE_TYPE,
        Reason.INVALID_IP,
        Reason.INVALID_TIMESTAMP,
    ]
    assert [p.field for p in result.problems] == ["user_id", "device_type", "ip", "timestamp"]
    assert result.reason is Reason.MISSING_FIELD


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {}),
        ({"device_type": "iOS"}, {"device_type": "ios"}),
        ({"device_type": "ANDROID"}, {"device_type": "android"}),
        ({"timestamp": "1764000000"}, {"timestamp": 1764000000}),
        ({"locale": ...}, {"locale": None}),
        ({"device_id": ...}, {"device_id": None}),
        ({"device_id": None}, {"device_id": None}),
        ({"session_ms": 12}, {"session_ms": 12}),
        ({"ip": "2001:db8::1"}, {}),
        ({"ip": "::ffff:192.0.2.1"}, {}),
        ({"app_version": "4"}, {}),
        ({"app_version": "1.2.3.4"}, {}),
        ({"app_version": "10.0.007"}, {}),
    ],
)
def test_valid_events_are_normalised(
    changes: dict[str, object], expected: dict[str, object]
) -> None:
    result = validate(event(**changes))
    assert isinstance(result, Valid)
    want = {**BASE, **{k: v for k, v in changes.items() if v is not ...}, **expected}
    assert orjson.loads(result.value) == want
    assert result.device_type == want["device_type"]


def test_a_normal_event_is_forwarded_unchanged_in_content() -> None:
    raw = event()
    result = validate(raw)
    assert isinstance(result, Valid)
    assert orjson.loads(result.value) == orjson.loads(raw)


def test_integers_beyond_64_bits_in_extra_fields_do_not_break_a_valid_event() -> None:
    raw = event()[:-1] + b',"big":' + b"1" * 30 + b"}"
    result = validate(raw)
    assert isinstance(result, Valid)
    assert json.loads(result.value)["big"] == int("1" * 30)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.none(), st.binary(max_size=300)))
def test_any_bytes_are_classified_without_an_exception(raw: bytes | None) -> None:
    result = validate(raw)
    assert isinstance(result, (Valid, Invalid))
    if isinstance(result, Invalid):
        assert result.reason is not Reason.INTERNAL_ERROR
        assert result.problems


FIELD_VALUES = st.one_of(
    JSON,
    st.sampled_from(["ios", "IOS", "Android", "2.3.0", "1", "::1", "10.0.0.1", "1764000000"]),
    st.integers(min_value=-(2**70), max_value=2**70),
)


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.sampled_from([*BASE, "x"]), FIELD_VALUES, max_size=8))
def test_any_json_object_is_classified_and_valid_output_validates_again(obj: dict) -> None:
    result = validate(json.dumps(obj).encode())
    if isinstance(result, Invalid):
        assert result.reason is not Reason.INTERNAL_ERROR
    else:
        again = validate(result.value)
        assert isinstance(again, Valid)
        assert again.value == result.value


IP_TEXT = st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45)


@settings(max_examples=5000, deadline=None)
@given(st.one_of(IP_TEXT, st.ip_addresses().map(str), st.text(max_size=50)))
def test_the_fast_ip_check_agrees_with_the_ipaddress_module(v: str) -> None:
    assert is_ip(v) == is_ip_reference(v)


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.sampled_from([*BASE, "x"]), FIELD_VALUES, max_size=8))
def test_the_fast_path_agrees_with_the_full_rules(obj: dict) -> None:
    raw = json.dumps(obj).encode()
    fast = _fast_valid(obj, raw)
    full = validate_object(obj)
    if fast is not None:
        assert isinstance(full, Valid)
        assert fast.device_type == full.device_type
        assert json.loads(fast.value) == json.loads(full.value)


def test_an_already_normal_event_is_forwarded_byte_for_byte() -> None:
    raw = event()
    result = validate(raw)
    assert isinstance(result, Valid)
    assert result.value is raw


def test_duplicate_keys_are_resolved_and_never_forwarded() -> None:
    raw = event()[:-1] + b',"ip":"not-an-ip","ip":"203.0.113.9"}'
    result = validate(raw)
    assert isinstance(result, Valid)
    assert result.value != raw
    assert result.value.count(b'"ip"') == 1
    assert orjson.loads(result.value)["ip"] == "203.0.113.9"


def test_events_with_colons_in_values_are_re_serialised_with_the_same_content() -> None:
    raw = event(ip="2001:db8::1")
    result = validate(raw)
    assert isinstance(result, Valid)
    assert orjson.loads(result.value) == orjson.loads(raw)


# ---- numbers, surrogates and nesting: what "kept as is" and "byte for byte" promise ----------


def number_texts() -> st.SearchStrategy[str]:
    """JSON number literals of every shape: big and small integers, exponents, fractions."""
    ints = st.integers(min_value=-(10**30), max_value=10**30).map(str)
    floats = st.floats(allow_nan=False, allow_infinity=False).map(repr)
    exponents = st.tuples(
        st.integers(-999, 999), st.sampled_from(["e", "E"]), st.integers(-300, 300)
    ).map(lambda t: f"{t[0]}{t[1]}{t[2]}")
    fractions = st.tuples(st.integers(-(10**20), 10**20), st.integers(0, 10**20)).map(
        lambda t: f"{t[0]}.{t[1]:020d}"
    )
    return st.one_of(ints, floats, exponents, fractions)


def with_extra(literal: str) -> bytes:
    # "IOS": the event is normalised, so it is re-serialised, not forwarded as it came.
    return event(device_type="IOS")[:-1] + b',"extra":' + literal.encode() + b"}"


@pytest.mark.parametrize(
    "literal",
    ["-9223372036854775809", "-9223372036854775808", "18446744073709551616", "1e5", "1.50", "-0.0"],
)
def test_every_number_in_an_extra_field_is_kept_as_written(literal: str) -> None:
    result = validate(with_extra(literal))
    assert isinstance(result, Valid)
    assert b'"extra":' + literal.encode() in result.value


@settings(max_examples=2000, deadline=None)
@given(number_texts())
def test_any_number_is_kept_as_written_or_rejected_with_a_reason(literal: str) -> None:
    result = validate(with_extra(literal))
    if isinstance(result, Valid):
        assert b'"extra":' + literal.encode() in result.value
        orjson.loads(result.value)  # and the project's own reader takes the output
    else:
        assert result.reason is Reason.MALFORMED_JSON, result  # 1e400: beyond a double


def test_a_lone_surrogate_escape_is_an_invalid_encoding_not_a_valid_event() -> None:
    for raw in (event()[:-1] + b',"locale2":"\\ud800"}', event()[:-1] + b',"x\\udc00y":1}'):
        result = validate(raw)
        assert isinstance(result, Invalid), raw
        assert result.reason is Reason.INVALID_ENCODING
        assert "surrogate" in result.problems[0].message


@pytest.mark.parametrize("nested", ["[1,[2]]", "[]", "{}", '{"a":1}', '[{"b":2}]'])
def test_nested_values_are_re_serialised_never_forwarded_byte_for_byte(nested: str) -> None:
    raw = event()[:-1] + b',"extra":' + nested.encode() + b"}"
    result = validate(raw)
    assert isinstance(result, Valid)
    assert result.value is not raw
    assert orjson.loads(result.value)["extra"] == orjson.loads(nested)


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.sampled_from([*BASE, "x", "y"]), FIELD_VALUES, max_size=9))
def test_only_flat_events_go_byte_for_byte_and_every_output_reads_back(obj: dict) -> None:
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    result = validate(raw)
    if isinstance(result, Valid):
        parsed = orjson.loads(result.value)  # the processed topic's readers use orjson
        if result.value is raw:
            assert not any(isinstance(v, (dict, list)) for v in parsed.values())
