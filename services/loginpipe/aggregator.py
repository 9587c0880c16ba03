"""The aggregator service: exact login counts per device type in Redis.

Redis, not Kafka, holds the aggregator's position. Each batch's increments and the next
offset of every partition in it are applied by one Lua script, so they are written together
or not at all. The script applies a partition's increments only if the stored position is
not past the batch's first offset, so a batch replayed after a crash, a restart or a
rebalance is never counted twice. On assignment the aggregator seeks to the stored position.
Offsets are also committed to Kafka afterwards, only so that lag is visible to monitoring.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from loginpipe import envelope, wire
from loginpipe.kafka_io import (
    LagFromStats,
    Rebalances,
    check_kafka,
    consumer_base_config,
    take,
)
from loginpipe.metrics import Metrics
from loginpipe.redis_store import (
    APPLY_BATCH_LUA,
    AUTH_ERRORS,
    auth_error,
    check_eviction,
    check_redis,
    decode_flat,
    migrate_positions,
    position_field,
    read_hash,
    split_hash,
)
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import AggregatorSettings
from loginpipe.validation import DEVICE_TYPES, normalise_device_type

log = logging.getLogger(__name__)


def device_of(m: Message) -> str | None:
    """The device type of a processed record: from the consumer's header, else its JSON."""
    headers = m.headers()
    if headers:
        for k, v in headers:  # type: ignore[misc]  # a list of (str, bytes | None) here
            if k == envelope.HEADER_DEVICE_TYPE and isinstance(v, bytes):
                d = v.decode("ascii", "replace")
                return d if d in DEVICE_TYPES else None
    try:
        obj = orjson.loads(wire.payload(m.value()))
    except orjson.JSONDecodeError:
        return None
    return normalise_device_type(obj.get("device_type")) if isinstance(obj, dict) else None


# Redis (or a slot's node) unreachable: wait. Auth errors (a ConnectionError too) come first.
_REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError)


_T = TypeVar("_T")


# How often the aggregator commits its offsets to Kafka while busy (for monitoring only).
MONITORING_COMMIT_SECONDS = 1.0


class _Stopping(Exception):
    """Asked to stop while waiting for Redis."""


class PartitionBatch:
    __slots__ = ("counts", "first", "next")

    def __init__(self, first: int) -> None:
        self.first = first
        self.next = first + 1
        self.counts: Counter[str] = Counter()


_DEVICE_BY_HEADER = {d.encode(): d for d in DEVICE_TYPES}


def plan_batch(
    msgs: list[Message],
) -> tuple[dict[int, PartitionBatch], int, int]:
    """Group a batch by partition: offsets range and counts. Returns (plan, counted, skipped).

    The hot path: the device type comes from the consumer's header, read in place; records
    without it (written by something else) take the slower ``device_of``.
    """
    header = envelope.HEADER_DEVICE_TYPE
    by_header = _DEVICE_BY_HEADER
    tally: dict[tuple[int, str | None], int] = {}
    first: dict[int, int] = {}
    last: dict[int, Message] = {}
    for m in msgs:
        if m.error() is not None:
            continue
        p: int = m.partition()  # type: ignore[assignment]  # set when there is no error
        h = m.headers()
        d = by_header.get(h[0][1]) if h and h[0][0] == header else device_of(m)  # type: ignore[arg-type,index]
        key = (p, d)
        tally[key] = tally.get(key, 0) + 1
        if p not in first:
            first[p] = m.offset()  # type: ignore[assignment]
        last[p] = m
    plan: dict[int, PartitionBatch] = {}
    for p, f in first.items():
        pb = plan[p] = PartitionBatch(f)
        pb.next = last[p].offset() + 1  # type: ignore[operator]
    uncountable = counted = 0
    for (p, d), n in tally.items():
        if d is None:
            uncountable += n
            log.warning("processed records without a device type", extra={"partition": p, "n": n})
        else:
            plan[p].counts[d] += n
            counted += n
    return plan, counted, uncountable


def script_args(topic: str, plan: dict[int, PartitionBatch], expected: dict[int, str]) -> list[Any]:
    args: list[Any] = [len(plan)]
    for p, pb in plan.items():
        args += [position_field(topic, p), expected.get(p, ""), pb.first, pb.next, len(pb.counts)]
        for d, c in pb.counts.items():
            args += [d, c]
    return args


