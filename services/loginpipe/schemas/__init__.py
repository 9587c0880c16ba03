"""The message formats as versioned JSON Schemas: the source of truth of the data contracts.

``login-event`` (what the consumer accepts on the input topic), ``processed-event`` (what it
writes to the processed topic) and ``error-envelope`` (the error topic). Each file is
``<name>.v<version>.json``; its ``$id`` and ``x-loginpipe-version`` carry the same version.
The README's contract tables are checked against them, and property tests hold the consumer
to them (tests/unit/test_schemas.py).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# The current version of each format.
VERSIONS = {"login-event": 1, "processed-event": 1, "error-envelope": 1}


def file_name(name: str, version: int | None = None) -> str:
    if name not in VERSIONS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(VERSIONS)}")
    return f"{name}.v{VERSIONS[name] if version is None else version}.json"


@cache
def text(name: str, version: int | None = None) -> str:
    """The schema document as stored (what a registry is given)."""
    return resources.files(__package__).joinpath(file_name(name, version)).read_text("utf-8")


def load(name: str, version: int | None = None) -> dict[str, Any]:
    """The schema, parsed (a fresh copy each call)."""
    schema: dict[str, Any] = json.loads(text(name, version))
    return schema
