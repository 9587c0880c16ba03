"""The consumer's commit window, every path without a broker: fakes raise librdkafka's errors."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from loginpipe import commit_window
from loginpipe.commit_window import (
    AckedWindow,
    CommitPacer,
    CommitWindow,
    TransactionalWindow,
)
from loginpipe.exceptions import ConfigError, RepeatingFailure
from loginpipe.metrics import Metrics
from loginpipe.retry import FailureStreak
from loginpipe.runtime import Health, Stopper

TOPIC = "in"


def abortable(code: int = KafkaError._TIMED_OUT) -> KafkaError:
    return KafkaError(code, "abortable", txn_requires_abort=True)


def retriable(code: int = KafkaError._TRANSPORT) -> KafkaError:
    return KafkaError(code, "retriable", retriable=True)


def fatal(code: int = KafkaError.INVALID_TXN_STATE) -> KafkaError:
    return KafkaError(code, "fatal", fatal=True)


class FakeProducer:
    """Records transaction calls; ``fail[name]`` lists the errors its next calls raise."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.calls: list[str] = []
        self.fail: dict[str, list[KafkaError]] = {}
        self.unflushed = 0
        # Records sent, and those the broker has answered (served by the next poll or flush).
        self.in_flight: list[tuple[Any, _Msg]] = []
        self.answered: list[tuple[Any, _Msg, KafkaError | None]] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        errors = self.fail.get(name)
        if errors:
            raise KafkaException(errors.pop(0))

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, offsets: Any, group: Any, timeout: float) -> None:
        self._call("send_offsets")
        self.sent = offsets

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def purge(self) -> None:
        self._call("purge")

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Any = None,
        on_delivery: Any = None,
    ) -> None:
        self.in_flight.append((on_delivery, _Msg(topic)))

    def acknowledge(self, n: int, err: KafkaError | None = None) -> None:
        """The broker answers the oldest ``n`` records in flight (with ``err``, if given)."""
        answered, self.in_flight = self.in_flight[:n], self.in_flight[n:]
        self.answered += [(cb, msg, err) for cb, msg in answered]

    def poll(self, timeout: float) -> int:
        served, self.answered = self.answered, []
        for cb, msg, err in served:
            if cb is not None:
                cb(err, msg)
        return len(served)

    def flush(self, timeout: float) -> int:
        self._call("flush")
        if self.unflushed:
            return self.unflushed
        self.acknowledge(len(self.in_flight))
        self.poll(0)
        return 0


class FakeConsumer:
    def __init__(self, assigned: list[int], committed: dict[int, int]) -> None:
        self.assigned = assigned
        self.committed_offsets = committed
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[list[tuple[int, int]]] = []
        self.asynchronous: list[bool] = []
        self.committed_error: KafkaError | None = None

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in self.assigned]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[Any]:
        return [
            SimpleNamespace(
                topic=tp.topic,
                partition=tp.partition,
                offset=self.committed_offsets.get(tp.partition, -1001),  # -1001: none
                error=self.committed_error,
            )
            for tp in tps
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def consumer_group_metadata(self) -> object:
        return object()

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])
        self.asynchronous.append(asynchronous)


