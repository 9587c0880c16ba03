"""Shared test switches: what to do when a dependency is missing."""

from __future__ import annotations

import os

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
