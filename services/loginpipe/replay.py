"""``loginpipe replay``: route error records that today's rules accept, exactly once.

After a rule change (say, a new ``app_version`` format is accepted), the error records written
under the old rules hold inputs that are now valid. The replay reads the chosen error records
(a window of the errors topic, optionally only some reasons), validates each one's original
bytes with today's ``validate`` and produces those now valid to the processed topic exactly as
the consumer does (the normalised value, the input's key, the device-type header). Records
still invalid stay where they are, counted by their reason today.

Exactly once, also across runs and crashes: each routed record goes out in a Kafka transaction
together with a marker on the replay ledger (a compacted topic, key
``<errors topic>:<partition>:<offset>``). A replay first takes the transactional id (fencing a
replay still running, aborting what a killed one left open), then reads the ledger with
``read_committed`` and skips every record a committed replay already routed. So replaying the
same range twice, or again after ``kill -9``, routes nothing twice; the aggregator counts each
record once. A still-invalid record gets no marker: a later rule change can still replay it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from loginpipe import envelope, wire
from loginpipe.exceptions import ConfigError, DependencyUnavailable
from loginpipe.kafka_io import Range, read_ranges, whole_topic, window_reader
from loginpipe.settings import ReplaySettings
from loginpipe.validation import Valid, validate

log = logging.getLogger(__name__)


def ledger_key(errors_topic: str, partition: int, offset: int) -> bytes:
    return f"{errors_topic}:{partition}:{offset}".encode()


@dataclass
class Outcome:
    """What a replay did with the records it read. Pure counters."""

    read: int = 0
    not_selected: int = 0
    already_replayed: int = 0
    not_replayable: int = 0  # no original to validate: a truncated or unreadable envelope
    replayed: Counter[str] = field(default_factory=Counter)  # by device type
    still_invalid: Counter[str] = field(default_factory=Counter)  # by today's reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "not_selected": self.not_selected,
            "already_replayed": self.already_replayed,
            "not_replayable": self.not_replayable,
            "replayed": sum(self.replayed.values()),
            "replayed_by_device": dict(sorted(self.replayed.items())),
            "still_invalid": sum(self.still_invalid.values()),
            "still_invalid_by_reason": dict(sorted(self.still_invalid.items())),
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one error record: route ``value`` (valid), or why not."""

    action: str  # "route", "skip", "already", "unreplayable", "invalid"
    key: bytes | None = None
    value: bytes | None = None
    device: str | None = None
    reason: str | None = None