class NoWaitStopper(Stopper):
    """Backoffs are recorded, not slept."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.stopping


def make(
    kind: type[CommitWindow] = TransactionalWindow,
    assigned: tuple[int, ...] = (0, 1, 2),
    committed: dict[int, int] | None = None,
    pacer: CommitPacer | None = None,
) -> tuple[Any, list[FakeProducer], FakeConsumer]:
    producers: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        producers.append(FakeProducer(conf))
        return producers[-1]

    consumer = FakeConsumer(
        list(assigned), {0: 10, 1: 20, 2: 30} if committed is None else committed
    )
    consumer.reset_told: list[int] = []  # type: ignore[attr-defined]
    metrics = Metrics("consumer")
    extra: dict[str, Any] = (
        {"transaction_timeout_ms": 60_000, "init_timeout_seconds": 10.0}
        if kind is TransactionalWindow
        else {}
    )
    window = kind(
        consumer=consumer,  # type: ignore[arg-type]
        producer_config={"bootstrap.servers": "127.0.0.1:1"},
        producer_factory=factory,  # type: ignore[arg-type]
        input_topic=TOPIC,
        output_topics=("processed", "errors"),
        metrics=metrics,
        health=Health(metrics),
        stopper=NoWaitStopper(),
        failure_budget_seconds=120,
        pacer=pacer,
        positions_reset=lambda tps: consumer.reset_told.extend(tp.partition for tp in tps),  # type: ignore[attr-defined]
        **extra,
    )
    return window, producers, consumer


def route(window: Any, *records: tuple[int, int], valid: str = "ios") -> None:
    """What the hot path does for a batch of input records (partition, offset)."""
    if not window.is_open:
        window.open()
    for p, o in records:
        window.partitions.add(p)
        window.producer.produce("processed", b"{}", on_delivery=window.delivery_report)
        window.add(Counter({valid: 1}), Counter(), {p: o + 1}, 1)


def sample(window: Any, name: str, **labels: str) -> float:
    value = window.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def test_a_commit_sends_the_next_offsets_into_the_transaction_and_resets_the_window() -> None:
    w, (p,), _c = make()
    route(w, (0, 10), (0, 11), (2, 30))
    w.commit()
    assert p.calls == ["begin", "send_offsets", "commit"]
    assert sorted((tp.partition, tp.offset) for tp in p.sent) == [(0, 12), (2, 31)]
    assert not w.is_open and not w.next_offsets and not w.partitions
    assert sample(w, "loginpipe_transactions_total", result="committed") == 1
    assert sample(w, "loginpipe_events_valid_total", device_type="ios") == 3


def test_an_abortable_commit_aborts_and_rewinds_only_the_partitions_the_window_read() -> None:
    w, (p,), c = make()
    route(w, (0, 10), (2, 30))
    p.fail["commit"] = [abortable()]
    w.commit()
    assert p.calls == ["begin", "send_offsets", "commit", "abort"]
    assert sorted(c.seeks) == [(0, 10), (2, 30)]  # partition 1 keeps its prefetched data
    # take() is told, so a message of a rewound partition already handed out is dropped.
    assert sorted(c.reset_told) == [0, 2]
    assert not w.is_open
    assert sample(w, "loginpipe_transactions_total", result="aborted") == 1
    assert sample(w, "loginpipe_events_valid_total", device_type="ios") == 0
    assert not w.health.ready()[0]
    assert w.stopper.waits == [0.1]


def test_a_retriable_commit_error_is_retried_within_the_commits_budget() -> None:
    w, (p,), c = make()
    route(w, (1, 20))
    p.fail["send_offsets"] = [retriable(), retriable()]
    w.commit()
    assert p.calls == ["begin", "send_offsets", "send_offsets", "send_offsets", "commit"]
    assert c.seeks == []
    assert sample(w, "loginpipe_transactions_total", result="committed") == 1


def test_a_partition_never_committed_rewinds_to_the_beginning_not_past_its_input() -> None:
    w, (p,), c = make(committed={})
    route(w, (1, 0))
    p.fail["commit"] = [abortable()]
    w.commit()
    assert c.seeks == [(1, OFFSET_BEGINNING)]


def test_an_error_reading_a_committed_offset_stops_instead_of_replaying_from_the_start() -> None:
    w, (p,), c = make()
    route(w, (1, 20))
    p.fail["commit"] = [abortable()]
    c.committed_error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
    with pytest.raises(KafkaException):
        w.commit()
    assert c.seeks == []


def test_a_failing_abort_is_retried_with_backoff_until_it_succeeds() -> None:
    w, (p,), c = make()
    route(w, (0, 10))
    p.fail["commit"] = [abortable()]
    p.fail["abort"] = [retriable(), retriable()]
    w.commit()
    assert p.calls.count("abort") == 3
    assert c.seeks == [(0, 10)]
    assert w.stopper.waits == [0.2, 0.4, 0.4]  # one streak: the backoff grows


def test_a_fatal_commit_error_is_raised_for_the_loop_to_replace_the_producer() -> None:
    w, (p,), _c = make()
    route(w, (0, 10))
    p.fail["commit"] = [fatal()]
    with pytest.raises(KafkaException) as exc:
        w.commit()
    err = exc.value.args[0]
    assert w.replaceable(w.underlying(err), err)


def test_a_replaced_producer_is_a_fresh_one_that_inits_transactions_and_rewinds() -> None:
    w, producers, c = make()
    route(w, (2, 30))
    w.replace_producer(fatal())
    old, new = producers
    assert "purge" in old.calls
    assert w.producer is new and new.calls == ["init"]
    assert new.conf == old.conf
    assert c.seeks == [(2, 30)]
    assert not w.is_open
    assert sample(w, "loginpipe_transaction_failures_total", cause="INVALID_TXN_STATE") == 1


def test_a_failure_that_keeps_repeating_exits_naming_its_cause_once_the_budget_is_spent() -> None:
    w, (p,), _c = make()
    now = [0.0]
    w.streak = FailureStreak(120, clock=lambda: now[0])
    for t in (0.0, 60.0):
        now[0] = t
        route(w, (0, 10))
        p.fail["commit"] = [abortable(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
        w.commit()
    now[0] = 121.0
    route(w, (0, 10))
    p.fail["commit"] = [abortable(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    with pytest.raises(RepeatingFailure, match=r"TOPIC_AUTHORIZATION_FAILED.*FAILURE_BUDGET"):
        w.commit()


def test_a_success_ends_the_streak_and_makes_the_consumer_ready_again() -> None:
    w, (p,), _c = make()
    route(w, (0, 10))
    p.fail["commit"] = [abortable()]
    w.commit()
    assert not w.health.ready()[0]
    route(w, (0, 10))
    w.commit()
    assert w.health.ready()[0]
    assert w.streak.count == 0


def test_a_produce_error_fails_the_window_only_if_the_transaction_must_abort() -> None:
    w, _, _ = make()
    assert w.produce_failure_aborts(abortable())
    assert w.produce_failure_aborts(KafkaError(KafkaError._STATE))
    assert not w.produce_failure_aborts(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))


def test_a_commit_failing_with_the_generic_state_error_is_logged_under_the_records_own_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w, (p,), c = make()
    route(w, (0, 10))
    # A record failed while the offsets were on their way: librdkafka says only _STATE, and
    # the transaction, now abortable, names the record's error to the next call.
    p.fail["send_offsets"] = [abortable(KafkaError._STATE)]
    p.fail["begin"] = [abortable(KafkaError.MSG_SIZE_TOO_LARGE)]
    w.commit()
    assert p.calls == ["begin", "send_offsets", "flush", "begin", "abort"]
    assert sample(w, "loginpipe_transaction_failures_total", cause="MSG_SIZE_TOO_LARGE") == 1
    assert sample(w, "loginpipe_transaction_failures_total", cause="_STATE") == 0
    assert [r.cause for r in caplog.records] == ["MSG_SIZE_TOO_LARGE"]  # type: ignore[attr-defined]
    assert c.seeks == [(0, 10)]


def test_a_state_error_with_nothing_behind_it_keeps_its_own_name() -> None:
    w, (p,), _c = make()
    route(w, (0, 10))
    p.fail["send_offsets"] = [abortable(KafkaError._STATE)]
    p.fail["begin"] = [KafkaError(KafkaError._STATE, "Operation not valid in state InTransaction")]
    w.commit()
    assert p.calls[-1] == "abort"
    assert sample(w, "loginpipe_transaction_failures_total", cause="_STATE") == 1


def test_lost_partitions_abort_the_open_transaction_but_a_hung_producer_is_left_alone() -> None:
    w, (p,), _c = make()
    route(w, (0, 10))
    w.lost()
    assert p.calls[-1] == "abort" and not w.is_open
    route(w, (0, 11))
    w.hung = True
    w.lost()
    assert p.calls.count("abort") == 1 and not w.is_open
    w.close()
    assert "flush" not in p.calls  # a hung producer is never touched again


def test_a_transaction_timeout_the_broker_refuses_is_a_configuration_error() -> None:
    w, (p,), _ = make()
    p.fail["init"] = [KafkaError(KafkaError.INVALID_TRANSACTION_TIMEOUT)]
    with pytest.raises(ConfigError, match="LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS"):
        w.start()


def test_at_least_once_commits_the_offsets_only_after_every_record_is_delivered() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10), (1, 20))
    w.rotate()  # the interval is over: sealed, and the loop carries on without waiting
    assert not w.is_open and w.pending and c.commits == [] and "flush" not in p.calls
    p.acknowledge(1)
    w.settle()
    assert c.commits == []  # one of its two records is still unacknowledged
    p.acknowledge(1)
    w.settle()
    assert sorted(c.commits[0]) == [(0, 11), (1, 21)] and c.asynchronous == [True]
    assert not w.pending and "flush" not in p.calls
    assert sample(w, "loginpipe_events_valid_total", device_type="ios") == 2


def test_at_least_once_windows_commit_in_order_whatever_order_records_are_acknowledged() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    route(w, (1, 20))
    w.rotate()
    p.in_flight.reverse()  # the second window's record is answered first
    p.acknowledge(1)
    w.settle()
    assert c.commits == []  # the first window is not durable yet: neither may commit
    p.acknowledge(1)
    w.settle()
    assert sorted(c.commits[0]) == [(0, 11), (1, 21)]


def test_at_least_once_a_failed_delivery_rewinds_its_window_and_every_later_one() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    route(w, (1, 20))
    w.rotate()
    route(w, (2, 30))  # the open window
    p.acknowledge(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    p.acknowledge(2)
    w.settle()
    assert c.commits == [] and sorted(c.seeks) == [(0, 10), (1, 20), (2, 30)]
    assert not w.pending
    assert sample(w, "loginpipe_produce_errors_total", topic="processed") == 1
    assert sample(w, "loginpipe_transaction_failures_total", cause="MSG_SIZE_TOO_LARGE") == 1


def test_at_least_once_a_revoke_flushes_and_commits_the_sealed_and_the_open_windows() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    route(w, (0, 11), (1, 20))
    w.commit()
    assert p.calls == ["flush"] and c.asynchronous == [False]
    assert sorted(c.commits[0]) == [(0, 12), (1, 21)] and not w.pending
    assert sample(w, "loginpipe_transactions_total", result="committed") == 2


def test_at_least_once_waits_for_the_oldest_window_once_too_many_are_unacknowledged() -> None:
    w, (p,), c = make(AckedWindow)
    for i in range(AckedWindow.MAX_SEALED):
        route(w, (0, i))
        w.rotate()
    assert c.commits == [] and "flush" not in p.calls
    route(w, (0, AckedWindow.MAX_SEALED))
    w.rotate()
    assert p.calls == ["flush"] and c.commits == [[(0, AckedWindow.MAX_SEALED + 1)]]


def test_at_least_once_a_failed_delivery_commits_nothing_and_rewinds() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    p.acknowledge(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    w.commit()
    assert c.commits == [] and c.seeks == [(0, 10)]
    assert sample(w, "loginpipe_produce_errors_total", topic="processed") == 1
    assert sample(w, "loginpipe_transaction_failures_total", cause="MSG_SIZE_TOO_LARGE") == 1
    route(w, (0, 10))
    p.unflushed = 3  # the broker away: records still queued when the flush gives up
    w.commit()
    assert c.commits == [] and c.seeks == [(0, 10), (0, 10)]


class _Msg:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def test_quick_commits_keep_the_configured_interval() -> None:
    pacer = CommitPacer(0.1, 1.0)
    for _ in range(20):
        assert pacer.committed(0.008) == 0.1


def test_slow_commits_grow_the_interval_to_its_bound_and_quick_ones_bring_it_back() -> None:
    pacer = CommitPacer(0.1, 1.0)
    grown = [pacer.committed(0.05) for _ in range(10)]
    # Commits of 50 ms stall the loop a tenth of the time at intervals of 450 ms.
    assert grown[0] < grown[-1] and grown[-1] == pytest.approx(0.45, rel=0.01)
    assert grown == sorted(grown)
    assert [pacer.committed(0.4) for _ in range(5)][-1] == 1.0  # never above the bound
    back = [pacer.committed(0.005) for _ in range(12)]
    assert back[-1] == 0.1 and back[0] > back[-1]


def test_a_consumer_that_keeps_up_keeps_the_configured_interval_however_slow_commits_are() -> None:
    pacer = CommitPacer(0.1, 1.0)
    assert [pacer.committed(0.3, behind=False) for _ in range(5)] == [0.1] * 5
    # Behind again (a backlog): the slowness seen meanwhile counts at once.
    assert pacer.committed(0.3, behind=True) == 1.0


def test_a_fixed_interval_never_grows_and_a_bound_below_it_is_refused() -> None:
    pacer = CommitPacer(0.1, 0.1)
    assert pacer.committed(5.0) == 0.1
    with pytest.raises(ValueError, match="interval <= bound"):
        CommitPacer(0.2, 0.1)


class FakeTime:
    """The window's clock: a slow broker is a commit that moves it on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", [TransactionalWindow, AckedWindow])
