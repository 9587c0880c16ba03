"""The message formats in a schema registry, through its Confluent-compatible API.

Apicurio Registry serves it at ``/apis/ccompat/v7`` (``hack/registry.sh`` runs one on the
local Kafka); Confluent Schema Registry at its root. Each format has the subject of its topic
(the topic-name strategy: ``<topic>-value``), with BACKWARD compatibility: a reader with the
new schema can read every record written with the registered one.

- ``register``: the formats (as they are now, or as released) under their subjects.
- ``check``: each format as it is now against the latest version registered under its
  subject; an incompatible one is reported with the fields it changes. CI registers the
  released versions in a fresh registry and checks today's against them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from loginpipe import schemas
from loginpipe.exceptions import ConfigError, DependencyUnavailable
from loginpipe.settings import SchemaSettings

COMPATIBILITY = "BACKWARD"
NOT_FOUND = (40401, 40403)  # subject not found, schema not found


@dataclass(frozen=True)
class Registered:
    name: str
    subject: str
    version: int
    schema_id: int


@dataclass(frozen=True)
class Verdict:
    name: str
    subject: str
    against: int | None  # the registered version checked against; None: nothing registered
    compatible: bool
    changes: tuple[str, ...] = ()

    def message(self) -> str:
        if self.against is None:
            return f"{self.name}: nothing registered under {self.subject} yet: nothing to break"
        if self.compatible:
            return f"{self.name}: compatible ({COMPATIBILITY}) with {self.subject} v{self.against}"
        fields = "; ".join(self.changes) or "the registry does not say which field"
        return (
            f"{self.name}: INCOMPATIBLE ({COMPATIBILITY}) with {self.subject} version "
            f"{self.against}: {fields}. Readers of the old records could fail: keep the change "
            "compatible (no field newly required, no type, enum or bound narrowed; as the formats "
            "keep unknown fields, even a newly documented one counts), or give the format a new "
            "topic"
        )


def subjects(s: SchemaSettings) -> dict[str, str]:
    """Each format's subject: its topic's, with the configured prefix."""
    topic = {
        "login-event": s.topic_input,
        "processed-event": s.topic_processed,
        "error-envelope": s.topic_errors,
    }
    return {name: f"{s.schema_subject_prefix}{topic[name]}-value" for name in schemas.VERSIONS}


@contextlib.contextmanager
def _talking_to(s: SchemaSettings) -> Iterator[SchemaRegistryClient]:
    """A client for the registry; its errors as the CLI reports them (exit 2 or 3)."""
    try:
        with SchemaRegistryClient({"url": s.schema_registry_url, "timeout": 10}) as reg:
            yield reg
    except SchemaRegistryError as exc:  # it answered, with an error
        if exc.http_status_code == 409:
            raise ConfigError(
                f"the registry refuses a format as incompatible with what it holds: "
                f"{exc.error_message}; run `loginpipe schemas check` to see which fields"
            ) from None
        raise DependencyUnavailable(
            f"schema registry at {s.schema_registry_url} answered HTTP {exc.http_status_code} "
            f"(error code {exc.error_code}): {exc.error_message}"
        ) from None
    except (httpx2.HTTPError, OSError) as exc:  # no answer
        raise DependencyUnavailable(
            f"schema registry at {s.schema_registry_url} failed: {exc}. Is it running "
            "(hack/registry.sh start, or make infra-up REGISTRY=1)? "
            "LOGINPIPE_SCHEMA_REGISTRY_URL sets where it is (Apicurio: .../apis/ccompat/v7)"
        ) from None


def register(
    s: SchemaSettings,
    *,
    released: bool = False,
    timeout_seconds: float = 0.0,
    wait: Callable[[float], bool] = lambda _: False,
) -> list[Registered]:
    """Register every format under its subject (BACKWARD), as it is now or as released.

    Waits up to ``timeout_seconds`` for a registry that does not answer (see ``_waiting``).
    """
    versions = schemas.released() if released else None

    def attempt() -> list[Registered]:
        out = []
        with _talking_to(s) as reg:
            for name, subject in subjects(s).items():
                text = schemas.text(name, versions[name]["version"] if versions else None)
                _ensure_compatibility(reg, subject)
                schema_id = reg.register_schema(subject, Schema(text, "JSON"))
                got = reg.lookup_schema(subject, Schema(text, "JSON"))
                out.append(Registered(name, subject, int(got.version or 0), schema_id))
        return out

    return _waiting(attempt, timeout_seconds, wait)


_T = TypeVar("_T")


def _waiting(
    attempt: Callable[[], _T], timeout_seconds: float, wait: Callable[[float], bool]
) -> _T:
    """``attempt()``, again every second while the registry does not answer, up to
    ``timeout_seconds`` (``wait`` sleeps and says whether to stop meanwhile); its last error
    then. Any other error at once: an answer does not change by asking again."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return attempt()
        except DependencyUnavailable:
            if time.monotonic() >= deadline or wait(1.0):
                raise


