"""Kafka plumbing shared by the services: start-up checks, topic creation, lag from statistics."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import admin as kafka_admin
from confluent_kafka.admin import AdminClient

from loginpipe.exceptions import ConfigError, DependencyUnavailable
from loginpipe.metrics import Metrics
from loginpipe.rights import KafkaAcl
from loginpipe.settings import CommonSettings

log = logging.getLogger(__name__)


def admin_client(settings: CommonSettings, **extra: Any) -> AdminClient:
    conf = settings.kafka_config()
    conf["logger"] = logging.getLogger("librdkafka")
    conf.update(extra)
    return AdminClient(conf)


class _Errors:
    """librdkafka's error callback: what went wrong on the connections (served by poll)."""

    def __init__(self) -> None:
        self.seen: list[KafkaError] = []

    def __call__(self, err: KafkaError) -> None:
        self.seen.append(err)


def _credentials_error(settings: CommonSettings, errors: list[KafkaError]) -> ConfigError | None:
    """A connection refused for its credentials or certificate: waiting cannot mend it."""
    for err in errors:
        text = err.str()
        if err.code() == KafkaError._AUTHENTICATION or "SASL authentication error" in text:
            return ConfigError(
                f"Kafka at {settings.kafka_bootstrap} refused the credentials ({text}): set "
                "LOGINPIPE_KAFKA_SASL_USERNAME and LOGINPIPE_KAFKA_SASL_PASSWORD (and "
                "LOGINPIPE_KAFKA_SASL_MECHANISM) to the right ones"
            )
        if err.code() == KafkaError._SSL and "certificate verify failed" in text:
            return ConfigError(
                f"Kafka at {settings.kafka_bootstrap} presented a certificate this service does "
                f"not trust ({text}): set LOGINPIPE_KAFKA_SSL_CA_LOCATION to the CA bundle "
                "that signs the brokers' certificates"
            )
    return None


