"""The generator's events: reproducible, with every kind of bad event and its ground truth."""

from __future__ import annotations

from collections import Counter

import pytest

from loginpipe.events import BAD_KINDS, VALID_QUIRKS, EventFactory, GroundTruth, generate
from loginpipe.validation import Invalid, Valid, validate


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    a = generate(500, seed=7, bad_share=0.2)
    b = generate(500, seed=7, bad_share=0.2)
    c = generate(500, seed=8, bad_share=0.2)
    assert a == b
    assert a != c


def test_every_event_is_classified_as_its_ground_truth_says() -> None:
    kinds: Counter[str] = Counter()
    for ev in generate(20_000, seed=1, bad_share=0.3):
        kinds[ev.kind] += 1
        result = validate(ev.value)
        if ev.expected_reason is None:
            assert isinstance(result, Valid), (ev, result)
            assert result.device_type == ev.device_type
        else:
            assert isinstance(result, Invalid), ev
            assert result.reason is ev.expected_reason, (ev, result)
    assert set(kinds) == set(BAD_KINDS) | set(VALID_QUIRKS)


def test_the_bad_share_is_respected() -> None:
    truth = GroundTruth()
    for ev in generate(20_000, seed=3, bad_share=0.2):
        truth.add(ev)
    assert truth.total == 20_000
    assert 0.18 < truth.invalid / truth.total < 0.22
    assert truth.valid + truth.invalid == truth.total


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_share_of_zero_or_one_gives_only_good_or_only_bad_events(share: float) -> None:
    evs = generate(2000, seed=5, bad_share=share)
    bad = sum(ev.expected_reason is not None for ev in evs)
    assert bad == int(share * 2000)


def test_a_bad_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="bad_share"):
        EventFactory(1, bad_share=1.5, users=10, start_time=1)


def test_events_are_keyed_by_user_id() -> None:
    for ev in generate(200, seed=9, bad_share=0.0):
        assert ev.key.startswith(b"user-")
        assert ev.key.decode() in ev.value.decode()
