"""What the error topic holds, summed up for a person (``loginpipe errors``). Pure.

``ErrorSummary`` takes error records one at a time (the envelope's bytes and the record's own
coordinates) and keeps only counters, bounded top lists and a few samples, so its memory stays
bounded however many records it reads: counts by reason, by problem (code and field) and by
source partition; the most frequent offending values of each field (``TopK``, the Space-Saving
algorithm: exact while the distinct values fit its capacity, then an upper bound with its
error); a few samples per reason with their source coordinates and original bytes.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from loginpipe import wire
from loginpipe.envelope import decode_bytes

SAMPLE_TEXT_LIMIT = 300  # characters of an original shown in a sample
VALUE_TEXT_LIMIT = 80  # characters of an offending value kept as a key
TOP_CAPACITY = 1000  # distinct values tracked per field


class TopK:
    """The most frequent items of a stream in bounded memory (Space-Saving, Metwally et al.).

    Exact while at most ``capacity`` distinct items were seen. Beyond that, a new item takes
    the place of the least counted one and inherits its count as possible over-count
    (``errors``): every reported count is an upper bound, at most that error above the truth,
    and any item more frequent than total/capacity is kept.
    """

    def __init__(self, capacity: int = TOP_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def add(self, item: str, n: int = 1) -> None:
        if item in self.counts:
            self.counts[item] += n
            return
        if len(self.counts) < self.capacity:
            self.counts[item] = n
            self.errors[item] = 0
            return
        victim = min(self.counts, key=self.counts.__getitem__)
        floor = self.counts.pop(victim)
        del self.errors[victim]
        self.counts[item] = floor + n
        self.errors[item] = floor

    @property
    def exact(self) -> bool:
        return not any(self.errors.values())

    def top(self, n: int) -> list[tuple[str, int, int]]:
        """The ``n`` most counted items: (item, count, possible over-count), largest first."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(item, count, self.errors[item]) for item, count in ranked]