def check_kafka(settings: CommonSettings, topics: Iterable[str], timeout: float) -> dict[str, int]:
    """Fail fast, with a message that says what to set, if Kafka or a topic is not there.

    Wrong credentials or an untrusted certificate end it at once (ConfigError), without
    waiting out ``timeout``. Returns the partition count of each topic.
    """
    errors = _Errors()
    admin = admin_client(settings, error_cb=errors)
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = admin.list_topics(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves the error callback
            refused = _credentials_error(settings, errors.seen)
            if refused is not None:
                raise refused from None
            if time.monotonic() < deadline:
                continue
            raise DependencyUnavailable(
                f"cannot reach Kafka at {settings.kafka_bootstrap} within {timeout:g}s "
                f"({exc.args[0]}): check that the broker is up and that "
                "LOGINPIPE_KAFKA_BOOTSTRAP (and the LOGINPIPE_KAFKA_SECURITY_PROTOCOL/SASL "
                "settings) point at it"
            ) from None
    partitions: dict[str, int] = {}
    missing = []
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            missing.append(t)
        else:
            partitions[t] = len(tm.partitions)
    # A topic this principal may not Describe is left out of the metadata (or flagged): asked
    # for by name, the broker says which it is.
    forbidden = [t for t in missing if _forbidden(admin, t)]
    if forbidden:
        raise ConfigError(
            f"the Kafka user {settings.kafka_sasl_username or '(anonymous)'!r} may not use "
            f"topic(s) {', '.join(forbidden)} on {settings.kafka_bootstrap}: give it the ACLs "
            "its service needs (README, Security: loginpipe.rights.kafka_acls), or set "
            "LOGINPIPE_KAFKA_SASL_USERNAME to the service's own user"
        )
    if missing:
        raise DependencyUnavailable(
            f"topic(s) {', '.join(missing)} do not exist on {settings.kafka_bootstrap}: create "
            "them with `loginpipe topics` (broker auto-creation is off by design), or set "
            "LOGINPIPE_TOPIC_INPUT/LOGINPIPE_TOPIC_PROCESSED/LOGINPIPE_TOPIC_ERRORS"
        )
    return partitions


def max_record_bytes(settings: CommonSettings, topic: str, producer_limit: int) -> int:
    """The largest record the producer can write to ``topic``: its max.message.bytes or less.

    Error envelopes are sized to it, so that one hostile input can never make an error record
    that Kafka refuses (which would stop the consumer on that partition for good).
    """
    admin = admin_client(settings)
    resource = kafka_admin.ConfigResource(  # type: ignore[attr-defined]  # exported, not in __all__
        kafka_admin.ResourceType.TOPIC,  # type: ignore[attr-defined]
        topic,
    )
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
    except KafkaException as exc:
        raise DependencyUnavailable(
            f"cannot read the configuration of topic {topic} ({exc.args[0]})"
        ) from None
    entry = configs.get("max.message.bytes")
    topic_limit = int(entry.value) if entry is not None and entry.value else producer_limit
    return min(topic_limit, producer_limit)


def create_topics(
    settings: CommonSettings,
    topics: Iterable[str],
    *,
    partitions: int,
    replication: int,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns those created."""
    admin = admin_client(settings)
    new = [
        kafka_admin.NewTopic(  # type: ignore[attr-defined]  # exported, not in __all__
            t, num_partitions=partitions, replication_factor=replication, config=config or {}
        )
        for t in topics
    ]
    created = []
    for topic, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            created.append(topic)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DependencyUnavailable(f"cannot create topic {topic}: {err.str()}") from None
    return created


MAX_INSTANCES_PER_HOST = 64


class TransactionalIdClaim:
    """A transactional id that no other live process on this host (network namespace) holds.

    Each candidate id is claimed by binding an abstract Unix socket named after it: the kernel
    releases it when the process dies, however it dies, and no file is written (the pods run
    with a read-only root filesystem). Without an explicit id the first free one of
    ``<base>``, ``<base>-1``, ``<base>-2``... is taken, so a restarted consumer gets its old id
    back (its init_transactions fences the dead process's open transaction at once) while two
    consumers started side by side get two ids and never fence each other. An explicit id that
    is already held is a configuration error.
    """

    def __init__(self, explicit: str, base: str) -> None:
        self._sock: socket.socket | None = None
        candidates = (
            [explicit]
            if explicit
            else [base] + [f"{base}-{i}" for i in range(1, MAX_INSTANCES_PER_HOST)]
        )
        for candidate in candidates:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind("\0loginpipe-transactional-id:" + candidate)
            except OSError:
                sock.close()
                continue
            self._sock, self.transactional_id = sock, candidate
            return
        if explicit:
            raise ConfigError(
                f"LOGINPIPE_CONSUMER_TRANSACTIONAL_ID={explicit!r} is in use by another consumer "
                "on this host, and one id fences the other: give each consumer its own id, or "
                "unset the variable for a unique default"
            )
        raise ConfigError(
            f"{MAX_INSTANCES_PER_HOST} consumers already run on this host with default "
            f"transactional ids ({base}-*): set LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"
        )

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


FENCING_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


def is_fenced(err: KafkaError) -> bool:
    """True for the errors a producer gets once another one took its transactional id."""
    return err.code() in FENCING_CODES


class LagFromStats:
    """Keeps ``loginpipe_consumer_lag_messages`` from librdkafka's statistics callback."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, stats_json: str) -> None:
        try:
            stats: dict[str, Any] = json.loads(stats_json)
        except ValueError:
            return
        seen: set[tuple[str, str]] = set()
        for topic, t in stats.get("topics", {}).items():
            for pid, p in t.get("partitions", {}).items():
                if pid == "-1":
                    continue
                if p.get("fetch_state") in ("none", "stopped"):
                    continue
                # From what this process has consumed, not from its own committed offset:
                # under exactly-once the offsets are committed by the transactional
                # producer, which librdkafka's consumer_lag does not see.
                app, end = p.get("app_offset", -1), p.get("ls_offset", -1)
                lag = end - app if app >= 0 and end >= 0 else p.get("consumer_lag", -1)
                if lag is None or lag < 0:
                    continue
                self.metrics.consumer_lag.labels(topic, pid).set(lag)
                seen.add((topic, pid))
        for gone in self._seen - seen:
            self.metrics.consumer_lag.remove(*gone)
        self._seen = seen


class Rebalances:
    """What the rebalance callbacks did: how many ran, and when each partition was taken away.

    With the cooperative assignor a rebalance takes away only some partitions; the others keep
    their fetch position, so a message of theirs already handed out must not be dropped.
    """

    def __init__(self) -> None:
        self.count = 0
        self._revoked: dict[tuple[str, int], int] = {}

    def assigned(self) -> None:
        self.count += 1

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost, or rewound: their positions restart from the commit."""
        self.count += 1
        for tp in partitions:
            self._revoked[(tp.topic, tp.partition)] = self.count

    def kept_since(self, count: int, msg: Message) -> bool:
        """Whether ``msg``'s partition stayed assigned through every rebalance after ``count``."""
        return self._revoked.get((msg.topic(), msg.partition()), 0) <= count  # type: ignore[arg-type]


def take(consumer: Consumer, n: int, wait: float, rebalances: Rebalances) -> list[Message]:
    """Up to ``n`` messages as soon as there are any, waiting at most ``wait`` seconds.

    ``Consumer.consume(n, timeout)`` returns only once it has ``n`` messages or the timeout
    has passed, which at a modest rate holds every message for the whole timeout. This takes
    what is there; if nothing is, it waits for one message and then drains what came with it.
    If a rebalance ran inside the second call and took the first message's partition away
    (even to hand it back: its position then restarts from the committed offset), that
    message is dropped: the partition's owner reads it again from the committed position. A
    partition the rebalance left alone keeps its position, so its message is kept.
    """
    msgs = consumer.consume(n, 0)
    if msgs:
        return msgs
    first = consumer.consume(1, wait)
    if not first or n == 1:
        return first
    generation = rebalances.count
    rest = consumer.consume(n - 1, 0)
    if rebalances.count != generation and not rebalances.kept_since(generation, first[0]):
        return rest
    return first + rest


def backlog(consumer: Consumer) -> int:
    """Records waiting on the consumer's assigned partitions, from what the client already
    knows: each partition's high watermark as of its last fetch, minus its position (the
    next offset the application is handed). Sends no request. A partition counts once the
    application has been handed one of its records (its position is unknown before)."""
    assigned = consumer.assignment()
    if not assigned:
        return 0
    waiting = 0
    for tp in consumer.position(assigned):
        if tp.offset < 0:
            continue
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:  # a partition the client no longer knows: nothing to count
            continue
        if high > tp.offset:
            waiting += high - tp.offset
    return waiting


def consumer_base_config(settings: CommonSettings, group_id: str) -> dict[str, Any]:
    conf = settings.kafka_config()
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            "statistics.interval.ms": 5000,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by default) whenever
            # its prefetch queue is full; at a high rate that idles the consumer most of the
            # time (measured: 255k/s bare loop at 1 s, 1.4M/s at 10 ms). The prefetch queue
            # stays bounded by queued.max.messages.kbytes, which also caps the memory it uses.
            "fetch.queue.backoff.ms": 10,
            # Prefetch per partition, in messages and in all: the defaults (100,000 messages,
            # 64 MiB) hold ~50 MiB more in memory for no measured gain (151 -> 105 MiB peak
            # RSS at the same 186k events/s).
            "queued.min.messages": 20000,
            "queued.max.messages.kbytes": 16384,
            "logger": logging.getLogger("librdkafka"),
            # Leave the group promptly when a consumer dies (a crash, SIGKILL).
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": max(settings.kafka_session_timeout_ms // 5, 500),
        }
    )
    return conf


