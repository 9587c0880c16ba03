"""The consumer's commit window: what was routed since the last commit, and making it durable.

The hot path (``consumer.Router``) routes records into the open window and notes each input
partition's next offset; the window owns the rest of the lifecycle:

- exactly-once (``TransactionalWindow``): a Kafka transaction. ``open`` begins it, ``commit``
  sends the input offsets into it and commits; an abortable failure aborts it and rewinds the
  partitions it read; a fatal producer error gets a fresh producer (``replace_producer``).
- at-least-once (``AckedWindow``): at the end of an interval the window is sealed and the loop
  carries on at once; a sealed window's input offsets are committed (asynchronously, in
  order) once every record it routed is acknowledged. ``commit`` (a revoke, the exit) flushes
  and commits everything synchronously. A failed delivery rewinds the same way.

Both share one retry policy: a failure backs off (0.1 s doubling to 5 s) with the service
unready, is logged once per cause and counted, and after the failure budget the service
stops naming the cause (``RepeatingFailure``). Every transaction call runs under a watchdog
(``kafka_io.call_bounded``): a hung call ends the process (``CallStuck``).

The producer and consumer are handed in, so every path is testable with fakes that raise
librdkafka's errors (tests/unit/test_commit_window.py), as Quix Streams tests its checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
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

from loginpipe.exceptions import ConfigError, DependencyUnavailable, RepeatingFailure
from loginpipe.kafka_io import call_bounded
from loginpipe.metrics import Metrics
from loginpipe.retry import FailureStreak
from loginpipe.runtime import Health, Stopper

log = logging.getLogger(__name__)

# One budget for each transaction call (and for a whole commit), so a stop or a revoke waits
# at most this long for it (the pod's grace period is sized on that).
TXN_OP_TIMEOUT = 30.0
# How long past its own timeout a transaction call may run before it counts as hung (see
# kafka_io.call_bounded): the process then ends (ProducerHung).
STUCK_GRACE = 10.0
_SLOW_COMMIT = 0.1

ProducerFactory = Callable[[dict[str, Any]], Producer]


class CommitPacer:
    """How long a window stays open: the configured interval while commits are quick or the
    consumer keeps up, longer while commits are slow and it is behind, never above the bound.

    A commit stalls the loop (no record is routed while the transaction calls or the flush
    run), so at a fixed interval a slow commit (a loaded broker: send_offsets alone takes
    100-500 ms then) costs throughput in proportion. While the consumer is behind (a full
    batch or more still waits as its window ends), the pacer keeps the commits' share of
    each cycle near ``stall_share``: the next interval is the commit's smoothed time times
    (1 - share) / share, clamped to [interval, bound]. While it keeps up, a stall costs no
    throughput, only latency, so the interval stays as configured. The bound is the latency
    a user accepts under load.
    """

    def __init__(
        self, interval: float, bound: float, stall_share: float = 0.1, smoothing: float = 0.5
    ) -> None:
        if not 0 < interval <= bound:
            raise ValueError(f"need 0 < interval <= bound, got {interval} and {bound}")
        self.base = interval
        self.bound = bound
        self.factor = (1.0 - stall_share) / stall_share
        self.smoothing = smoothing
        self.commit_seconds = 0.0  # smoothed time of one commit
        self.interval = interval

    def committed(self, seconds: float, behind: bool = True) -> float:
        """Note how long a commit took and whether a backlog waits; the next interval."""
        self.commit_seconds += self.smoothing * (seconds - self.commit_seconds)
        grown = self.commit_seconds * self.factor if behind else self.base
        self.interval = min(self.bound, max(self.base, grown))
        return self.interval


class CommitWindow:
    """The open window's state, the rewind, and the retry policy both delivery modes share."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer_config: dict[str, Any],
        input_topic: str,
        output_topics: tuple[str, str],
        metrics: Metrics,
        health: Health,
        stopper: Stopper,
        failure_budget_seconds: float,
        pacer: CommitPacer | None = None,
        producer_factory: ProducerFactory = Producer,
        positions_reset: Callable[[list[TopicPartition]], None] = lambda _: None,
    ) -> None:
        self.consumer = consumer
        self.producer_config = producer_config
        self.producer_factory = producer_factory
        # Told of every partition whose position a rewind resets (kafka_io.Rebalances: a
        # message of it already handed out must then be dropped, not routed).
        self.positions_reset = positions_reset
        self.input_topic = input_topic
        self.processed_topic, self.errors_topic = output_topics
        self.metrics = metrics
        self.health = health
        self.stopper = stopper
        self.streak = FailureStreak(failure_budget_seconds)
        self.pacer = pacer or CommitPacer(0.1, 0.1)
        metrics.commit_interval.set(self.pacer.interval)
        self.is_open = False
        self.opened_at = 0.0
        # Per input partition: the next offset to commit (the hot path writes it).
        self.next_offsets: dict[int, int] = {}
        # Partitions read from since the window opened (a failed batch included): what an
        # abort must rewind.
        self.partitions: set[int] = set()
        self.seconds = metrics.consumer_seconds.labels  # time per phase, by phase name
        self.valid: Counter[str] = Counter()  # routed valid events per device type
        self.behind = False  # a full batch still waits as the window ends (see CommitPacer)
        self.invalid: Counter[str] = Counter()  # routed invalid events per reason
        self.producer: Producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return self.producer_factory(self.producer_config)

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Before the first window (exactly-once: init_transactions)."""

    def open(self) -> None:
        self.is_open = True
        self.opened_at = time.monotonic()

    def commit(self) -> None:
        """Make the open window durable; on a failure that a retry may mend, abort and rewind."""
        raise NotImplementedError

    def rotate(self) -> None:
        """The interval is over: make the window durable (at-least-once: on its way to)."""
        self.commit()

    def settle(self) -> None:
        """Between batches: finish what ``rotate`` left in flight (at-least-once)."""

    @property
    def pending(self) -> bool:
        """Whether anything routed is not committed yet: what a revoke or the exit commits."""
        return self.is_open

    # The per-record delivery report the hot path passes to produce(), or None.
    delivery_report: Callable[[KafkaError | None, Message], None] | None = None

    def add(
        self, valid: Counter[str], invalid: Counter[str], next_offsets: dict[int, int], n: int
    ) -> None:
        """A batch of ``n`` records, every one handed to the producer: into the window."""
        self.valid.update(valid)
        self.invalid.update(invalid)
        self.next_offsets.update(next_offsets)

    def produce_failure_aborts(self, err: KafkaError) -> bool:
        """Whether an error raised by ``produce()`` fails just this window (abort, rewind)."""
        return False

    def underlying(self, err: KafkaError) -> KafkaError:
        """The error behind librdkafka's generic fatal one (exactly-once only)."""
        return err

    def explain(self, err: KafkaError) -> KafkaError:
        """The transaction's own error behind librdkafka's generic state one (exactly-once)."""
        return err

    def replaceable(self, err: KafkaError, original: KafkaError) -> bool:
        """Whether a fresh producer mends this error (exactly-once: a fatal producer error)."""
        return False

    def replace_producer(self, err: KafkaError) -> None:
        raise KafkaException(err)

    def lost(self) -> None:
        """The partitions were lost: their offsets cannot be committed any more."""
        self.reset()

    def abort_on_exit(self) -> None:
        """The service is ending on an error with the window open."""

    def close(self) -> None:
        """Send what is still queued, briefly: at exit."""
        try:
            left = self.producer.flush(5.0)
        except KafkaException as exc:  # a fenced or otherwise failed producer: nothing to send
            log.warning("final flush failed", extra={"error": str(exc.args[0])})
        else:
            if left:
                log.warning("records left unflushed at exit", extra={"count": left})

    # ---- shared ---------------------------------------------------------------------------
    def offsets(self) -> list[TopicPartition]:
        topic = self.input_topic
        return [TopicPartition(topic, p, o) for p, o in self.next_offsets.items()]

    def reset(self) -> None:
        self.is_open = False
        self.partitions.clear()
        self.next_offsets.clear()
        self.valid.clear()
        self.invalid.clear()
        self.behind = False

    @property
    def interval(self) -> float:
        """How long the window stays open (seconds)."""
        return self.pacer.interval

    def _paced(self, commit_seconds: float, behind: bool | None = None) -> None:
        before = self.pacer.interval
        after = self.pacer.committed(commit_seconds, self.behind if behind is None else behind)
        if after != before:
            self.metrics.commit_interval.set(after)
            if after >= self.pacer.bound > before:
                log.info(
                    "commits are slow: the commit interval is at its bound",
                    extra={
                        "commit_seconds": round(self.pacer.commit_seconds, 3),
                        "interval": after,
                    },
                )

    def _succeeded(self) -> None:
        self._count_committed(self.valid, self.invalid)
        self.reset()

    def _count_committed(self, valid: Counter[str], invalid: Counter[str]) -> None:
        """A window is durable: count it and what it routed."""
        m = self.metrics
        m.transactions.labels("committed").inc()
        if self.streak.succeeded():
            log.info("transactions succeed again")
            self.health.set_ready(True)
        n_valid = sum(valid.values())
        n_invalid = sum(invalid.values())
        for d, c in valid.items():
            m.events_valid.labels(d).inc(c)
        for r, c in invalid.items():
            m.events_invalid.labels(r).inc(c)
        if n_valid:
            m.messages_produced.labels(self.processed_topic).inc(n_valid)
        if n_invalid:
            m.messages_produced.labels(self.errors_topic).inc(n_invalid)
        m.last_success.set(time.time())

    def failed(self, err: KafkaError, during: str) -> None:
        """The window failed: abort and rewind, back off, and give up once it keeps failing.

        Unready while it retries; one log line per distinct cause in a streak; after the
        failure budget (LOGINPIPE_CONSUMER_FAILURE_BUDGET_SECONDS) with no success, an exit
        naming the cause instead of aborting and retrying forever.
        """
        err = self.explain(err)
        self._note_failure(err, during, "transaction failed, aborting and rewinding")
        self._abort()
        self.metrics.transactions.labels("aborted").inc()
        self.rewind()
        self._give_up_if_exhausted(err, during)
        self.stopper.wait(self.streak.backoff)  # grown by a failing abort meanwhile

    def _abort(self) -> None:
        """Throw away what the failed window produced (exactly-once: abort the transaction)."""

    def rewind(self) -> None:
        """Re-read the window's inputs from the committed offsets, so that nothing is lost.

        Not when stopping: the next owner of the partitions starts from there anyway. Only
        the partitions the window read from, so the others keep their prefetched data.
        """
        consumer = self.consumer
        rewind = [tp for tp in consumer.assignment() if tp.partition in self.partitions]
        if rewind:
            self.positions_reset(rewind)
        try:
            if rewind and not self.stopper.stopping:
                for tp in consumer.committed(rewind, timeout=TXN_OP_TIMEOUT):
                    if tp.error is not None:
                        # Never "from the beginning" on an error: that would route again what
                        # the committed transactions already routed. Stop; the restart reads
                        # it back.
                        raise KafkaException(tp.error)
                    # No committed offset yet (OFFSET_INVALID): the group starts at the
                    # beginning (auto.offset.reset=earliest), and so does the rewind.
                    offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        finally:
            # Even when the rewind fails (the process then ends): the failed window's offsets
            # must never be committed by the revoke on the way out.
            self.reset()

    def _retry_in_budget(self, call: Callable[[float], Any], during: str) -> bool:
        """Run a transaction call, retrying a retriable failure (a broker away) with backoff.

        Within the failure budget; False if asked to stop meanwhile. A failure that is not
        retriable (fatal: the producer's state is lost) raises, for replace_producer.
        """
        while True:
            try:
                call_bounded(call, TXN_OP_TIMEOUT, STUCK_GRACE)
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


