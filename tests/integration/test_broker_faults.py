"""The pipeline on a broker of its own that is killed (SIGKILL) and restarted under load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import Pipeline, wait_for
from tests.integration.test_pipeline import assert_exactly_once, generate_args

pytestmark = pytest.mark.integration

# Kafka's TransactionMarkerChannelManager, when a partition's leader is unknown.
_SKIPPED_MARKERS = re.compile(
    r"Couldn't find leader endpoint for partitions .*? while trying to send transaction "
    r"markers for (\S+), these partitions are likely deleted"
)


def broker_skipped_markers(broker_log: str, transactional_id: str) -> list[str]:
    """The broker's lines saying it skipped markers of ``transactional_id``'s transactions."""
    return [
        line
        for line in broker_log.splitlines()
        if (m := _SKIPPED_MARKERS.search(line)) and m.group(1).rstrip(",") == transactional_id
    ]


def test_the_broker_killed_during_commits_ends_in_exact_outputs_and_never_a_traceback(
    own_kafka, redis_url: str, tmp_path: Path
) -> None:
    kafka = own_kafka()
    pl = Pipeline(kafka.bootstrap, redis_url, tmp_path, partitions=3)
    pl.create_topics(AdminClient({"bootstrap.servers": kafka.bootstrap}))
    try:
        # Long enough to outlast two kills: a broker restart after SIGKILL recovers its logs
        # (up to ~20 s here) while the generator goes on producing into its buffer.
        count = 100_000
        gen = pl.service("generator", *generate_args(count=count, rate=1500)).start()
        # A commit every 100 ms while events flow: a kill lands in or next to one.
        # A consumer that ends leaves its transaction to its successor (same id), which aborts
        # it; the broker's timeout for it is the backstop, kept short here.
        consumer_env = {"LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS": "20000"}
        consumers = [pl.service("consumer", "consume", **consumer_env).start()]
        pl.service("aggregator", "aggregate").start()

        def routed() -> int:
            return sum(max(o, 0) for o in pl.committed(pl.consumer_group, pl.input).values())

        def consumer_up() -> bool:
            """The consumer runs; one that ended must have ended as the README says."""
            last = consumers[-1]
            if last.running():
                return True
            assert last.wait(1) == 3, last.log()[-3000:]
            assert "a Kafka transaction call hung" in last.log()
            consumers.append(pl.service("consumer", "consume", **consumer_env).start())
            return False

        for round_ in range(2):
            floor = routed()
            wait_for(
                "the consumer to commit more input",
                lambda f=floor: (consumer_up() or True) and routed() > f,
                120,
            )
            assert gen.running(), f"generator finished before kill round {round_}: raise the count"
            kafka.kill()
            kafka.start()

        assert gen.wait(120) == 0, gen.log()[-3000:]
        wait_for("the input routed", lambda: consumer_up() and routed() >= count, 120)
        # Each consumer rode the broker's deaths out, or ended with the one clear line.
        for c in consumers:
            assert "Traceback" not in c.log()
        try:
            assert_exactly_once(pl, count)
        except AssertionError as exc:
            # A broker bug, not the consumer's: KAFKA-20734 (apache/kafka#22680, open). After
            # an unclean restart a single broker is briefly fenced, its partitions leaderless;
            # its transaction coordinator, completing a transaction that was PrepareCommit at
            # the kill, takes a leaderless partition for a deleted one, skips its marker and
            # completes the commit. The input offsets (marker written before the kill) are
            # committed; the outputs left unmarked are aborted by the next marker. Accepted
            # only with the broker's own line for this consumer's transactional id: any other
            # loss fails the test.
            skipped = broker_skipped_markers(
                kafka.logs(), pl.env["LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"]
            )
            if not skipped:
                raise
            pytest.xfail(
                f"KAFKA-20734: the broker skipped transaction markers ({skipped[0][:160]}...) "
                f"and outputs were lost ({str(exc)[:160]})"
            )
    except BaseException:
        for svc in pl.services:  # shown with the failure
            print(f"--- {svc.name} ---\n{svc.log()[-4000:]}")
        raise
    finally:
        pl.close()


def test_the_brokers_skipped_marker_line_is_recognised_for_its_transactional_id_only() -> None:
    # As Kafka 4.3.1 logged it in a run of the test above (one line, cut here for width).
    line = (
        "[2026-11-30 08:17:18,313] INFO [Transaction Marker Channel Manager 1]: Couldn't find "
        "leader endpoint for partitions HashSet(user-login-errors-a9-0, __consumer_offsets-4, "
        "user-login-processed-a9-0) while trying to send transaction markers for tx-a9, these "
        "partitions are likely deleted already and hence can be skipped "
        "(kafka.coordinator.transaction.TransactionMarkerChannelManager)"
    )
    log = f"[2026-11-30 08:17:18,312] INFO other line\n{line}\n"
    assert broker_skipped_markers(log, "tx-a9") == [line]
    assert broker_skipped_markers(log, "tx-a") == []
    assert broker_skipped_markers(log, "tx-a9b") == []
