"""The consumer service: validate every input event and route it, exactly once.

Exactly-once (the default) is Kafka's read-process-write transaction: the routed records and
the input offsets commit together, readers use ``read_committed``. After any crash the input
is re-read from the last committed offsets and the open transaction is aborted (fenced by
the same ``transactional.id``), so every input offset appears exactly once across the
processed and error topics.

At-least-once commits the input offsets only after every routed record is acknowledged; a
crash between the two re-routes the records since the last commit (duplicates, no loss).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from loginpipe import envelope
from loginpipe.exceptions import (
    ConfigError,
    DependencyUnavailable,
    ProducerHung,
    RepeatingFailure,
)
from loginpipe.kafka_io import (
    CallStuck,
    LagFromStats,
    Rebalances,
    TransactionalIdClaim,
    call_bounded,
    check_kafka,
    consumer_base_config,
    is_fenced,
    max_record_bytes,
    take,
)
from loginpipe.metrics import Metrics
from loginpipe.retry import FailureStreak
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import ConsumerSettings
from loginpipe.validation import DEVICE_TYPES, Invalid, Valid, validate

log = logging.getLogger(__name__)

_TXN_OP_TIMEOUT = 30.0
# How long past its own timeout a transaction call may run before it counts as hung (see
# kafka_io.call_bounded): the process then ends (ProducerHung).
_STUCK_GRACE = 10.0
# The smallest error-record limit the consumer starts with: an envelope of an input whose bytes
# are all cut away still needs about 1 KiB, plus the record's own overhead.
MIN_ERROR_RECORD_BYTES = 4096
# One header list per device type, built once and shared by every produced record.
_DEVICE_HEADERS: dict[str, list[tuple[str, str | bytes | None]]] = {
    d: [(envelope.HEADER_DEVICE_TYPE, d.encode())] for d in DEVICE_TYPES
}


class Fenced(ConfigError):
    """Another producer took this consumer's transactional id: two consumers share one id."""


