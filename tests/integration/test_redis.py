"""The aggregator and Redis: one-slot state, Redis Cluster, outages, credentials, eviction."""

from __future__ import annotations

import signal
import time

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from loginpipe import envelope
from loginpipe.redis_store import position_field
from tests.integration.conftest import Pipeline, free_port, wait_for
from tests.integration.test_pipeline import expected_run, generate_args, get

pytestmark = pytest.mark.integration


def route(pl: Pipeline, count: int, seed: int) -> dict[str, int]:
    """Generate ``count`` events with ``seed`` (the consumer routes them); the valid counts."""
    gen = pl.run_cli(*generate_args(count=count, seed=seed))
    assert gen.returncode == 0, gen.stderr
    return dict(expected_run(count, seed)[0].valid_by_device)


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def test_counts_are_exact_on_a_redis_cluster_with_the_aggregator_killed_mid_run(
    make_pipeline, redis_cluster: str
) -> None:
    pl = make_pipeline(partitions=3)
    pl.use_redis(redis_cluster, cluster=True)
    pl.service("consumer", "consume").start()
    aggregator = pl.service("aggregator", "aggregate").start()
    want = route(pl, 5_000, seed=3)
    wait_for("some counts", lambda: sum(pl.counts().values()) > 0, timeout=60)
    aggregator.kill()
    pl.service("aggregator", "aggregate").start()
    want = add(want, route(pl, 5_000, seed=4))
    wait_for("exact counts on the cluster", lambda: pl.counts() == want, timeout=60)
    # The positions sit past every processed record (transaction markers take offsets too).
    last: dict[int, int] = {}
    for r in pl.read_all(pl.processed):
        last[r.partition] = max(last.get(r.partition, -1), r.offset)
    assert all(pl.positions()[p] > o for p, o in last.items())