class CallStuck(DependencyUnavailable):
    """A client call ran far past its own timeout (it hangs in librdkafka)."""


def call_bounded(fn: Callable[[float], None], timeout: float, grace: float) -> None:
    """Run ``fn(timeout)`` in a helper thread; raise CallStuck if it is not back by timeout+grace.

    A workaround for librdkafka#5456 (open in 2.16): ``send_offsets_to_transaction`` ignores
    its timeout while the group coordinator is away and can block forever, even after the
    broker is back (measured: a broker SIGKILLed under load). The caller must not touch the
    stuck client again (the consumer ends its process: the client cannot be destroyed while
    the call runs). What ``fn`` raises is raised here.
    """
    box: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            fn(timeout)
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="kafka-call", daemon=True).start()
    if not done.wait(timeout + grace):
        raise CallStuck(f"no answer {timeout + grace:g}s after a call with a {timeout:g}s timeout")
    if box:
        raise box[0]


def _forbidden(admin: AdminClient, topic: str) -> bool:
    try:
        tm = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    except KafkaException:
        return False
    err = None if tm is None else tm.error
    return err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


_RESOURCES = {
    "topic": kafka_admin.ResourceType.TOPIC,  # type: ignore[attr-defined]
    "group": kafka_admin.ResourceType.GROUP,  # type: ignore[attr-defined]
    "transactionalId": kafka_admin.ResourceType.TRANSACTIONAL_ID,  # type: ignore[attr-defined]
}
_PATTERNS = {
    "literal": kafka_admin.ResourcePatternType.LITERAL,  # type: ignore[attr-defined]
    "prefix": kafka_admin.ResourcePatternType.PREFIXED,  # type: ignore[attr-defined]
}


