"""Bounded retries: backoff grows and caps, each cause is new once, the budget ends it."""

from __future__ import annotations

from loginpipe.retry import MAX_BACKOFF, FailureStreak


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_backoff_doubles_and_caps() -> None:
    streak = FailureStreak(budget_seconds=60, clock=Clock())
    backoffs = [streak.failed("X")[1] for _ in range(10)]
    assert backoffs[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(backoffs) == MAX_BACKOFF == backoffs[-1]


def test_each_cause_is_reported_new_once_per_streak() -> None:
    streak = FailureStreak(budget_seconds=60, clock=Clock())
    assert [streak.failed(c)[0] for c in ("A", "A", "B", "A", "B")] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert streak.succeeded() is True
    assert streak.failed("A")[0] is True  # a new streak reports it again


def test_the_streak_is_exhausted_after_its_budget_and_a_success_resets_it() -> None:
    clock = Clock()
    streak = FailureStreak(budget_seconds=30, clock=clock)
    assert not streak.exhausted()
    streak.failed("X")
    clock.now += 29
    streak.failed("X")
    assert not streak.exhausted()
    clock.now += 2
    assert streak.exhausted() and streak.seconds == 31
    streak.succeeded()
    assert not streak.exhausted() and streak.count == 0
    assert streak.succeeded() is False
