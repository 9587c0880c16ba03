"""Consumers added and removed while events flow: the autoscaler's steps, on the real broker."""

from __future__ import annotations

import re
import signal

import pytest

from tests.integration.conftest import Pipeline, Service, wait_for
from tests.integration.test_pipeline import assert_exactly_once, generate_args

pytestmark = pytest.mark.integration

_REVOKED = re.compile(r"partitions (revoked|lost) partitions=\[([0-9, ]*)\]")
_ASSIGNED = re.compile(r"partitions assigned partitions=\[([0-9, ]*)\]")


def revocations(svc: Service) -> list[tuple[str, list[int]]]:
    return [
        (kind, [int(p) for p in ps.split(",") if p.strip()])
        for kind, ps in _REVOKED.findall(svc.log())
    ]


def assigned(svc: Service) -> set[int]:
    """The partitions the consumer holds now, from its log (incremental assignments)."""
    held: set[int] = set()
    for line in svc.log().splitlines():
        if m := _ASSIGNED.search(line):
            held |= {int(p) for p in m.group(1).split(",") if p.strip()}
        elif (m := _REVOKED.search(line)) is not None:
            held -= {int(p) for p in m.group(2).split(",") if p.strip()}
    return held


def test_consumers_scaled_out_and_in_mid_transaction_route_every_event_exactly_once(
    make_pipeline,
) -> None:
    pl: Pipeline = make_pipeline(partitions=6)
    count = 40_000
    gen = pl.service("generator", *generate_args(count=count, rate=1500)).start()
    # Transactions held open for a second while events flow: every join and leave lands in one.
    env = {"LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS": "1000"}

    def consumer(i: int) -> Service:
        return pl.service(
            "consumer", "consume", LOGINPIPE_CONSUMER_TRANSACTIONAL_ID=f"tx-{pl.id}-{i}", **env
        ).start()

    def routed() -> int:
        return sum(max(o, 0) for o in pl.committed(pl.consumer_group, pl.input).values())

    def progress(what: str) -> None:
        floor = routed()
        wait_for(what, lambda: routed() > floor, timeout=60)
        assert gen.running(), f"generator finished before {what}: raise the count"

    first = consumer(0)
    pl.service("aggregator", "aggregate").start()
    wait_for("the first consumer to hold all six partitions", lambda: len(assigned(first)) == 6, 60)
    progress("input routed by one consumer")

    # Scale out, one step at a time as an autoscaler does: 1 -> 2 -> 3.
    added = [consumer(1)]
    wait_for("the second consumer to take partitions", lambda: len(assigned(added[0])) > 0, 60)
    progress("input routed by two consumers")
    added.append(consumer(2))
    wait_for("the third consumer to take partitions", lambda: len(assigned(added[1])) > 0, 60)
    wait_for(
        "the six partitions spread over three consumers",
        lambda: sorted(len(assigned(c)) for c in (first, *added)) == [2, 2, 2],
        60,
    )
    progress("input routed by three consumers")

    # Scale in: 3 -> 2 -> 1, each stopped as Kubernetes stops a pod (SIGTERM).
    for leaving in reversed(added):
        leaving.signal(signal.SIGTERM)
        assert leaving.wait(30) == 0, leaving.log()[-3000:]
        progress("input routed after a consumer left")
    wait_for("the first consumer to hold all six again", lambda: len(assigned(first)) == 6, 60)

    assert gen.wait(120) == 0, gen.log()[-3000:]
    wait_for("the input routed", lambda: routed() >= count, 120)
    assert_exactly_once(pl, count)

    # Incremental rebalancing: the consumer that stayed gave up only the partitions that moved
    # (an eager rebalance takes all six from it at the first join), and never lost any.
    took = revocations(first)
    assert took, "the first consumer never gave partitions up: no rebalance was seen"
    assert all(kind == "revoked" and len(ps) < 6 for kind, ps in took), took
    for c in (first, *added):
        assert "Traceback" not in c.log()