@dataclass
class ErrorSummary:
    """Counters over error records; ``add`` each one, then ``as_dict`` or ``render``."""

    samples_per_reason: int = 3
    top_capacity: int = TOP_CAPACITY
    records: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_problem: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    values: dict[str, TopK] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unreadable: int = 0
    unreadable_sample: dict[str, Any] | None = None
    first_ms: int | None = None
    last_ms: int | None = None

    def add(
        self, value: bytes | None, partition: int, offset: int, timestamp_ms: int | None
    ) -> None:
        """One record of the error topic: its value (an envelope) and its own coordinates."""
        self.records += 1
        if timestamp_ms is not None:
            self.first_ms = (
                timestamp_ms if self.first_ms is None else min(self.first_ms, timestamp_ms)
            )
            self.last_ms = timestamp_ms if self.last_ms is None else max(self.last_ms, timestamp_ms)
        here = {"partition": partition, "offset": offset}
        try:
            env = orjson.loads(wire.payload(value))
            reason = str(env["reason"])
            problems = list(env.get("problems") or [])
            source = env["source"]
            original = decode_bytes(env["original"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unreadable += 1
            if self.unreadable_sample is None:
                self.unreadable_sample = here
            return
        self.by_reason[reason] += 1
        self.by_source[f"{source.get('topic')}/{source.get('partition')}"] += 1
        fields = _fields_of(original)
        for p in problems:
            name = p.get("field")
            self.by_problem[f"{p.get('code')}:{name}" if name else str(p.get("code"))] += 1
            if name and fields is not None:
                self._value(name).add(_value_text(fields.get(name, _ABSENT)))
        kept = self.samples.setdefault(reason, [])
        if len(kept) < self.samples_per_reason:
            kept.append(
                {
                    "error": here,
                    "source": {k: source.get(k) for k in ("topic", "partition", "offset")},
                    "problems": [p.get("message") for p in problems],
                    "original": _sample_text(original, env["original"]),
                }
            )

    def _value(self, name: str) -> TopK:
        if name not in self.values:
            self.values[name] = TopK(self.top_capacity)
        return self.values[name]

    def as_dict(self, top: int = 10) -> dict[str, Any]:
        return {
            "records": self.records,
            "first_timestamp_ms": self.first_ms,
            "last_timestamp_ms": self.last_ms,
            "by_reason": dict(self.by_reason.most_common()),
            "by_problem": dict(self.by_problem.most_common()),
            "by_source_partition": dict(self.by_source.most_common()),
            "top_values": {
                name: [
                    {"value": v, "count": c, **({"max_overcount": e} if e else {})}
                    for v, c, e in topk.top(top)
                ]
                for name, topk in sorted(self.values.items())
            },
            "samples": self.samples,
            "unreadable": self.unreadable,
            **({"unreadable_first": self.unreadable_sample} if self.unreadable_sample else {}),
        }

    def render(self, top: int = 10) -> str:
        """The summary as text for a terminal."""
        d = self.as_dict(top)
        out = [f"{d['records']} error records{_window(self.first_ms, self.last_ms)}"]
        if self.unreadable:
            first = self.unreadable_sample or {}
            out.append(
                f"  {self.unreadable} not error envelopes (first at partition "
                f"{first.get('partition')}, offset {first.get('offset')})"
            )
        for title, counts in (
            ("by reason", d["by_reason"]),
            ("by problem (code:field)", d["by_problem"]),
            ("by source partition", d["by_source_partition"]),
        ):
            out.append(f"\n{title}:")
            out.extend(_table(counts, self.records))
        for name, rows in d["top_values"].items():
            out.append(f"\ntop offending values of {name}:")
            for row in rows:
                bound = f" (at most {row['max_overcount']} fewer)" if "max_overcount" in row else ""
                out.append(f"  {row['count']:>10}  {row['value']}{bound}")
        out.append("\nsamples:")
        for reason, kept in sorted(d["samples"].items()):
            for s in kept:
                src, err = s["source"], s["error"]
                out.append(
                    f"  [{reason}] {src['topic']}/{src['partition']}@{src['offset']} "
                    f"(error record {err['partition']}@{err['offset']})"
                )
                for message in s["problems"]:
                    out.append(f"      {message}")
                out.append(f"      original: {s['original']}")
        return "\n".join(out) + "\n"


_ABSENT = object()


def _fields_of(original: bytes | None) -> dict[str, Any] | None:
    """The original's JSON object, or None when it is not one (nothing to point at)."""
    try:
        obj = orjson.loads(original or b"")
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _value_text(v: Any) -> str:
    """An offending value as a short, typed key: `"iOS"`, `17`, `null`, `(absent)`."""
    if v is _ABSENT:
        return "(absent)"
    text = orjson.dumps(v).decode()
    return text if len(text) <= VALUE_TEXT_LIMIT else text[: VALUE_TEXT_LIMIT - 1] + "…"


def _sample_text(original: bytes | None, encoded: dict[str, Any]) -> str:
    if original is None:
        return "(null value)"
    if not original:
        return "(empty value)"
    if encoded.get("encoding") == "base64":
        text = f"(not UTF-8, {len(original)} bytes) base64:{encoded['data']}"
    else:
        text = repr(original.decode("utf-8", "surrogateescape"))[1:-1]
    if encoded.get("truncated"):
        text = f"(first bytes of {encoded.get('size')}) " + text
    return text if len(text) <= SAMPLE_TEXT_LIMIT else text[: SAMPLE_TEXT_LIMIT - 1] + "…"


def _table(counts: dict[str, int], total: int) -> list[str]:
    return [f"  {n:>10}  {100 * n / max(total, 1):5.1f}%  {k}" for k, n in counts.items()]


def _window(first_ms: int | None, last_ms: int | None) -> str:
    if first_ms is None or last_ms is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S"
    a = time.strftime(fmt, time.gmtime(first_ms / 1000))
    b = time.strftime(fmt, time.gmtime(last_ms / 1000))
    return f", written {a} to {b} UTC"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now_ms: int) -> int:
    """``--since``/``--until``: a duration ago (``90s``, ``15m``, ``1h``, ``2d``, ``1w``), epoch
    milliseconds, or an ISO-8601 time (UTC unless it says otherwise); epoch milliseconds out.
    """
    from datetime import UTC, datetime

    t = text.strip()
    m = _DURATION.match(t)
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give a duration ago (30m, 1h, 2d), epoch milliseconds "
            "or an ISO-8601 time (2026-11-30T12:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