class TransactionalWindow(CommitWindow):
    """Exactly-once: the window is a Kafka transaction with the input offsets inside it."""

    def __init__(
        self, *, transaction_timeout_ms: int, init_timeout_seconds: float, **kw: Any
    ) -> None:
        self.transaction_timeout_ms = transaction_timeout_ms
        self.init_timeout_seconds = init_timeout_seconds
        self.hung = False  # a call into the producer never came back: never touch it again
        super().__init__(**kw)

    def start(self) -> None:
        try:
            self.producer.init_transactions(self.init_timeout_seconds)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.INVALID_TRANSACTION_TIMEOUT:
                raise ConfigError(
                    f"the broker refuses LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS="
                    f"{self.transaction_timeout_ms}: it is above the broker's "
                    "transaction.max.timeout.ms (15 minutes by default); set it lower"
                ) from None
            raise DependencyUnavailable(
                f"cannot start transactions on {self.producer_config.get('bootstrap.servers')} "
                f"({err.str()}): check that the broker is up and that this client may use its "
                "transactional id"
            ) from None

    def open(self) -> None:
        t0 = time.perf_counter()
        self.producer.begin_transaction()
        self.seconds("begin").inc(time.perf_counter() - t0)
        super().open()

    def commit(self) -> None:
        producer, consumer = self.producer, self.consumer
        offsets = self.offsets()
        try:
            group = consumer.consumer_group_metadata()
            deadline = time.monotonic() + TXN_OP_TIMEOUT  # one budget for the whole commit
            t0 = time.perf_counter()
            self._retrying(
                lambda t: producer.send_offsets_to_transaction(offsets, group, t), deadline
            )
            t1 = time.perf_counter()
            self._retrying(lambda t: producer.commit_transaction(t), deadline)
            t2 = time.perf_counter()
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            # Abortable, or still retriable when the commit's budget ran out (librdkafka: a
            # timed-out commit may be retried or aborted): abort, rewind, retry later.
            if not (err.txn_requires_abort() or err.retriable()) or err.fatal():
                raise
            self.failed(err, "committing")
            return
        self.seconds("send_offsets").inc(t1 - t0)
        self.seconds("commit").inc(t2 - t1)
        self._paced(t2 - t0)
        if t2 - t0 > _SLOW_COMMIT:
            log.warning(
                "slow commit",
                extra={"send_offsets": round(t1 - t0, 3), "commit": round(t2 - t1, 3)},
            )
        self._succeeded()

    def _retrying(self, op: Callable[[float], Any], deadline: float) -> None:
        """Run ``op(timeout)`` until it succeeds, retrying retriable errors until ``deadline``."""
        while True:
            try:
                call_bounded(op, max(0.1, deadline - time.monotonic()), STUCK_GRACE)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    log.info("retrying transaction operation", extra={"error": err.str()})
                    continue
                raise

    def _abort(self) -> None:
        self._retry_in_budget(self.producer.abort_transaction, "aborting")

    def produce_failure_aborts(self, err: KafkaError) -> bool:
        # Once a transaction has failed, produce() refuses with _STATE: abort and rewind.
        return err.txn_requires_abort() or err.code() == KafkaError._STATE

    def underlying(self, err: KafkaError) -> KafkaError:
        """The real error behind librdkafka's generic fatal one.

        Once the producer is in its fatal state, ``produce()`` raises only ``_FATAL`` ("Local:
        Fatal error"); a transactional call raises the error that made it fatal (``_FENCED``,
        say), at once and without a request (measured on librdkafka 2.16).
        """
        if err.code() != KafkaError._FATAL:
            return err
        try:
            self.producer.abort_transaction(1.0)
        except KafkaException as exc:
            underlying: KafkaError = exc.args[0]
            return underlying
        return err

    def explain(self, err: KafkaError) -> KafkaError:
        """The error that failed the transaction, when a call reports only ``_STATE``.

        A record that fails while ``send_offsets_to_transaction`` is on its way makes that call
        fail with ``_STATE`` ("Erroneous state"), and ``produce()`` refuses with ``_STATE``
        once the transaction has failed; the record's own error (``MSG_SIZE_TOO_LARGE``,
        say) is what an operator must see, in the log and in the failure metric's cause.
        Once the transaction is in its abortable state, ``begin_transaction()`` refuses at
        once with that error, changing nothing (librdkafka's ``rd_kafka_txn_require_state``).
        The flush first lets the failing record's answer arrive; bounded, and only on this
        rare path.
        """
        if err.code() != KafkaError._STATE:
            return err
        try:
            self.producer.flush(1.0)
            self.producer.begin_transaction()
        except KafkaException as exc:
            cause: KafkaError = exc.args[0]
            if cause.code() != KafkaError._STATE:
                return cause
        # Not in the abortable state after all (or it opened a transaction, which the abort
        # that follows throws away): the generic error is all there is to say.
        return err

    def replaceable(self, err: KafkaError, original: KafkaError) -> bool:
        return err.fatal() or original.code() == KafkaError._FATAL

    def replace_producer(self, err: KafkaError) -> None:
        """The producer failed fatally (say, the broker died mid-commit): start a fresh one.

        The fresh producer's init_transactions, with the same transactional id, bumps its
        epoch and aborts whatever the old one left open; the window's partitions are rewound
        to their committed offsets, so every input is routed again in a new transaction.
        """
        self._note_failure(err, "running", "producer failed fatally, replacing it and rewinding")
        old = self.producer
        try:
            old.purge()  # nothing it holds may be sent any more; destroy it without waiting
        except Exception as exc:
            log.debug("purge of the failed producer", extra={"error": str(exc)})
        del old
        self.producer = self._new_producer()
        if not self._retry_in_budget(self.producer.init_transactions, "initialising transactions"):
            self.reset()  # asked to stop meanwhile
            return
        self.metrics.transactions.labels("aborted").inc()
        self.rewind()
        self._give_up_if_exhausted(err, "running")
        self.stopper.wait(self.streak.backoff)

    def lost(self) -> None:
        if self.is_open and not self.hung:
            self.abort_on_exit()
        else:
            self.reset()

    def abort_on_exit(self) -> None:
        if self.hung:
            return
        try:
            self.producer.abort_transaction(5.0)
            self.metrics.transactions.labels("aborted").inc()
        except Exception as exc:
            log.warning(
                "abort on exit failed (the broker will time it out)", extra={"error": str(exc)}
            )
        self.reset()

    def close(self) -> None:
        if not self.hung:
            super().close()