class Aggregator:
    def __init__(
        self, settings: AggregatorSettings, metrics: Metrics, health: Health, stopper: Stopper
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.health = health
        self.stopper = stopper
        self.redis: Any = None  # redis.Redis or RedisCluster
        self.consumer: Consumer | None = None
        self._apply: Any = None
        self._last_log = time.monotonic()
        self.counts: dict[str, int] = {}
        # Per assigned partition, the position this aggregator last read or wrote in Redis.
        self.positions: dict[int, str] = {}
        self.rebalances = Rebalances()  # what the rebalance callbacks did (see kafka_io.take)
        # Offsets applied to Redis, not yet committed to Kafka (for monitoring only, see
        # _commit_for_monitoring), and when they last were.
        self.uncommitted: dict[int, int] = {}
        self.last_commit = 0.0

    def run(self) -> None:
        s = self.s
        self.redis = check_redis(s, s.startup_timeout_seconds, self.stopper)
        check_eviction(s, self.redis)
        check_kafka(s, [s.topic_processed], s.startup_timeout_seconds)
        self._redis(lambda: migrate_positions(s, self.redis, s.topic_processed))
        self._apply = self.redis.register_script(APPLY_BATCH_LUA)
        self._set_counts(self._read_hash()[0])
        conf = consumer_base_config(s, s.group_id)
        conf["stats_cb"] = LagFromStats(self.metrics)
        self.consumer = Consumer(conf)
        try:
            self.consumer.subscribe(
                [s.topic_processed], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            # Ready once the group is joined (an assignment, possibly empty, is handed out).
            self.health.set_ready(False, "joining the consumer group")
            log.info("aggregator started", extra={"group": s.group_id, "counts_key": s.counts_key})
            while not self.stopper.stopping:
                msgs = take(self.consumer, s.batch_size, 0.5, self.rebalances)
                self.health.beat()
                if msgs:
                    self._apply_batch(msgs)
                self._commit_for_monitoring(now=not msgs)
                self._maybe_log()
        finally:
            self.health.set_ready(False, "stopping")
            try:
                self._commit_for_monitoring(now=True)
                self.consumer.close()
            except Exception as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
            log.info("aggregator stopped", extra={"counts": self.counts})

    def _apply_batch(self, msgs: list[Message]) -> None:
        assert self.consumer is not None
        started = time.perf_counter()
        for m in msgs:
            err = m.error()
            if err is not None and err.fatal():
                raise KafkaException(err)
        plan, _counted, uncountable = plan_batch(msgs)
        if not plan:
            return
        topic = self.s.topic_processed
        result = self._redis_write([self.s.counts_key], script_args(topic, plan, self.positions))
        if result is None:  # stopping while Redis is away: nothing applied, no offset moves
            return
        outcomes, flat = result
        for (p, pb), outcome in zip(plan.items(), outcomes, strict=True):
            stored = outcome.decode()
            if stored == "ok" or stored == str(pb.next):  # applied (now, or by a lost reply)
                for d, c in pb.counts.items():
                    self.metrics.events_counted.labels(d).inc(c)
                self.positions[p] = str(pb.next)
                self.uncommitted[p] = pb.next
            else:
                self._resync(p, pb, stored)
        self._set_counts(split_hash(decode_flat(flat))[0])
        if uncountable:
            self.metrics.events_uncountable.inc(uncountable)
        self.metrics.messages_consumed.labels(topic).inc(len(msgs))
        self.metrics.batch_size.observe(len(msgs))
        self.metrics.batch_duration.observe(time.perf_counter() - started)
        self.metrics.last_success.set(time.time())

    def _commit_for_monitoring(self, *, now: bool = False) -> None:
        """Commit the applied offsets to Kafka: at most once a second while busy, or ``now``
        (idle, a revoke, the exit).

        Redis is the source of truth (each partition's position is stored with its counts);
        this commit only makes the group's lag visible to monitoring and the autoscaler. One
        per batch cost the broker an offset-commit write per batch: hundreds a second at a
        modest rate, each with the broker's CPU shared with everything else.
        """
        if not self.uncommitted or self.consumer is None:
            return
        t = time.monotonic()
        if not (now or t - self.last_commit >= MONITORING_COMMIT_SECONDS):
            return
        topic = self.s.topic_processed
        offsets = [TopicPartition(topic, p, o) for p, o in self.uncommitted.items()]
        self.uncommitted = {}
        self.last_commit = t
        try:
            # Asynchronous, at exit too: close() waits for commits in flight, within its own
            # bounds; a synchronous one could eat the grace period with the broker away.
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("offset commit for monitoring failed", extra={"error": str(exc)})

    def _resync(self, p: int, pb: PartitionBatch, stored: str) -> None:
        """The stored position is not the one this aggregator expected: never count blindly.

        Another aggregator moved it (a rebalance this one has not seen yet), or Redis lost
        writes (a restart without the last second of AOF, a failover): either way the stored
        position is the truth, so resume from it and count from there. If it is the expected
        one, the batch starts before it: the log is behind the position (the topic was
        recreated or truncated). What lies before the position is skipped and the operator
        told; a batch that straddles the position is read again from it, so its records from
        the position on are counted.
        """
        assert self.consumer is not None
        self.metrics.batches_skipped.inc()
        expected = self.positions.get(p, "")
        if stored == expected:
            log.error(
                "processed topic is behind the stored position (recreated?): records before "
                "the position not counted",
                extra={"partition": p, "position": stored, "first": pb.first, "next": pb.next},
            )
            if pb.next > int(stored):
                self.consumer.seek(TopicPartition(self.s.topic_processed, p, int(stored)))
            return
        log.warning(
            "stored position differs from this aggregator's: resuming from the stored one",
            extra={"partition": p, "expected": expected, "stored": stored, "first": pb.first},
        )
        self.positions[p] = stored
        offset = int(stored) if stored else OFFSET_BEGINNING
        self.consumer.seek(TopicPartition(self.s.topic_processed, p, offset))

    def _redis_write(self, keys: list[str], args: list[Any]) -> Any:
        """Apply the batch, waiting (unready) while Redis is away; the script makes retries safe.

        Returns None if the service is asked to stop while Redis is away: the batch is then
        not applied and no offset moves (the next owner reads it again).
        """
        try:
            result = self._redis(lambda: self._apply(keys=keys, args=args))
        except _Stopping:
            log.warning("stopping while Redis is unavailable: batch left for a re-read")
            return None
        if not self.health.ready()[0]:
            self.health.set_ready(True)
        return result

    def _read_hash(self) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
        """Counts and positions, waiting (unready) while Redis is away."""
        return self._redis(lambda: read_hash(self.redis, self.s.counts_key))

    def _redis(self, call: Callable[[], _T]) -> _T:
        """Run a Redis call, waiting (unready, backoff up to 5 s) for as long as Redis is away.

        Raises _Stopping if the service is asked to stop meanwhile. Wrong credentials or
        missing rights end the service (exit 2): waiting cannot mend them.
        """
        delay = 0.1
        while True:
            try:
                return call()
            except AUTH_ERRORS as exc:
                raise auth_error(self.s, exc) from None
            except _REDIS_AWAY as exc:
                if self.stopper.stopping:
                    raise _Stopping from None
                self.health.set_ready(False, f"Redis unavailable: {exc}")
                log.warning("Redis unavailable, retrying", extra={"error": str(exc), "in": delay})
                self.stopper.wait(delay)
                self.health.beat()
                delay = min(delay * 2, 5.0)

    def _set_counts(self, counts: dict[str, int]) -> None:
        for d in DEVICE_TYPES:
            counts.setdefault(d, 0)
        self.counts = counts
        for d, c in counts.items():
            if d in DEVICE_TYPES:
                self.metrics.device_logins.labels(d).set(c)

    def _maybe_log(self) -> None:
        every = self.s.log_interval_seconds
        if every and time.monotonic() - self._last_log >= every:
            self._last_log = time.monotonic()
            log.info("device counts", extra={"counts": self.counts})

    # ---- rebalance callbacks ------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Resume every assigned partition from the position stored in Redis.

        Redis away: wait for it, unready, for as long as it takes (the group's other members
        go on; this one holds its partitions without reading them). Asked to stop meanwhile:
        take nothing, the next owner resumes from Redis.
        """
        self.rebalances.assigned()
        self.positions = {}
        try:
            stored = self._read_hash()[1].get(self.s.topic_processed, {})
        except _Stopping:
            log.info("stopping while Redis is unavailable: partitions not taken")
            return
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            self.positions[tp.partition] = (
                str(stored[tp.partition]) if tp.partition in stored else ""
            )
        consumer.assign(partitions)
        self.health.set_ready(True)
        log.info(
            "partitions assigned",
            extra={"positions": {tp.partition: stored.get(tp.partition) for tp in partitions}},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.revoked(partitions)
        self._commit_for_monitoring(now=True)  # while they are still this member's
        self.positions = {}
        consumer.unassign()