def _ensure_compatibility(reg: SchemaRegistryClient, subject: str) -> None:
    """BACKWARD for a subject that has no level of its own; an operator's level is kept."""
    try:
        level = reg.get_compatibility(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
        level = None
    if not level or level.upper() == "NONE":
        reg.set_compatibility(subject, COMPATIBILITY)


def check(
    s: SchemaSettings, candidates: dict[str, str] | None = None, *, released: bool = False
) -> list[Verdict]:
    """Each format as it is now (or a candidate text) against its subject's latest version,
    or with ``released`` against the version that holds the released schema (the CI gate)."""
    versions = schemas.released() if released else None
    out = []
    with _talking_to(s) as reg:
        for name, subject in subjects(s).items():
            text = candidates[name] if candidates and name in candidates else schemas.text(name)
            try:
                latest = reg.get_latest_version(subject)
            except SchemaRegistryError as exc:
                # Only the registry's own "no such subject": a 404 from a wrong URL is an error.
                if exc.error_code in NOT_FOUND:
                    out.append(Verdict(name, subject, None, True))
                    continue
                raise
            against, old_text = int(latest.version or 0), latest.schema.schema_str or "{}"
            if versions:
                old_text = schemas.text(name, versions[name]["version"])
                found = reg.lookup_schema(subject, Schema(old_text, "JSON"))
                against = int(found.version or 0)
            ok = reg.test_compatibility(subject, Schema(text, "JSON"), against)
            changes: tuple[str, ...] = ()
            if not ok:
                old: dict[str, Any] = json.loads(old_text)
                changes = tuple(schemas.changed_fields(old, json.loads(text)))
            out.append(Verdict(name, subject, against, ok, changes))
    return out


# The formats of the consumer's output topics, as their records in the wire format carry them.
OUTPUT_FORMATS = ("processed-event", "error-envelope")


def output_schema_ids(
    s: SchemaSettings, timeout_seconds: float, wait: Callable[[float], bool]
) -> dict[str, int]:
    """The registry's id of each output format as it is now, under its topic's subject.

    Waits for the registry while it does not answer, up to ``timeout_seconds`` (``wait``
    sleeps and says whether the service is stopping meanwhile), then DependencyUnavailable. A
    format the registry does not hold is a ConfigError at once: it must be registered first
    (``loginpipe schemas register``; the chart's hook Job does it at install).
    """
    names = subjects(s)

    def attempt() -> dict[str, int]:
        with _talking_to(s) as reg:
            ids = {}
            for name in OUTPUT_FORMATS:
                try:
                    found = reg.lookup_schema(names[name], Schema(schemas.text(name), "JSON"))
                except SchemaRegistryError as exc:
                    if exc.error_code not in NOT_FOUND:
                        raise
                    raise ConfigError(
                        f"the schema registry at {s.schema_registry_url} does not hold "
                        f"{schemas.file_name(name)} under subject {names[name]}, and "
                        "LOGINPIPE_CONSUMER_OUTPUT_FORMAT=registry needs its id: register "
                        "the formats first (loginpipe schemas register), or set "
                        "LOGINPIPE_CONSUMER_OUTPUT_FORMAT=json"
                    ) from None
                ids[name] = int(found.schema_id or 0)
        return ids

    return _waiting(attempt, timeout_seconds, wait)