class Deliveries:
    """The delivery reports of one at-least-once window's records."""

    __slots__ = ("errors", "on_error", "produced", "reported")

    def __init__(self, on_error: Callable[[KafkaError, Message], None]) -> None:
        self.produced = 0  # records handed to the producer (whole batches only)
        self.reported = 0  # delivery reports received, successful or not
        self.errors: list[KafkaError] = []
        self.on_error = on_error

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's per-record delivery report (served by poll or flush)."""
        self.reported += 1
        if err is not None:
            self.errors.append(err)
            self.on_error(err, msg)

    @property
    def done(self) -> bool:
        return self.reported >= self.produced


class Sealed:
    """An at-least-once window whose interval is over, waiting for its acknowledgements."""

    __slots__ = ("deliveries", "invalid", "next_offsets", "partitions", "valid")

    def __init__(self, window: CommitWindow, deliveries: Deliveries) -> None:
        self.next_offsets = dict(window.next_offsets)
        self.partitions = set(window.partitions)
        self.valid = Counter(window.valid)
        self.invalid = Counter(window.invalid)
        self.deliveries = deliveries


class AckedWindow(CommitWindow):
    """At-least-once: every routed record acknowledged, then the input offsets committed.

    The loop never waits for the acknowledgements: ``rotate`` seals the window and opens the
    next, and ``settle`` commits, in order, the offsets of each sealed window once all of its
    records are acknowledged (an asynchronous commit: should one fail unseen, a later one
    carries the same offsets, and the synchronous commit of a revoke or the exit sends again
    every offset committed asynchronously since the last one). Waiting instead (a flush per
    interval) stood the loop still for a linger and a round trip every interval, which showed
    in the tail latency. A failed delivery fails every window from the failed one on: their
    partitions are rewound to the committed offsets, so every input is routed again.
    """

    # Sealed windows in flight beyond which rotate() waits for the oldest (a broker away).
    MAX_SEALED = 64

    def __init__(self, **kw: Any) -> None:
        self.sealed: deque[Sealed] = deque()
        # Offsets sent by asynchronous commits since the last synchronous one, per partition.
        self.committed_async: dict[int, int] = {}
        super().__init__(**kw)
        self.deliveries = Deliveries(self._delivery_failed)
        self.delivery_report = self.deliveries.report

    def _delivery_failed(self, err: KafkaError, msg: Message) -> None:
        self.metrics.produce_errors.labels(msg.topic()).inc()

    @property
    def pending(self) -> bool:
        return self.is_open or bool(self.sealed)

    def open(self) -> None:
        super().open()
        self.deliveries = Deliveries(self._delivery_failed)
        self.delivery_report = self.deliveries.report

    def add(
        self, valid: Counter[str], invalid: Counter[str], next_offsets: dict[int, int], n: int
    ) -> None:
        super().add(valid, invalid, next_offsets, n)
        self.deliveries.produced += n

    def _seal(self) -> None:
        if self.is_open:
            self.sealed.append(Sealed(self, self.deliveries))
            self.reset()

    def rotate(self) -> None:
        t0 = time.perf_counter()
        behind = self.behind
        self._seal()
        if len(self.sealed) > self.MAX_SEALED:  # acknowledgements stopped: wait, bounded
            self.commit()
            return
        self.settle()
        self._paced(time.perf_counter() - t0, behind)

    def settle(self) -> None:
        sealed = self.sealed
        if not sealed:
            return
        self.producer.poll(0)  # serve the delivery reports
        durable: dict[int, int] = {}
        failed: KafkaError | None = None
        while sealed and sealed[0].deliveries.done:
            head = sealed[0]
            if head.deliveries.errors:
                failed = head.deliveries.errors[0]
                break
            sealed.popleft()
            durable.update(head.next_offsets)
            self._count_committed(head.valid, head.invalid)
        if durable:  # the windows before a failed one are durable: commit them first
            t0 = time.perf_counter()
            topic = self.input_topic
            self.consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in durable.items()],
                asynchronous=True,
            )
            self.committed_async.update(durable)
            self.seconds("commit").inc(time.perf_counter() - t0)
        if failed is not None:
            self._fail_all(failed)

    def _fail_all(self, err: KafkaError) -> None:
        """A delivery failed: no window from here on may commit; re-read them all."""
        for s in self.sealed:
            self.partitions.update(s.partitions)
        self.sealed.clear()
        self.failed(err, "delivering")

    def commit(self) -> None:
        """Everything routed so far, synchronously: a revoke, the exit, a stuck pipeline."""
        producer, consumer = self.producer, self.consumer
        behind = self.behind
        self._seal()
        t0 = time.perf_counter()
        remaining = producer.flush(TXN_OP_TIMEOUT)
        errors = [e for s in self.sealed for e in s.deliveries.errors]
        if remaining or errors:
            # Nothing of these windows is committed: rewind and deliver it all again
            # (at-least-once: what was delivered before the failure comes twice).
            self._fail_all(
                errors[0]
                if errors
                else KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} records undelivered")
            )
            return
        t1 = time.perf_counter()
        # What the asynchronous commits sent too: one of them may have failed unseen.
        offsets: dict[int, int] = dict(self.committed_async)
        for s in self.sealed:
            offsets.update(s.next_offsets)
        topic = self.input_topic
        if offsets:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        t2 = time.perf_counter()
        self.seconds("flush").inc(t1 - t0)
        self.seconds("commit").inc(t2 - t1)
        self._paced(t2 - t0, behind)
        if t2 - t0 > _SLOW_COMMIT:
            log.warning(
                "slow commit", extra={"flush": round(t1 - t0, 3), "commit": round(t2 - t1, 3)}
            )
        self.committed_async.clear()
        while self.sealed:
            s = self.sealed.popleft()
            self._count_committed(s.valid, s.invalid)

    def lost(self) -> None:
        self.sealed.clear()
        self.committed_async.clear()
        super().lost()