def test_a_slow_commit_lengthens_the_next_window_and_the_interval_is_exported(
    kind: type[CommitWindow], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime()
    monkeypatch.setattr(commit_window, "time", clock)
    w, (p,), _c = make(kind, pacer=CommitPacer(0.1, 2.0))
    slow = "commit_transaction" if kind is TransactionalWindow else "flush"
    original = getattr(p, slow)

    def takes_300ms(*args: Any) -> Any:
        clock.now += 0.3
        return original(*args)

    setattr(p, slow, takes_300ms)
    assert w.interval == 0.1
    assert sample(w, "loginpipe_consumer_commit_interval_seconds") == 0.1
    route(w, (0, 10))
    w.behind = True  # a full batch still waited as the window ended
    w.commit()
    # Smoothed: half of the 300 ms commit, nine times over (a commit a tenth of the cycle).
    assert w.interval == pytest.approx(1.35)
    assert sample(w, "loginpipe_consumer_commit_interval_seconds") == w.interval
    spent = "commit" if kind is TransactionalWindow else "flush"
    assert sample(w, "loginpipe_consumer_seconds_total", phase=spent) == pytest.approx(0.3)
    # The same slow commit of a window with no backlog: back to the configured interval.
    route(w, (0, 11))
    w.commit()
    assert w.interval == 0.1 and not w.behind


class Msg:
    """A consumed message as the hot path reads it."""

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self.p, self.o, self.v = partition, offset, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes:
        return self.v

    def key(self) -> bytes:
        return b"k"

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def test_at_least_once_a_batch_that_fails_halfway_commits_no_offset_it_did_not_send() -> None:
    """A stop with the queue full fails the third produce of five: the close commits only
    what went out before this batch, so the restart reads all five again (none is lost)."""
    from loginpipe.consumer import Router
    from loginpipe.settings import ConsumerSettings, load

    w, (p,), c = make(AckedWindow)
    sent: list[bytes] = []

    def produce(
        topic: str, value: bytes, key: bytes, headers: Any = None, on_delivery: Any = None
    ) -> None:
        if len(sent) == 2 + 1:  # the first batch's record, then two of the second
            raise KafkaException(KafkaError(KafkaError._QUEUE_FULL, "stopping with a full queue"))
        sent.append(value)

    p.produce = produce  # type: ignore[attr-defined]
    p.poll = lambda timeout: 0  # type: ignore[attr-defined]
    s = load(ConsumerSettings, {"LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"})
    router = Router(s, w.metrics, w.health, w.stopper)
    router.window = w
    router._process([Msg(0, 9, b"not json")], w)  # a first batch, sent whole
    with pytest.raises(KafkaException):
        router._process([Msg(0, 10 + i, b"not json") for i in range(5)], w)
    # What run() does on the way out: abort_on_exit, then close() revokes: commit.
    w.abort_on_exit()
    router._on_revoke(c, [])  # type: ignore[arg-type]
    assert c.commits == [[(0, 10)]]  # the first batch only: offsets 10-14 are read again
    assert sample(w, "loginpipe_events_invalid_total", reason="malformed_json") == 1


def test_at_least_once_windows_acknowledged_before_a_failed_one_are_committed_not_dropped() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    route(w, (1, 20))
    w.rotate()
    p.acknowledge(1)
    p.acknowledge(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    w.settle()
    assert c.commits == [[(0, 11)]]  # the first window is durable: committed once
    assert c.seeks == [(1, 20)]  # only the failed one is read again
    assert sample(w, "loginpipe_transactions_total", result="committed") == 1


def test_at_least_once_a_rewind_that_fails_leaves_nothing_for_the_exit_to_commit() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    route(w, (0, 11))  # the open window: acknowledged, but after the failed one
    c.committed_error = KafkaError(KafkaError._TIMED_OUT, "coordinator away")
    p.acknowledge(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    p.acknowledge(1)
    with pytest.raises(KafkaException):
        w.settle()
    assert not w.pending  # so the revoke inside close() commits nothing past the failure
    w.commit()
    assert c.commits == []  # nothing of the failed window nor of the one after it


def test_at_least_once_the_revoke_sends_again_what_the_asynchronous_commits_sent() -> None:
    w, (p,), c = make(AckedWindow)
    route(w, (0, 10))
    w.rotate()
    p.acknowledge(1)
    w.settle()
    route(w, (1, 20))
    w.commit()  # a revoke: the asynchronous commit of partition 0 may have failed unseen
    assert c.asynchronous == [True, False]
    assert sorted(c.commits[1]) == [(0, 11), (1, 21)]
