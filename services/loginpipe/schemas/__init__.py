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


def released() -> dict[str, dict[str, Any]]:
    """Per format, its released version and that file's SHA-256 (``released.json``).

    A released version's file never changes (a test holds it to its hash): a change is a new
    version, checked against the released one for compatibility (``loginpipe schemas check``).
    """
    doc: dict[str, dict[str, Any]] = json.loads(
        resources.files(__package__).joinpath("released.json").read_text("utf-8")
    )
    return doc


_CONSTRAINTS = (
    "type",
    "enum",
    "const",
    "pattern",
    "format",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "items",
    "minProperties",
    "maxProperties",
    "dependencies",
    "$ref",
)


def changed_fields(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What a new version of a schema changes, field by field, in words (for a refusal's message).

    Only what a reader of the old data can trip on is listed: required fields added, fields
    removed or added, and any constraint of a field changed (type, enum, pattern, bounds...);
    nested objects are compared the same way, their fields named by path (``source.key``).
    """
    out: list[str] = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for f in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        out.append(f"{path}{f}: now required")
    for f in sorted(set(old_props) - set(new_props)):
        out.append(f"{path}{f}: removed")
    for f in sorted(set(new_props) - set(old_props)):
        out.append(f"{path}{f}: added")
    for f in sorted(set(old_props) & set(new_props)):
        a, b = old_props[f], new_props[f]
        if not (isinstance(a, dict) and isinstance(b, dict)):  # boolean schemas
            if a != b:
                out.append(f"{path}{f}: changed")
            continue
        diffs = [k for k in _CONSTRAINTS if a.get(k) != b.get(k)]
        if diffs:
            out.append(f"{path}{f}: {', '.join(diffs)} changed")
        if "properties" in a or "properties" in b:
            out += changed_fields(a, b, f"{path}{f}.")
    if path == "" and old.get("definitions") != new.get("definitions"):
        for name in sorted(set(old.get("definitions", {})) | set(new.get("definitions", {}))):
            a = old.get("definitions", {}).get(name, {})
            b = new.get("definitions", {}).get(name, {})
            if a != b:
                out.append(f"definitions.{name}: changed (used by the fields that refer to it)")
    if old.get("additionalProperties", True) != new.get("additionalProperties", True):
        out.append(f"{path or '(top level)'}: additionalProperties changed")
    return out
