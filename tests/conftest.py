"""Shared test switches: what to do when a dependency is missing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when ``condition`` is false; in CI (CI=true) fail instead.

    CI provides every dependency, so there a missing one is a broken run, not a skip.
    """
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but a test dependency is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll ``fn`` until it returns a truthy value; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
