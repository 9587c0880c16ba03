"""Bounded retries of a repeating failure: backoff, one log line per cause, then give up. Pure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


@dataclass
class FailureStreak:
    """Failures in a row with no success between them, and how long they have lasted.

    A failure that repeats (a missing ACL, a record the topic refuses, a deleted topic) would
    otherwise make the consumer abort and retry as fast as it can, forever, while it looks
    healthy. The streak backs off exponentially and is exhausted once it has lasted
    ``budget_seconds``: the caller then stops with the cause.
    """

    budget_seconds: float
    clock: Callable[[], float] = time.monotonic
    count: int = 0
    started: float | None = None
    last_cause: str | None = None
    seen: set[str] = field(default_factory=set)

    def failed(self, cause: str) -> tuple[bool, float]:
        """Record a failure: (whether this cause is new to the streak, seconds to back off)."""
        if self.started is None:
            self.started = self.clock()
        self.count += 1
        self.last_cause = cause
        new = cause not in self.seen
        self.seen.add(cause)
        return new, self.backoff

    @property
    def backoff(self) -> float:
        """Seconds to wait before the next try: doubling with each failure in the streak."""
        return float(min(FIRST_BACKOFF * 2.0 ** max(self.count - 1, 0), MAX_BACKOFF))

    @property
    def seconds(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def exhausted(self) -> bool:
        return self.started is not None and self.seconds >= self.budget_seconds

    def succeeded(self) -> bool:
        """Reset after a success; True if a streak was running."""
        running = self.count > 0
        self.count, self.started, self.last_cause = 0, None, None
        self.seen.clear()
        return running