class Router:
    def __init__(
        self, settings: ConsumerSettings, metrics: Metrics, health: Health, stopper: Stopper
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.health = health
        self.stopper = stopper
        self.exactly_once = settings.delivery == "exactly_once"
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.claim: TransactionalIdClaim | None = None
        self.max_record_bytes = envelope.DEFAULT_MAX_RECORD_BYTES
        self.streak = FailureStreak(settings.failure_budget_seconds)
        # State of the open transaction (or of the uncommitted at-least-once window).
        self.in_txn = False
        self.txn_started = 0.0
        # Per input partition: the next offset to commit.
        self.next_offsets: dict[int, int] = {}
        self.pending_valid: Counter[str] = Counter()
        self.pending_invalid: Counter[str] = Counter()
        # Partitions read from since the window opened (a failed batch included): what an
        # abort must rewind.
        self.window_partitions: set[int] = set()
        self.delivery_errors: list[KafkaError] = []  # at-least-once: failed deliveries
        self.rebalances = Rebalances()  # what the rebalance callbacks did (see kafka_io.take)
        self.producer_hung = False  # a call into the producer never came back

    # ---- set-up -----------------------------------------------------------------------
    def _make_clients(self) -> None:
        s = self.s
        self.producer = Producer(self._producer_config())
        cconf = consumer_base_config(s, s.group_id)
        cconf["stats_cb"] = LagFromStats(self.metrics)
        # Incremental rebalancing: when a consumer joins or leaves (an autoscaler's step), only
        # the partitions that move stop; the others keep their position and their open
        # transaction. The eager default revokes every member's every partition at each step.
        cconf["partition.assignment.strategy"] = "cooperative-sticky"
        self.consumer = Consumer(cconf)

    def _producer_config(self) -> dict[str, Any]:
        s = self.s
        pconf: dict[str, Any] = s.kafka_config()
        pconf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                # A few commit intervals' worth at full speed; bounded, so memory stays small
                # (the loop waits in _produce_blocking when it is full).
                "queue.buffering.max.messages": 50_000,
                "queue.buffering.max.kbytes": 16_384,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        if self.exactly_once:
            assert self.claim is not None
            pconf["transactional.id"] = self.claim.transactional_id
            pconf["transaction.timeout.ms"] = s.transaction_timeout_ms
        else:
            pconf["on_delivery"] = self._on_delivery
        return pconf

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.metrics.produce_errors.labels(msg.topic()).inc()
            self.delivery_errors.append(err)

    # ---- main loop ----------------------------------------------------------------------
    def run(self) -> None:
        s = self.s
        check_kafka(
            s, [s.topic_input, s.topic_processed, s.topic_errors], s.startup_timeout_seconds
        )
        self.max_record_bytes = max_record_bytes(
            s, s.topic_errors, envelope.DEFAULT_MAX_RECORD_BYTES
        )
        if self.max_record_bytes < MIN_ERROR_RECORD_BYTES:
            raise ConfigError(
                f"topic {s.topic_errors} takes records of at most {self.max_record_bytes} bytes "
                f"(max.message.bytes), too small for an error envelope: raise it to at least "
                f"{MIN_ERROR_RECORD_BYTES} (the broker's default is 1048588), or set "
                "LOGINPIPE_TOPIC_ERRORS to a topic that takes them"
            )
        if self.exactly_once:
            self.claim = TransactionalIdClaim(s.transactional_id, s.default_transactional_id())
        self._make_clients()
        assert self.producer is not None and self.consumer is not None
        try:
            if self.exactly_once:
                self._init_transactions()
            self.consumer.subscribe(
                [s.topic_input],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            # Ready once the group is joined (an assignment, possibly empty, is handed out).
            self.health.set_ready(False, "joining the consumer group")
            log.info(
                "consumer started",
                extra={
                    "delivery": s.delivery,
                    "group": s.group_id,
                    "transactional_id": self.claim.transactional_id if self.claim else None,
                },
            )
            self._loop()
            # Clean stop: what was routed so far is complete, so commit it.
            if self.in_txn:
                self._commit()
        except KafkaException as exc:
            err: KafkaError = self._underlying(exc.args[0])
            if not is_fenced(err):
                if self.in_txn and self.exactly_once:
                    self._abort_quietly()
                raise
            assert self.claim is not None
            # Its open transaction belongs to the new owner of the id now: nothing to abort.
            self._reset_window()
            raise Fenced(
                f"another producer took transactional id {self.claim.transactional_id!r} and "
                f"fenced this consumer ({err.str()}): every consumer needs its own id; set "
                "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID uniquely per consumer, or unset it for "
                "the default loginpipe-consumer-<hostname>"
            ) from None
        except CallStuck as exc:  # librdkafka#5456: see kafka_io.call_bounded
            # The hung producer cannot be destroyed while its call runs, and left alive it may
            # bump its epoch once the broker is back and fence a replacement: the process
            # ends instead (no abort, no flush); its restart fences the hung one and resumes.
            self.producer_hung = True
            raise ProducerHung(
                f"a Kafka transaction call hung ({exc}; librdkafka#5456: the broker or the "
                "group coordinator went away mid-commit): exiting so that a restart resumes "
                "from the committed offsets"
            ) from None
        except BaseException:
            if self.in_txn and self.exactly_once and not self.producer_hung:
                self._abort_quietly()
            raise
        finally:
            self.health.set_ready(False, "stopping")
            self._close()
            if self.claim is not None:
                self.claim.release()

    def _init_transactions(self) -> None:
        assert self.producer is not None
        s = self.s
        try:
            self.producer.init_transactions(max(s.startup_timeout_seconds, 10.0))
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.INVALID_TRANSACTION_TIMEOUT:
                raise ConfigError(
                    f"the broker refuses LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS="
                    f"{s.transaction_timeout_ms}: it is above the broker's "
                    "transaction.max.timeout.ms (15 minutes by default); set it lower"
                ) from None
            raise DependencyUnavailable(
                f"cannot start transactions on {s.kafka_bootstrap} ({err.str()}): check that "
                "the broker is up and that this client may use its transactional id"
            ) from None

    def _underlying(self, err: KafkaError) -> KafkaError:
        """The real error behind librdkafka's generic fatal one.

        Once the producer is in its fatal state, ``produce()`` raises only ``_FATAL`` ("Local:
        Fatal error"); a transactional call raises the error that made it fatal (``_FENCED``,
        say), at once and without a request (measured on librdkafka 2.16).
        """
        if err.code() != KafkaError._FATAL or self.producer is None or not self.exactly_once:
            return err
        try:
            self.producer.abort_transaction(1.0)
        except KafkaException as exc:
            underlying: KafkaError = exc.args[0]
            return underlying
        return err

    def _loop(self) -> None:
        assert self.consumer is not None
        interval = self.s.commit_interval_ms / 1000.0
        batch_size = self.s.batch_size
        while not self.stopper.stopping:
            try:
                if self.in_txn:
                    wait = max(0.0, min(0.5, self.txn_started + interval - time.monotonic()))
                else:
                    wait = 0.5
                msgs = take(self.consumer, batch_size, wait, self.rebalances)
                self.health.beat()
                if msgs:
                    self._process(msgs)
                if self.in_txn and time.monotonic() - self.txn_started >= interval:
                    self._commit()
            except KafkaException as exc:
                original: KafkaError = exc.args[0]
                err = self._underlying(original)
                fatal = err.fatal() or original.code() == KafkaError._FATAL
                if not (self.exactly_once and fatal) or is_fenced(err):
                    raise KafkaException(err) from None
                self._replace_producer(err)

    def _process(self, msgs: list[Message]) -> None:
        """Validate and route one batch inside the open window. The hot path."""
        producer = self.producer
        assert producer is not None
        started = time.perf_counter()
        if not self.in_txn:
            self._begin()
        self.window_partitions.update(m.partition() for m in msgs)  # type: ignore[misc]
        produce = producer.produce
        s = self.s
        processed, errors, source_topic = s.topic_processed, s.topic_errors, s.topic_input
        valid_counts = self.pending_valid
        nxt = self.next_offsets
        n = 0
        try:
            n = self._route(msgs, produce, processed, errors, source_topic, valid_counts, nxt)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            # Once a transaction has failed, produce() refuses with _STATE: abort and rewind.
            if not self.exactly_once or not (
                err.txn_requires_abort() or err.code() == KafkaError._STATE
            ):
                raise
            self._failed(err, "producing")
            return
        producer.poll(0)
        if n:
            self.metrics.messages_consumed.labels(source_topic).inc(n)
            self.metrics.batch_size.observe(n)
            self.metrics.batch_duration.observe(time.perf_counter() - started)

    def _route(
        self,
        msgs: list[Message],
        produce: Any,
        processed: str,
        errors: str,
        source_topic: str,
        valid_counts: Counter[str],
        nxt: dict[int, int],
    ) -> int:
        device_headers = _DEVICE_HEADERS
        n = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error", extra={"error": err.str()})
                continue
            # Set on every message without an error.
            partition: int = m.partition()  # type: ignore[assignment]
            offset: int = m.offset()  # type: ignore[assignment]
            value = m.value()
            result = validate(value)
            if isinstance(result, Valid):
                device = result.device_type
                try:
                    produce(processed, result.value, m.key(), headers=device_headers[device])
                except BufferError:
                    self._produce_blocking(processed, m.key(), result.value, device_headers[device])
                valid_counts[device] += 1
            else:
                self._route_invalid(m, result, source_topic, partition, offset, errors)
            nxt[partition] = offset + 1
            n += 1
        return n

    def _route_invalid(
        self,
        m: Message,
        result: Invalid,
        topic: str,
        partition: int,
        offset: int,
        errors_topic: str,
    ) -> None:
        ts_type, ts = m.timestamp()
        key = m.key()
        body = envelope.build(
            result,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=ts if ts_type else None,
            key=key,
            value=m.value(),
            detected_at_ms=int(time.time() * 1000),
            max_record_bytes=self.max_record_bytes,
        )
        self._produce_blocking(
            errors_topic,
            envelope.record_key(key),
            body,
            [(envelope.HEADER_REASON, result.reason.value)],
        )
        self.pending_invalid[result.reason.value] += 1

    def _produce_blocking(
        self, topic: str, key: bytes | None, value: bytes, headers: list[Any]
    ) -> None:
        """Produce, waiting for room when the local queue is full."""
        assert self.producer is not None
        give_up = None
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain
                if self.stopper.stopping:  # a stop while the broker is away must not hang
                    give_up = give_up or time.monotonic() + 5.0
                    if time.monotonic() > give_up:
                        raise KafkaException(
                            KafkaError(KafkaError._QUEUE_FULL, "stopping with a full queue")
                        ) from None
                self.producer.poll(0.05)

    # ---- transactions -------------------------------------------------------------------
    def _begin(self) -> None:
        if self.exactly_once:
            assert self.producer is not None
            self.producer.begin_transaction()
        self.in_txn = True
        self.txn_started = time.monotonic()

    def _offsets(self) -> list[TopicPartition]:
        topic = self.s.topic_input
        return [TopicPartition(topic, p, o) for p, o in self.next_offsets.items()]

    def _commit(self) -> None:
        """Make the open window durable: a transaction commit, or flush then offset commit."""
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None
        offsets = self._offsets()
        if self.exactly_once:
            try:
                group = consumer.consumer_group_metadata()
                # One budget for the whole commit, so a stop or a revoke waits at most
                # _TXN_OP_TIMEOUT for it (the pod's grace period is sized on that).
                deadline = time.monotonic() + _TXN_OP_TIMEOUT
                t0 = time.perf_counter()
                self._retrying(
                    lambda t: producer.send_offsets_to_transaction(offsets, group, t), deadline
                )
                t1 = time.perf_counter()
                self._retrying(lambda t: producer.commit_transaction(t), deadline)
                t2 = time.perf_counter()
                if t2 - t0 > 0.1:
                    log.warning(
                        "slow commit",
                        extra={"send_offsets": round(t1 - t0, 3), "commit": round(t2 - t1, 3)},
                    )
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                # Abortable, or still retriable when the commit's budget ran out (librdkafka:
                # a timed-out commit may be retried or aborted): abort, rewind, retry later.
                if not (err.txn_requires_abort() or err.retriable()) or err.fatal():
                    raise
                self._failed(err, "committing")
                return
        else:
            t0 = time.perf_counter()
            remaining = producer.flush(_TXN_OP_TIMEOUT)
            if remaining or self.delivery_errors:
                # Nothing of the window is committed: rewind and deliver it all again
                # (at-least-once: what was delivered before the failure comes twice).
                failed = (
                    self.delivery_errors[0]
                    if self.delivery_errors
                    else KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} records undelivered")
                )
                self.delivery_errors.clear()
                self._failed(failed, "delivering")
                return
            t1 = time.perf_counter()
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
            t2 = time.perf_counter()
            if t2 - t0 > 0.1:
                log.warning(
                    "slow commit", extra={"flush": round(t1 - t0, 3), "commit": round(t2 - t1, 3)}
                )
        self.metrics.transactions.labels("committed").inc()
        if self.streak.succeeded():
            log.info("transactions succeed again")
            self.health.set_ready(True)
        self._count_committed()
        self.metrics.last_success.set(time.time())
        self._reset_window()

    def _retrying(self, op: Any, deadline: float) -> None:
        """Run ``op(timeout)`` until it succeeds, retrying retriable errors until ``deadline``."""
        while True:
            try:
                call_bounded(op, max(0.1, deadline - time.monotonic()), _STUCK_GRACE)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    log.info("retrying transaction operation", extra={"error": err.str()})
                    continue
                raise

    def _count_committed(self) -> None:
        m = self.metrics
        n_valid = sum(self.pending_valid.values())
        n_invalid = sum(self.pending_invalid.values())
        for d, c in self.pending_valid.items():
            m.events_valid.labels(d).inc(c)
        for r, c in self.pending_invalid.items():
            m.events_invalid.labels(r).inc(c)
        if n_valid:
            m.messages_produced.labels(self.s.topic_processed).inc(n_valid)
        if n_invalid:
            m.messages_produced.labels(self.s.topic_errors).inc(n_invalid)

    def _reset_window(self) -> None:
        self.in_txn = False
        self.window_partitions.clear()
        self.next_offsets.clear()
        self.pending_valid.clear()
        self.pending_invalid.clear()

    def _failed(self, err: KafkaError, during: str) -> None:
        """A transaction failed: abort and rewind, back off, and give up once it keeps failing.

        Unready while it retries; one log line per distinct cause in a streak; after
        LOGINPIPE_CONSUMER_FAILURE_BUDGET_SECONDS of failures with no success, an exit naming
        the cause instead of aborting and retrying forever.
        """
        backoff = self._note_failure(err, during, "transaction failed, aborting and rewinding")
        if self.exactly_once:
            assert self.producer is not None
            self._retry_in_budget(self.producer.abort_transaction, "aborting")
        self.metrics.transactions.labels("aborted").inc()
        self._rewind()
        self._give_up_if_exhausted(err, during)
        self.stopper.wait(backoff)

    def _replace_producer(self, err: KafkaError) -> None:
        """The producer failed fatally (say, the broker died mid-commit): start a fresh one.

        The fresh producer's init_transactions, with the same transactional id, bumps its
        epoch and aborts whatever the old one left open; the window's partitions are rewound
        to their committed offsets, so every input is routed again in a new transaction.
        """
        backoff = self._note_failure(
            err,
            "running",
            "producer failed fatally, replacing it and rewinding",
        )
        old, self.producer = self.producer, None
        if old is not None:
            try:
                old.purge()  # nothing it holds may be sent any more; destroy it without waiting
            except Exception as exc:
                log.debug("purge of the failed producer", extra={"error": str(exc)})
            del old
        self.producer = Producer(self._producer_config())
        if not self._retry_in_budget(self.producer.init_transactions, "initialising transactions"):
            self._reset_window()  # asked to stop meanwhile
            return
        self.metrics.transactions.labels("aborted").inc()
        self._rewind()
        self._give_up_if_exhausted(err, "running")
        self.stopper.wait(backoff)

    def _retry_in_budget(self, call: Callable[[float], Any], during: str) -> bool:
        """Run a transaction call, retrying a retriable failure (a broker away) with backoff.

        Within the failure budget; False if asked to stop meanwhile. A failure that is not
        retriable (fatal: the producer's state is lost) raises, for _replace_producer.
        """
        while True:
            try:
                call_bounded(call, _TXN_OP_TIMEOUT, _STUCK_GRACE)
                return True
            except KafkaException as exc:
                e: KafkaError = exc.args[0]
                if not e.retriable():
                    raise
                if self.stopper.stopping:
                    return False
                backoff = self._note_failure(e, during, f"{during} failed, retrying")
                self._give_up_if_exhausted(e, during)
                self.stopper.wait(backoff)

    def _note_failure(self, err: KafkaError, during: str, message: str) -> float:
        """Count a failure, log it once per cause in the streak, go unready; the backoff."""
        cause = err.name()
        new, backoff = self.streak.failed(cause)
        self.metrics.transaction_failures.labels(cause).inc()
        if new and message:
            log.warning(message, extra={"cause": cause, "error": err.str(), "during": during})
        self.health.set_ready(False, f"transactions failing: {cause}")
        return backoff

    def _give_up_if_exhausted(self, err: KafkaError, during: str) -> None:
        if self.streak.exhausted():
            raise RepeatingFailure(
                f"transactions kept failing for {self.streak.seconds:.0f}s "
                f"({self.streak.count} in a row, while {during}): {err.name()}: {err.str()}. "
                "Check the consumer's rights on its topics (WRITE on the output topics), that "
                "the output topics exist and take records of this size (max.message.bytes), "
                "and the broker's log; LOGINPIPE_CONSUMER_FAILURE_BUDGET_SECONDS sets how long "
                "to retry"
            )

    def _rewind(self) -> None:
        """Re-read the window's inputs from the committed offsets, so that nothing is lost.

        Not when stopping: the next owner of the partitions starts from there anyway. Only
        the partitions the window read from, so the others keep their prefetched data.
        """
        assert self.consumer is not None
        rewind = [tp for tp in self.consumer.assignment() if tp.partition in self.window_partitions]
        if rewind and not self.stopper.stopping:
            for tp in self.consumer.committed(rewind, timeout=_TXN_OP_TIMEOUT):
                if tp.error is not None:
                    # Never "from the beginning" on an error: that would route again what the
                    # committed transactions already routed. Stop; the restart reads it back.
                    raise KafkaException(tp.error)
                # No committed offset yet (OFFSET_INVALID): the group starts at the beginning
                # (auto.offset.reset=earliest), and so does the rewind.
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        self._reset_window()

    def _abort_quietly(self) -> None:
        try:
            assert self.producer is not None
            self.producer.abort_transaction(5.0)
            self.metrics.transactions.labels("aborted").inc()
        except Exception as exc:
            log.warning(
                "abort on exit failed (the broker will time it out)", extra={"error": str(exc)}
            )
        self._reset_window()

    # ---- rebalance callbacks (run inside consume()) -------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.assigned()
        self.health.set_ready(True)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.revoked(partitions)
        # Everything handed out so far has been routed: commit it before the partitions go.
        if self.in_txn:
            self._commit()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.revoked(partitions)
        # Offsets can no longer be committed for these: abort; the new owner re-reads them.
        if self.in_txn:
            if self.exactly_once and not self.producer_hung:
                self._abort_quietly()
            else:
                self._reset_window()

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leave the group now, so it rebalances at once
            except Exception as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
        if self.producer is not None and not self.producer_hung:
            try:
                left = self.producer.flush(5.0)
            except KafkaException as exc:  # a fenced or otherwise failed producer: nothing to send
                log.warning("final flush failed", extra={"error": str(exc.args[0])})
            else:
                if left:
                    log.warning("records left unflushed at exit", extra={"count": left})
        log.info("consumer stopped")