def test_an_evicting_redis_is_refused_at_start_up_naming_the_policy(
    make_pipeline, own_redis
) -> None:
    pl = make_pipeline(partitions=1)
    pl.use_redis(own_redis("maxmemory-policy allkeys-lru").url)
    out = pl.run_cli("aggregate", timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "maxmemory-policy allkeys-lru" in out.stderr and "noeviction" in out.stderr
    assert "Traceback" not in out.stderr


def test_wrong_redis_credentials_exit_2_at_start_up_and_when_they_change_at_run_time(
    make_pipeline, own_redis
) -> None:
    pl = make_pipeline(partitions=1)
    rds = own_redis()
    pl.use_redis(rds.url)
    pl.redis.config_set("requirepass", "right")
    pl.redis = redis.Redis.from_url(rds.url, password="right")

    started = time.monotonic()
    out = pl.run_cli("aggregate", timeout=60, LOGINPIPE_REDIS_PASSWORD="wrong")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "LOGINPIPE_REDIS_PASSWORD" in out.stderr and "Traceback" not in out.stderr
    assert time.monotonic() - started < 15, "credentials are not retried until the timeout"

    pl.service("consumer", "consume").start()
    aggregator = pl.service("aggregator", "aggregate", LOGINPIPE_REDIS_PASSWORD="right").start()
    want = route(pl, 200, seed=5)
    wait_for("counts", lambda: pl.counts() == want, timeout=60)
    # The password is rotated under the running aggregator: its next write is refused.
    pl.redis.config_set("requirepass", "rotated")
    pl.redis = redis.Redis.from_url(rds.url, password="rotated")
    pl.redis.client_kill_filter(_type="normal", skipme=True)
    route(pl, 200, seed=6)
    assert aggregator.wait(60) == 2
    log = aggregator.log()
    assert "refused the credentials" in log and "LOGINPIPE_REDIS_PASSWORD" in log
    assert "Traceback" not in log
    assert pl.counts() == want  # nothing half-written


def test_redis_down_through_a_rebalance_and_a_sigterm_loses_nothing_and_counts_once(
    make_pipeline, own_redis
) -> None:
    pl = make_pipeline(partitions=2)
    rds = own_redis()
    pl.use_redis(rds.url)
    pl.service("consumer", "consume").start()
    port1, port2 = free_port(), free_port()
    agg1 = pl.service("aggregator", "aggregate", LOGINPIPE_METRICS_PORT=str(port1)).start()
    agg2 = pl.service("aggregator", "aggregate", LOGINPIPE_METRICS_PORT=str(port2)).start()
    for port in (port1, port2):
        wait_for("both aggregators ready", lambda p=port: get(p, "/readyz")[0] == 200, 60)
    want = route(pl, 2_000, seed=7)
    wait_for("counts", lambda: pl.counts() == want, timeout=60)

    # Redis goes away; one aggregator leaves: the other is handed every partition while
    # Redis is down, and waits for it (unready), past the 30 s that once crashed it.
    rds.stop()
    agg2.signal(signal.SIGTERM)
    assert agg2.wait(20) == 0, agg2.log()[-3000:]
    wait_for("agg1 unready while Redis is down", lambda: get(port1, "/readyz")[0] == 503, 30)
    outage_end = time.monotonic() + 35
    while time.monotonic() < outage_end:  # a hold, not a wait: it must outlive the outage
        assert agg1.running(), agg1.log()[-3000:]
        time.sleep(1)
    assert get(port1, "/healthz")[0] == 200
    rds.start()
    wait_for("agg1 ready again", lambda: get(port1, "/readyz")[0] == 200, 60)

    # Redis goes away under a write: SIGTERM then stops at once and cleanly, no offset moves.
    rds.stop()
    more = route(pl, 2_000, seed=8)
    wait_for("agg1 to wait on Redis", lambda: "Redis unavailable, retrying" in agg1.log(), 60)
    agg1.signal(signal.SIGTERM)
    assert agg1.wait(20) == 0, agg1.log()[-3000:]
    assert "Traceback" not in agg1.log() + agg2.log()

    rds.start()
    pl.service("aggregator", "aggregate").start()
    wait_for("exact counts after the outages", lambda: pl.counts() == add(want, more), 60)


def test_after_the_processed_topic_is_recreated_a_batch_straddling_the_position_counts_from_it(
    make_pipeline, admin: AdminClient
) -> None:
    pl = make_pipeline(partitions=1)
    header = [(envelope.HEADER_DEVICE_TYPE, b"ios")]
    pl.produce_raw([(b"k", b"{}")] * 100, topic=pl.processed, headers=header)
    aggregator = pl.service("aggregator", "aggregate").start()
    wait_for("the first 100 counted", lambda: pl.counts() == {"ios": 100}, timeout=60)

    # The topic is recreated under the running aggregator.
    admin.delete_topics([pl.processed], operation_timeout=30)[pl.processed].result(30)

    def recreated() -> bool:
        fut = admin.create_topics([NewTopic(pl.processed, 1, 1)])[pl.processed]
        try:
            fut.result(30)
            return True
        except Exception:  # the deletion is still under way
            return False

    wait_for("the processed topic to be recreated", recreated, timeout=60)
    # The new log's first 50 records lie before the stored position (100): indistinguishable
    # from a replay, they are skipped, and said so.
    pl.produce_raw([(b"k", b"{}")] * 50, topic=pl.processed, headers=header)
    skipped = "records before the position not counted"
    wait_for("the skip to be logged", lambda: skipped in aggregator.log(), timeout=60)
    # The next 200 (offsets 50-249) arrive in one batch that straddles the position: the
    # records from 100 on are new and counted.
    pl.produce_raw([(b"k", b"{}")] * 200, topic=pl.processed, headers=header)
    wait_for("the records from the position on counted", lambda: pl.positions() == {0: 250}, 60)
    assert pl.counts() == {"ios": 250}
    assert aggregator.running()


def test_positions_in_the_layout_before_one_hash_are_moved_and_not_recounted(
    make_pipeline,
) -> None:
    pl = make_pipeline(partitions=1)
    header = [(envelope.HEADER_DEVICE_TYPE, b"android")]
    pl.produce_raw([(b"k", b"{}")] * 10, topic=pl.processed, headers=header)
    legacy = f"{pl.prefix}offsets:{pl.processed}"
    pl.redis.hset(pl.counts_key, "android", 10)
    pl.redis.hset(legacy, "0", 10)
    pl.service("aggregator", "aggregate").start()
    wait_for("the legacy key to be moved", lambda: not pl.redis.exists(legacy), timeout=60)
    assert pl.redis.hget(pl.counts_key, position_field(pl.processed, 0)) == b"10"
    pl.produce_raw([(b"k", b"{}")] * 5, topic=pl.processed, headers=header)
    wait_for("the new records counted", lambda: pl.positions() == {0: 15}, timeout=60)
    assert pl.counts() == {"android": 15}
