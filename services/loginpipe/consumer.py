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
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from loginpipe import envelope, wire
from loginpipe.commit_window import (
    AckedWindow,
    CommitPacer,
    CommitWindow,
    TransactionalWindow,
)
from loginpipe.exceptions import ConfigError, ProducerHung
from loginpipe.kafka_io import (
    CallStuck,
    LagFromStats,
    Rebalances,
    TransactionalIdClaim,
    backlog,
    check_kafka,
    consumer_base_config,
    is_fenced,
    max_record_bytes,
    take,
)
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import ConsumerSettings
from loginpipe.validation import Invalid, Valid, validate

log = logging.getLogger(__name__)

# One output record: topic, value, key, headers.
Record = tuple[str, bytes, bytes | None, Any]
# librdkafka's per-record delivery report: (error or None, message).
DeliveryReport = Callable[[KafkaError | None, Message], None]

# The smallest error-record limit the consumer starts with: an envelope of an input whose bytes
# are all cut away still needs about 1 KiB, plus the record's own overhead.
MIN_ERROR_RECORD_BYTES = 4096


class Fenced(ConfigError):
    """Another producer took this consumer's transactional id: two consumers share one id."""


class Router:
    """The consumer service: the main loop, the hot path and the rebalance callbacks.

    What was routed since the last commit, and committing it, is the commit window's
    (``commit_window``): a Kafka transaction, or flush-then-commit at least once.
    """

    def __init__(
        self, settings: ConsumerSettings, metrics: Metrics, health: Health, stopper: Stopper
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.health = health
        self.stopper = stopper
        self.exactly_once = settings.delivery == "exactly_once"
        self.consumer: Consumer | None = None
        self.window: CommitWindow | None = None
        self.claim: TransactionalIdClaim | None = None
        self.max_record_bytes = envelope.DEFAULT_MAX_RECORD_BYTES
        # What goes before each output record's JSON: nothing (plain JSON), or the registry's
        # wire-format frame with the format's schema id (LOGINPIPE_CONSUMER_OUTPUT_FORMAT).
        self.frame_processed = self.frame_errors = b""
        self.rebalances = Rebalances()  # what the rebalance callbacks did (see kafka_io.take)
        seconds = metrics.consumer_seconds
        self._seconds_consume = seconds.labels("consume")
        self._seconds_validate = seconds.labels("validate")
        self._seconds_produce = seconds.labels("produce")

    # ---- set-up -----------------------------------------------------------------------
    def _make_clients(self) -> CommitWindow:
        s = self.s
        cconf = consumer_base_config(s, s.group_id)
        cconf["stats_cb"] = LagFromStats(self.metrics)
        # Incremental rebalancing: when a consumer joins or leaves (an autoscaler's step), only
        # the partitions that move stop; the others keep their position and their open
        # transaction. The eager default revokes every member's every partition at each step.
        cconf["partition.assignment.strategy"] = "cooperative-sticky"
        self.consumer = Consumer(cconf)
        common: dict[str, Any] = {
            "consumer": self.consumer,
            "producer_config": self._producer_config(),
            "input_topic": s.topic_input,
            "output_topics": (s.topic_processed, s.topic_errors),
            "metrics": self.metrics,
            "health": self.health,
            "stopper": self.stopper,
            "failure_budget_seconds": s.failure_budget_seconds,
            "pacer": CommitPacer(
                s.commit_interval_in_effect_ms / 1000.0, s.commit_interval_bound_ms / 1000.0
            ),
            "positions_reset": self.rebalances.revoked,
        }
        if self.exactly_once:
            return TransactionalWindow(
                transaction_timeout_ms=s.transaction_timeout_ms,
                init_timeout_seconds=max(s.startup_timeout_seconds, 10.0),
                **common,
            )
        return AckedWindow(**common)

    def _producer_config(self) -> dict[str, Any]:
        s = self.s
        pconf: dict[str, Any] = s.kafka_config()
        pconf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": s.linger_in_effect_ms,
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
        return pconf

    def _look_up_schema_ids(self) -> None:
        from loginpipe.schema_registry import output_schema_ids  # only this format needs it

        s = self.s
        ids = output_schema_ids(s, s.startup_timeout_seconds, self.stopper.wait)
        self.frame_processed = wire.frame(ids["processed-event"])
        self.frame_errors = wire.frame(ids["error-envelope"])
        log.info(
            "writing the registry's wire format",
            extra={"registry": s.schema_registry_url, "schema_ids": ids},
        )

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
        if s.output_format == "registry":
            self._look_up_schema_ids()
        if self.exactly_once:
            self.claim = TransactionalIdClaim(s.transactional_id, s.default_transactional_id())
        self.window = window = self._make_clients()
        assert self.consumer is not None
        try:
            window.start()
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
                    "commit_interval_ms": s.commit_interval_in_effect_ms,
                    "linger_ms": s.linger_in_effect_ms,
                },
            )
            self._loop(window)
            # Clean stop: what was routed so far is complete, so commit it.
            if window.pending:
                window.commit()
        except KafkaException as exc:
            err: KafkaError = window.underlying(exc.args[0])
            if not is_fenced(err):
                if window.is_open:
                    window.abort_on_exit()
                raise
            assert self.claim is not None
            # Its open transaction belongs to the new owner of the id now: nothing to abort.
            window.reset()
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
            if isinstance(window, TransactionalWindow):
                window.hung = True
            window.reset()  # nothing left to commit: the revoke inside close() leaves it alone
            raise ProducerHung(
                f"a Kafka transaction call hung ({exc}; librdkafka#5456: the broker or the "
                "group coordinator went away mid-commit): exiting so that a restart resumes "
                "from the committed offsets"
            ) from None
        except BaseException:
            if window.is_open:
                window.abort_on_exit()
            raise
        finally:
            self.health.set_ready(False, "stopping")
            self._close()
            if self.claim is not None:
                self.claim.release()

    def _loop(self, window: CommitWindow) -> None:
        consumer = self.consumer
        assert consumer is not None
        batch_size = self.s.batch_size
        while not self.stopper.stopping:
            try:
                interval = window.interval  # paced: longer while commits are slow
                if window.is_open:
                    wait = max(0.0, min(0.5, window.opened_at + interval - time.monotonic()))
                elif window.pending:  # sealed windows wait for acknowledgements
                    wait = min(0.5, interval)
                else:
                    wait = 0.5
                t0 = time.perf_counter()
                msgs = take(consumer, batch_size, wait, self.rebalances)
                self._seconds_consume.inc(time.perf_counter() - t0)
                self.health.beat()
                if self.stopper.stopping:
                    # Asked to stop meanwhile (a rebalance inside take() may even have aborted
                    # the window without a rewind): route nothing more; the next owner reads
                    # these from the committed offsets.
                    break
                if msgs:
                    self._process(msgs, window)
                window.settle()
                if window.is_open and time.monotonic() - window.opened_at >= interval:
                    # The pacer's signal: behind while a full batch or more still waits as the
                    # window ends. A full batch taken is no such sign: a commit stall leaves
                    # one behind even when the consumer keeps up.
                    window.behind = backlog(consumer) >= batch_size
                    window.rotate()
            except KafkaException as exc:
                original: KafkaError = exc.args[0]
                err = window.underlying(original)
                if not window.replaceable(err, original) or is_fenced(err):
                    raise KafkaException(err) from None
                window.replace_producer(err)

    def _process(self, msgs: list[Message], window: CommitWindow) -> None:
        """Validate and route one batch inside the open window. The hot path."""
        started = time.perf_counter()
        # Noted before the window opens: if opening fails, the rewind must cover this batch.
        window.partitions.update(m.partition() for m in msgs)  # type: ignore[misc]
        if not window.is_open:
            window.open()
        producer = window.producer
        # The batch's counts and next offsets join the window only once all of it is produced:
        # a batch that fails halfway (a fatal error, a stop with the queue full) must not
        # commit the offsets of records never sent (at least once commits what the window
        # holds when the consumer closes).
        valid: Counter[str] = Counter()
        invalid: Counter[str] = Counter()
        nxt: dict[int, int] = {}
        validating = time.perf_counter()  # after begin_transaction, timed as its own phase
        records = self._validate(msgs, valid, invalid, nxt)
        validated = time.perf_counter()
        try:
            self._produce_all(producer, records, window.delivery_report)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if not window.produce_failure_aborts(err):
                raise
            window.failed(err, "producing")
            return
        window.add(valid, invalid, nxt, len(records))
        producer.poll(0)
        done = time.perf_counter()
        self._seconds_validate.inc(validated - validating)
        self._seconds_produce.inc(done - validated)
        n = len(records)
        if n:
            self.metrics.messages_consumed.labels(self.s.topic_input).inc(n)
            self.metrics.batch_size.observe(n)
            self.metrics.batch_duration.observe(done - started)

    def _validate(
        self,
        msgs: list[Message],
        valid_counts: Counter[str],
        invalid_counts: Counter[str],
        nxt: dict[int, int],
    ) -> list[Record]:
        """Each message's output record (topic, value, key, headers), in input order.

        The pure part of the hot path: parse, validate, normalise or wrap in the error
        envelope, and note each partition's next offset. Nothing is produced yet.
        """
        s = self.s
        processed, errors, source_topic = s.topic_processed, s.topic_errors, s.topic_input
        frame = self.frame_processed  # b"" for plain JSON: b"" + value is value itself
        device_headers = envelope.DEVICE_HEADERS
        out: list[Record] = []
        append = out.append
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
            result = validate(m.value())
            if isinstance(result, Valid):
                device = result.device_type
                append((processed, frame + result.value, m.key(), device_headers[device]))
                valid_counts[device] += 1
            else:
                append(self._error_record(m, result, source_topic, partition, offset, errors))
                invalid_counts[result.reason.value] += 1
            nxt[partition] = offset + 1
        return out

    def _error_record(
        self,
        m: Message,
        result: Invalid,
        topic: str,
        partition: int,
        offset: int,
        errors_topic: str,
    ) -> Record:
        ts_type, ts = m.timestamp()
        key = m.key()
        frame = self.frame_errors
        body = frame + envelope.build(
            result,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=ts if ts_type else None,
            key=key,
            value=m.value(),
            detected_at_ms=int(time.time() * 1000),
            max_record_bytes=self.max_record_bytes - len(frame),
        )
        headers = [(envelope.HEADER_REASON, result.reason.value)]
        return (errors_topic, body, envelope.record_key(key), headers)

    def _produce_all(
        self, producer: Producer, records: list[Record], report: DeliveryReport | None
    ) -> None:
        produce = producer.produce
        if report is None:  # exactly-once: the transaction's commit is the acknowledgement
            for topic, value, key, headers in records:
                try:
                    produce(topic, value, key, headers=headers)
                except BufferError:
                    self._produce_blocking(producer, topic, key, value, headers, None)
            return
        for topic, value, key, headers in records:
            try:
                produce(topic, value, key, headers=headers, on_delivery=report)
            except BufferError:
                self._produce_blocking(producer, topic, key, value, headers, report)

    def _produce_blocking(
        self,
        producer: Producer,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[Any],
        report: DeliveryReport | None,
    ) -> None:
        """Produce, waiting for room when the local queue is full."""
        give_up = None
        while True:
            try:
                if report is None:
                    producer.produce(topic, value, key, headers=headers)
                else:
                    producer.produce(topic, value, key, headers=headers, on_delivery=report)
                return
            except BufferError:  # local queue full: let deliveries drain
                if self.stopper.stopping:  # a stop while the broker is away must not hang
                    give_up = give_up or time.monotonic() + 5.0
                    if time.monotonic() > give_up:
                        raise KafkaException(
                            KafkaError(KafkaError._QUEUE_FULL, "stopping with a full queue")
                        ) from None
                producer.poll(0.05)

    # ---- rebalance callbacks (run inside consume()) -------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.assigned()
        self.health.set_ready(True)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.revoked(partitions)
        # Everything handed out so far has been routed: commit it before the partitions go.
        if self.window is not None and self.window.pending:
            self.window.commit()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost", extra={"partitions": [p.partition for p in partitions]})
        self.rebalances.revoked(partitions)
        # Offsets can no longer be committed for these: abort; the new owner re-reads them.
        if self.window is not None and self.window.pending:
            self.window.lost()

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leave the group now, so it rebalances at once
            except Exception as exc:
                log.warning("consumer close failed", extra={"error": str(exc)})
        if self.window is not None:
            self.window.close()
        log.info("consumer stopped")