def decide(raw: bytes | None, reasons: frozenset[str], replayed: bool) -> Decision:
    """The replay of one error record, decided from its envelope alone. Pure."""
    try:
        env = orjson.loads(wire.payload(raw))
        reason = str(env["reason"])
        encoded = env["original"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Decision("unreplayable")
    if reasons and reason not in reasons:
        return Decision("skip")
    if replayed:
        return Decision("already")
    if encoded.get("truncated"):
        return Decision("unreplayable")
    try:
        original = envelope.decode_bytes(encoded)
        key = envelope.decode_bytes(env["source"]["key"])
    except (KeyError, TypeError, ValueError):
        return Decision("unreplayable")
    result = validate(original)
    if isinstance(result, Valid):
        return Decision("route", key=key, value=result.value, device=result.device_type)
    return Decision("invalid", reason=result.reason.value)


class Replayer:
    """One replay run: take the id, read the ledger, route the chosen records in transactions."""

    def __init__(
        self,
        settings: ReplaySettings,
        reasons: frozenset[str],
        dry_run: bool,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.s = settings
        self.reasons = reasons
        self.dry_run = dry_run
        self.stop = stop
        self.outcome = Outcome()
        self.done: set[bytes] = set()
        self.producer: Producer | None = None
        self.in_txn = 0  # records routed in the open transaction
        self.txn_started = 0.0

    def run(
        self, ranges: dict[int, Range], progress: Callable[[int], None] | None = None
    ) -> Outcome:
        s = self.s
        if not self.dry_run:
            conf = s.kafka_config()
            conf.update(
                {
                    "transactional.id": s.replay_transactional_id,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "logger": logging.getLogger("librdkafka"),
                }
            )
            self.producer = Producer(conf)
            # Fences a replay still running with this id and aborts what a killed one left
            # open, so that the ledger read next is final.
            self.producer.init_transactions(max(s.startup_timeout_seconds, 10.0))
        self.done = self._read_ledger()
        reader = window_reader(s, s.reader_group)
        try:
            read_ranges(
                reader, s.topic_errors, ranges, self._one, progress=progress, stop=self.stop
            )
        finally:
            reader.close()
        self._commit()
        return self.outcome

    def _read_ledger(self) -> set[bytes]:
        """The error records that committed replays routed (the ledger, read_committed)."""
        reader = window_reader(self.s, self.s.reader_group)
        done: set[bytes] = set()

        def keep(key: bytes | None) -> None:
            if key is not None:
                done.add(key)

        try:
            ranges = whole_topic(reader, self.s.topic_replayed, 10.0)
            read_ranges(reader, self.s.topic_replayed, ranges, _ignore, on_key=keep)
        finally:
            reader.close()
        return done

    def _one(self, raw: bytes | None, partition: int, offset: int, ts: int | None) -> None:
        o = self.outcome
        o.read += 1
        key = ledger_key(self.s.topic_errors, partition, offset)
        d = decide(raw, self.reasons, key in self.done)
        if d.action == "skip":
            o.not_selected += 1
        elif d.action == "already":
            o.already_replayed += 1
        elif d.action == "unreplayable":
            o.not_replayable += 1
        elif d.action == "invalid":
            assert d.reason is not None
            o.still_invalid[d.reason] += 1
        else:
            assert d.device is not None and d.value is not None
            o.replayed[d.device] += 1
            if not self.dry_run:
                self._route(key, d)

    def _route(self, ledger: bytes, d: Decision) -> None:
        producer = self.producer
        assert producer is not None and d.device is not None
        if self.in_txn == 0:
            producer.begin_transaction()
            self.txn_started = time.monotonic()
        headers = envelope.DEVICE_HEADERS[d.device]  # as the consumer writes them
        marker = orjson.dumps({"routed_at_ms": int(time.time() * 1000)})
        while True:
            try:
                producer.produce(self.s.topic_processed, d.value, d.key, headers=headers)
                producer.produce(self.s.topic_replayed, marker, ledger)
                break
            except BufferError:
                producer.poll(0.05)
        self.done.add(ledger)
        self.in_txn += 1
        if self.in_txn >= self.s.replay_batch_size or (time.monotonic() - self.txn_started >= 1.0):
            self._commit()

    def _commit(self) -> None:
        if self.producer is None or self.in_txn == 0:
            return
        try:
            self.producer.commit_transaction(30.0)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            raise DependencyUnavailable(
                f"committing a replay transaction failed ({err.str()}): nothing of it counts; "
                "run the same replay again, it resumes where the last commit left off"
            ) from None
        self.in_txn = 0

    def close(self) -> None:
        if self.producer is not None:
            if self.in_txn:  # an error mid-transaction: nothing of it may count
                with contextlib.suppress(KafkaException):
                    self.producer.abort_transaction(10.0)
            self.producer.flush(5.0)


def _ignore(value: bytes | None, partition: int, offset: int, ts: int | None) -> None:
    """The ledger's values say nothing the replay needs: its keys do."""


def check_reasons(reasons: list[str]) -> frozenset[str]:
    from loginpipe.validation import Reason

    known = {r.value for r in Reason}
    unknown = sorted(set(reasons) - known)
    if unknown:
        raise ConfigError(
            f"--reason {unknown[0]!r} is not a reason code: use one of {', '.join(sorted(known))}"
        )
    return frozenset(reasons)
