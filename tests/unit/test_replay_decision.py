"""What `loginpipe replay` does with one error record, decided from its envelope alone."""

from __future__ import annotations

import pytest

from loginpipe import envelope
from loginpipe.exceptions import ConfigError
from loginpipe.replay import Outcome, check_reasons, decide, ledger_key
from loginpipe.validation import Invalid, Problem, Reason, validate

GOOD = b'{"user_id":"u1","app_version":"1.2","device_type":"iOS","ip":"10.0.0.1","timestamp":5}'


def error_record(raw: bytes, reason: Reason = Reason.INVALID_DEVICE_TYPE) -> bytes:
    """An envelope as an older consumer with other rules would have written it."""
    invalid = Invalid(reason, (Problem(reason, "device_type", "old rule"),))
    return envelope.build(
        invalid, topic="in", partition=0, offset=7, timestamp_ms=None, key=b"k1", value=raw,
        detected_at_ms=0,
    )  # fmt: skip


def test_an_original_valid_today_is_routed_normalised_with_its_key() -> None:
    d = decide(error_record(GOOD), frozenset(), replayed=False)
    assert d.action == "route" and d.device == "ios" and d.key == b"k1"
    assert d.value == validate(GOOD).value  # type: ignore[union-attr]  # the consumer's output


def test_records_of_other_reasons_and_already_replayed_ones_are_left_alone() -> None:
    record = error_record(GOOD)
    assert decide(record, frozenset({"invalid_ip"}), replayed=False).action == "skip"
    assert decide(record, frozenset({"invalid_device_type"}), replayed=True).action == "already"


def test_an_original_still_invalid_says_its_reason_today() -> None:
    d = decide(error_record(b'{"user_id":"u1"}', Reason.MISSING_FIELD), frozenset(), False)
    assert d.action == "invalid" and d.reason == "missing_field"


def test_a_truncated_original_or_a_foreign_record_cannot_be_replayed() -> None:
    huge = GOOD[:-1] + b', "pad": "' + b"x" * 70_000 + b'"}'
    assert decide(error_record(huge, Reason.MESSAGE_TOO_LARGE), frozenset(), False).action == (
        "unreplayable"
    )
    assert decide(b"not an envelope", frozenset(), False).action == "unreplayable"


def test_the_ledger_key_names_the_error_record_and_the_outcome_sums_up() -> None:
    assert ledger_key("errors", 3, 1042) == b"errors:3:1042"
    o = Outcome(read=3)
    o.replayed["ios"] += 2
    o.still_invalid["missing_field"] += 1
    assert o.as_dict()["replayed"] == 2 and o.as_dict()["still_invalid"] == 1


def test_an_unknown_reason_is_refused_naming_the_known_ones() -> None:
    assert check_reasons(["invalid_ip"]) == frozenset({"invalid_ip"})
    with pytest.raises(ConfigError, match="invalid_app_version"):
        check_reasons(["bogus"])
