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
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from loginpipe import envelope
from loginpipe.exceptions import DependencyUnavailable
from loginpipe.kafka_io import LagFromStats, check_kafka, consumer_base_config, take
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper, retry_until
from loginpipe.settings import AggregatorSettings, RedisSettings, mask_url
from loginpipe.validation import DEVICE_TYPES, normalise_device_type

log = logging.getLogger(__name__)

# KEYS[1] counts hash, KEYS[2] positions hash.
# ARGV: number of partitions, then for each: partition, the position this aggregator expects
# to find stored ('' for none), first offset, next offset, number of (field, increment) pairs,
# the pairs. A partition's increments are applied, and its position moved to the next offset,
# only if the stored position is the expected one (compare-and-set) and the batch does not
# start before it. Returns {per partition 'ok' or the stored position ('' for none)} and the
# counts hash as field, value, ...
APPLY_BATCH_LUA = """
local n = tonumber(ARGV[1])
local i = 2
local out = {}
for _ = 1, n do
  local p, expected = ARGV[i], ARGV[i + 1]
  local first, nxt, nf = tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local stored = redis.call('HGET', KEYS[2], p) or ''
  if stored == expected and (expected == '' or first >= tonumber(expected)) then
    for j = 0, nf - 1 do
      redis.call('HINCRBY', KEYS[1], ARGV[i + 5 + 2 * j], ARGV[i + 6 + 2 * j])
    end
    redis.call('HSET', KEYS[2], p, nxt)
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = stored
  end
  i = i + 5 + 2 * nf
end
return {out, redis.call('HGETALL', KEYS[1])}
"""


def redis_client(s: RedisSettings, timeout: float = 5.0) -> redis.Redis:
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if s.redis_password:
        kwargs["password"] = s.redis_password.reveal()
    return redis.Redis.from_url(s.redis_url, **kwargs)


def check_redis(s: RedisSettings, timeout: float) -> redis.Redis:
    client = redis_client(s)
    try:
        retry_until("Redis", client.ping, timeout)
    except redis.AuthenticationError as exc:
        raise DependencyUnavailable(
            f"Redis at {mask_url(s.redis_url)} refused the credentials ({exc}): check "
            "LOGINPIPE_REDIS_PASSWORD or the password in LOGINPIPE_REDIS_URL"
        ) from None
    except redis.RedisError as exc:
        raise DependencyUnavailable(
            f"cannot reach Redis at {mask_url(s.redis_url)} within {timeout:g}s ({exc}): check "
            "that Redis is up and that LOGINPIPE_REDIS_URL points at it"
        ) from None
    return client


