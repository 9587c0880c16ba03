"""Redis security on a real Redis: each role's ACL rules allow its path and refuse the rest; TLS."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from loginpipe.rights import redis_acl_rules
from tests.integration.conftest import Pipeline, wait_for
from tests.integration.test_pipeline import expected_run, generate_args

pytestmark = pytest.mark.integration


def add_user(nodes: list[redis.Redis], role: str, prefix: str) -> tuple[str, str]:
    """A Redis user with ``role``'s rules on every node; its (name, password)."""
    name, password = f"lp-{role}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    for node in nodes:
        rules = redis_acl_rules(role, prefix).split()
        node.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
    return name, password


def cluster_nodes(url: str) -> list[redis.Redis]:
    admin = redis.RedisCluster.from_url(url)
    try:
        return [redis.Redis(host=n.host, port=n.port) for n in admin.get_nodes()]
    finally:
        admin.close()


def refused(call: Callable[[], Any]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def count_as_the_acl_users(pl: Pipeline, nodes: list[redis.Redis], count: int) -> None:
    """Route ``count`` events; the aggregator counts them as its ACL user, the reader reads."""
    agg_user, agg_password = add_user(nodes, "aggregator", pl.prefix)
    reader, reader_password = add_user(nodes, "reader", pl.prefix)
    pl.service("consumer", "consume").start()
    pl.service(
        "aggregator",
        "aggregate",
        LOGINPIPE_REDIS_USERNAME=agg_user,
        LOGINPIPE_REDIS_PASSWORD=agg_password,
    ).start()
    gen = pl.run_cli(*generate_args(count=count))
    assert gen.returncode == 0, gen.stderr
    want = dict(expected_run(count)[0].valid_by_device)
    wait_for("exact counts written by the ACL user", lambda: pl.counts() == want, timeout=90)
    out = pl.run_cli(
        "counts",
        "--json",
        LOGINPIPE_REDIS_USERNAME=reader,
        LOGINPIPE_REDIS_PASSWORD=reader_password,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert orjson.loads(out.stdout) == want
    for svc in pl.services:
        assert "NOPERM" not in svc.log() and "Traceback" not in svc.log(), svc.log()[-3000:]


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_the_pipeline_counts_exactly_as_the_aggregators_acl_user_and_reads_as_the_reader(
    make_pipeline, own_redis, redis_cluster: str, cluster: bool
) -> None:
    pl: Pipeline = make_pipeline(partitions=3)
    if cluster:
        pl.use_redis(redis_cluster, cluster=True)
        nodes = cluster_nodes(redis_cluster)
    else:
        pl.use_redis(own_redis().url)
        nodes = [pl.redis]
        # The layout before one hash, so the migration's EXISTS and EVAL run under the ACL too.
        pl.redis.hset(f"{pl.prefix}offsets:{pl.processed}", "0", 0)
    count_as_the_acl_users(pl, nodes, 3_000)


def test_each_role_is_refused_what_it_does_not_need(make_pipeline, own_redis) -> None:
    pl: Pipeline = make_pipeline(partitions=1)
    pl.use_redis(own_redis().url)
    key = f"{pl.prefix}device_counts"
    pl.redis.hset(key, "ios", 1)
    agg_user, agg_password = add_user([pl.redis], "aggregator", pl.prefix)
    reader, reader_password = add_user([pl.redis], "reader", pl.prefix)
    agg = redis.Redis.from_url(pl.redis_url, username=agg_user, password=agg_password)
    rd = redis.Redis.from_url(pl.redis_url, username=reader, password=reader_password)

    # What each needs works.
    assert agg.hincrby(key, "ios", 1) == 2
    assert agg.info("memory")["maxmemory_policy"]
    assert rd.hgetall(key) == {b"ios": b"2"}

    # The rest is refused: the server's controls, other keys, writes by the reader.
    for what, call in {
        "FLUSHALL": lambda: agg.flushall(),
        "CONFIG GET": lambda: agg.config_get("*"),
        "KEYS": lambda: agg.keys("*"),
        "SCRIPT FLUSH": lambda: agg.script_flush(),
        "a key outside the prefix": lambda: agg.hset("other:key", "f", 1),
        "a read outside the prefix": lambda: agg.hgetall("other:key"),
        "a script touching a key outside the prefix": lambda: agg.eval(
            "return redis.call('HSET', KEYS[1], 'f', 1)", 1, "other:key"
        ),
        "a string command": lambda: agg.set(f"{pl.prefix}x", 1),
        "PUBLISH": lambda: agg.publish("chan", "x"),
        "a write by the reader": lambda: rd.hset(key, "ios", 0),
        "a script by the reader": lambda: rd.eval("return 1", 0),
        "INFO by the reader": lambda: rd.info(),
    }.items():
        assert refused(call), f"{what} was allowed"
    assert pl.redis.hgetall(key) == {b"ios": b"2"}
    assert pl.redis.dbsize() >= 1  # nothing flushed


def test_an_aggregator_user_without_its_rights_exits_2_naming_the_setting(
    make_pipeline, own_redis
) -> None:
    pl: Pipeline = make_pipeline(partitions=1)
    pl.use_redis(own_redis().url)
    reader, password = add_user([pl.redis], "reader", pl.prefix)
    out = pl.run_cli(
        "aggregate", LOGINPIPE_REDIS_USERNAME=reader, LOGINPIPE_REDIS_PASSWORD=password, timeout=60
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "LOGINPIPE_REDIS_USERNAME" in out.stderr and "redis-acl aggregator" in out.stderr
    assert "Traceback" not in out.stderr
    assert password not in out.stderr and password not in out.stdout


def test_the_pipeline_counts_exactly_over_tls_as_the_acl_users(make_pipeline, own_redis) -> None:
    pl: Pipeline = make_pipeline(partitions=2)
    r = own_redis(tls=True)
    assert r.url.startswith("rediss://")
    pl.use_redis(r.url, ca=r.ca)
    count_as_the_acl_users(pl, [pl.redis], 2_000)
    # Plain text is refused by a TLS-only Redis: the traffic above was encrypted.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=2).ping()


def test_an_untrusted_or_missing_redis_ca_exits_2_naming_the_setting(
    make_pipeline, own_redis
) -> None:
    pl: Pipeline = make_pipeline(partitions=1)
    r = own_redis(tls=True)
    other = own_redis(tls=True)  # a CA of its own, which did not sign r's certificate
    cases = {
        "another CA": {"LOGINPIPE_REDIS_SSL_CA_LOCATION": other.ca},
        "the system's CAs": {},
        "a missing file": {"LOGINPIPE_REDIS_SSL_CA_LOCATION": str(r.data_dir / "nope.crt")},
    }
    for what, env in cases.items():
        out = pl.run_cli("aggregate", LOGINPIPE_REDIS_URL=r.url, timeout=60, **env)
        assert out.returncode == 2, (what, out.stderr[-2000:])
        assert "LOGINPIPE_REDIS_SSL_CA_LOCATION" in out.stderr, (what, out.stderr[-2000:])
        assert "Traceback" not in out.stderr
    out = pl.run_cli(
        "aggregate",
        LOGINPIPE_REDIS_URL=r.url.replace("rediss://", "redis://"),
        LOGINPIPE_REDIS_SSL_CA_LOCATION=r.ca,
        timeout=60,
    )
    assert out.returncode == 2 and "rediss://" in out.stderr, out.stderr[-2000:]