def acl_bindings(principal: str, acls: Iterable[KafkaAcl]) -> list[Any]:
    """The AclBindings (allow, any host) that grant ``principal`` exactly ``acls``."""
    out = []
    for acl in acls:
        for op in acl.operations:
            operation = getattr(
                kafka_admin.AclOperation,  # type: ignore[attr-defined]
                "".join("_" + c if c.isupper() else c for c in op).lstrip("_").upper(),
            )
            out.append(
                kafka_admin.AclBinding(  # type: ignore[attr-defined]
                    _RESOURCES[acl.resource],
                    acl.name,
                    _PATTERNS[acl.pattern],
                    principal,
                    "*",
                    operation,
                    kafka_admin.AclPermissionType.ALLOW,  # type: ignore[attr-defined]
                )
            )
    return out


# ---- reading a window of a topic (loginpipe errors) --------------------------------------------

Range = tuple[int, int]  # [start, end) offsets of one partition


def window_ranges(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    since_ms: int | None,
    until_ms: int | None,
    timeout: float,
) -> dict[int, Range]:
    """Each partition's offsets [start, end) of the records written from ``since_ms`` to before
    ``until_ms`` (by record timestamp), up to what the topic holds now: records written later
    are not read, so a read of a busy topic ends."""
    out: dict[int, Range] = {}
    parts = list(partitions)

    def for_times(ms: int | None, default: Callable[[int], int]) -> dict[int, int]:
        if ms is None:
            return {p: default(p) for p in parts}
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout)
        # -1: no record at or after that time in the partition: its end.
        return {
            tp.partition: tp.offset if tp.offset >= 0 else default(tp.partition) for tp in found
        }

    marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout) for p in parts}
    starts = for_times(since_ms, lambda p: marks[p][0] if since_ms is None else marks[p][1])
    ends = for_times(until_ms, lambda p: marks[p][1])
    for p in parts:
        start, end = max(starts[p], marks[p][0]), min(ends[p], marks[p][1])
        if start < end:
            out[p] = (start, end)
    return out


def read_ranges(
    consumer: Consumer,
    topic: str,
    ranges: dict[int, Range],
    on_record: Callable[[bytes | None, int, int, int | None], None],
    *,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    on_key: Callable[[bytes | None], None] | None = None,
) -> int:
    """Deliver every committed record of ``ranges`` (read_committed) to ``on_record(value,
    partition, offset, timestamp_ms)``, in offset order per partition; the number delivered.

    A partition is done at its end offset, or at its end of committed data (a transaction
    marker, or an aborted transaction's records, can be the last offsets of a range).
    ``on_key``, if given, gets each record's key just before ``on_record``.
    """
    todo = {p for p, (start, end) in ranges.items() if start < end}
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(todo)])
    delivered = 0
    while todo and not stop():
        for m in consumer.consume(1000, 0.5):
            p, offset, err = m.partition(), m.offset(), m.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise DependencyUnavailable(f"reading {topic}: {err.str()}")
            if p is None or p not in todo:
                continue
            if err is not None or offset is None:  # the end of its committed records
                todo.discard(p)
                continue
            if offset >= ranges[p][1]:
                todo.discard(p)
                continue
            kind, ts = m.timestamp()
            if on_key is not None:
                on_key(m.key())
            on_record(m.value(), p, offset, ts if kind != 0 else None)
            delivered += 1
            if offset + 1 >= ranges[p][1]:
                todo.discard(p)
        if progress is not None:
            progress(delivered)
    return delivered


def whole_topic(consumer: Consumer, topic: str, timeout: float) -> dict[int, Range]:
    """Every partition's [low, high) watermarks now."""
    md = consumer.list_topics(topic, timeout=timeout).topics[topic]
    out: dict[int, Range] = {}
    for p in md.partitions:
        out[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)
    return out


def window_reader(settings: CommonSettings, group_id: str) -> Consumer:
    """A consumer for reading ranges by assignment: no group membership, no commits (its
    ``group_id`` is only looked up: librdkafka asks for the group's coordinator)."""
    conf = consumer_base_config(settings, group_id=group_id)
    conf.update({"enable.partition.eof": True, "statistics.interval.ms": 0})
    conf.pop("session.timeout.ms")
    conf.pop("heartbeat.interval.ms")
    return Consumer(conf)