def read_counts(client: redis.Redis, key: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    counts = {d: 0 for d in DEVICE_TYPES}
    for k, v in raw.items():
        counts[k.decode()] = int(v)
    return counts


def device_of(m: Message) -> str | None:
    """The device type of a processed record: from the consumer's header, else its JSON."""
    headers = m.headers()
    if headers:
        for k, v in headers:  # type: ignore[misc]  # a list of (str, bytes | None) here
            if k == envelope.HEADER_DEVICE_TYPE and isinstance(v, bytes):
                d = v.decode("ascii", "replace")
                return d if d in DEVICE_TYPES else None
    try:
        obj = orjson.loads(m.value() or b"")
    except orjson.JSONDecodeError:
        return None
    return normalise_device_type(obj.get("device_type")) if isinstance(obj, dict) else None


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


def script_args(plan: dict[int, PartitionBatch], expected: dict[int, str]) -> list[Any]:
    args: list[Any] = [len(plan)]
    for p, pb in plan.items():
        args += [p, expected.get(p, ""), pb.first, pb.next, len(pb.counts)]
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
        self.redis: redis.Redis | None = None
        self.consumer: Consumer | None = None
        self._apply: Any = None
        self._last_log = time.monotonic()
        self.counts: dict[str, int] = {}
        # Per assigned partition, the position this aggregator last read or wrote in Redis.
        self.positions: dict[int, str] = {}
        self.rebalances = 0

    def run(self) -> None:
        s = self.s
        self.redis = check_redis(s, s.startup_timeout_seconds)
        check_kafka(s, [s.topic_processed], s.startup_timeout_seconds)
        self._apply = self.redis.register_script(APPLY_BATCH_LUA)
        self._set_counts(read_counts(self.redis, s.counts_key))
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
                msgs = take(self.consumer, s.batch_size, 0.5, self)
                self.health.beat()
                if msgs:
                    self._apply_batch(msgs)
                self._maybe_log()
        finally:
            self.health.set_ready(False, "stopping")
            try:
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
        keys = [self.s.counts_key, self.s.offsets_key(self.s.topic_processed)]
        args = script_args(plan, self.positions)
        result = self._redis_write(keys, args)
        outcomes, flat_counts = result
        committed: list[TopicPartition] = []
        topic = self.s.topic_processed
        for (p, pb), outcome in zip(plan.items(), outcomes, strict=True):
            stored = outcome.decode()
            if stored == "ok" or stored == str(pb.next):  # applied (now, or by a lost reply)
                for d, c in pb.counts.items():
                    self.metrics.events_counted.labels(d).inc(c)
                self.positions[p] = str(pb.next)
                committed.append(TopicPartition(topic, p, pb.next))
            else:
                self._resync(p, pb, stored)
        self._set_counts(
            {
                flat_counts[i].decode(): int(flat_counts[i + 1])
                for i in range(0, len(flat_counts), 2)
            }
        )
        if uncountable:
            self.metrics.events_uncountable.inc(uncountable)
        self.metrics.messages_consumed.labels(topic).inc(len(msgs))
        self.metrics.batch_size.observe(len(msgs))
        self.metrics.batch_duration.observe(time.perf_counter() - started)
        self.metrics.last_success.set(time.time())
        # Redis is the source of truth; this commit only makes lag visible to monitoring.
        if not committed:
            return
        try:
            self.consumer.commit(offsets=committed, asynchronous=True)
        except KafkaException as exc:
            log.debug("offset commit for monitoring failed", extra={"error": str(exc)})

    def _resync(self, p: int, pb: PartitionBatch, stored: str) -> None:
        """The stored position is not the one this aggregator expected: never count blindly.

        Another aggregator moved it (a rebalance this one has not seen yet), or Redis lost
        writes (a restart without the last second of AOF, a failover): either way the stored
        position is the truth, so resume from it and count from there. If it is the expected
        one, the batch starts before it: the log is behind the position (the topic was
        recreated or truncated); the batch is skipped and the operator told.
        """
        assert self.consumer is not None
        self.metrics.batches_skipped.inc()
        expected = self.positions.get(p, "")
        if stored == expected:
            log.error(
                "processed topic is behind the stored position (recreated?): batch not counted",
                extra={"partition": p, "position": stored, "first": pb.first},
            )
            return
        log.warning(
            "stored position differs from this aggregator's: resuming from the stored one",
            extra={"partition": p, "expected": expected, "stored": stored, "first": pb.first},
        )
        self.positions[p] = stored
        offset = int(stored) if stored else OFFSET_BEGINNING
        self.consumer.seek(TopicPartition(self.s.topic_processed, p, offset))

    def _redis_write(self, keys: list[str], args: list[Any]) -> Any:
        """Apply the batch, retrying while Redis is away; the script makes retries safe."""
        delay = 0.1
        while True:
            try:
                result = self._apply(keys=keys, args=args)
                if not self.health.ready()[0]:
                    self.health.set_ready(True)
                return result
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.stopper.stopping:
                    raise
                self.health.set_ready(False, f"Redis unavailable: {exc}")
                log.warning("Redis unavailable, retrying", extra={"error": str(exc)})
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
        """Resume every assigned partition from the position stored in Redis."""
        assert self.redis is not None
        key = self.s.offsets_key(self.s.topic_processed)
        stored = retry_until("Redis", lambda: self.redis.hgetall(key), 30.0, self.stopper)  # type: ignore[union-attr]
        positions = {int(k): int(v) for k, v in stored.items()}
        self.rebalances += 1
        self.positions = {}
        for tp in partitions:
            tp.offset = positions.get(tp.partition, OFFSET_BEGINNING)
            self.positions[tp.partition] = (
                str(positions[tp.partition]) if tp.partition in positions else ""
            )
        consumer.assign(partitions)
        self.health.set_ready(True)
        log.info(
            "partitions assigned",
            extra={"positions": {tp.partition: positions.get(tp.partition) for tp in partitions}},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances += 1
        self.positions = {}
        consumer.unassign()
