"""The registry's wire format beside plain JSON: framing, and every reader taking either."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from loginpipe import wire
from loginpipe.aggregator import device_of
from loginpipe.error_report import ErrorSummary
from loginpipe.replay import decide
from tests.unit.test_error_report import envelopes
from tests.unit.test_replay_decision import GOOD, error_record


@given(st.integers(1, 2**31 - 1), st.binary())
def test_a_framed_record_gives_back_its_schema_id_and_payload(schema_id: int, body: bytes) -> None:
    framed = wire.frame(schema_id) + body
    assert framed[0] == 0 and len(framed) == wire.FRAME_BYTES + len(body)
    assert wire.schema_id(framed) == schema_id
    assert wire.payload(framed) == body


@given(st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), st.integers(-9, 9)))
def test_plain_json_is_left_as_it_is(doc: dict[str, int]) -> None:
    raw = orjson.dumps(doc)
    assert wire.payload(raw) == raw and wire.schema_id(raw) is None


def test_a_null_value_is_empty_and_an_id_out_of_the_registrys_range_is_refused() -> None:
    assert wire.payload(None) == b"" and wire.schema_id(None) is None
    for bad in (0, -1, 2**31):
        with pytest.raises(ValueError, match="not a registry's id"):
            wire.frame(bad)


def test_the_aggregator_reads_the_device_type_of_a_framed_record_without_its_header() -> None:
    value = wire.frame(7) + b'{"device_type": "Android"}'
    m = Message(topic="p", partition=0, offset=0, value=value, headers=None)
    assert device_of(m) == "android"


def test_the_error_summary_reads_framed_envelopes_as_it_reads_plain_ones() -> None:
    records, truth = envelopes(500, seed=3)
    plain, framed = ErrorSummary(), ErrorSummary()
    for offset, value in enumerate(records):
        plain.add(value, partition=0, offset=offset, timestamp_ms=None)
        framed.add(wire.frame(42) + value, partition=0, offset=offset, timestamp_ms=None)
    assert framed.unreadable == 0 and dict(framed.by_reason) == dict(plain.by_reason)
    assert dict(framed.by_reason) == dict(truth.invalid_by_reason)


def test_replay_decides_a_framed_error_record_as_the_plain_one() -> None:
    plain = decide(error_record(GOOD), frozenset(), replayed=False)
    framed = decide(wire.frame(9) + error_record(GOOD), frozenset(), replayed=False)
    assert framed == plain and framed.action == "route"
