"""The pipeline end to end on the real broker and Redis: exactly once, exact counts, crashes."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import orjson
import pytest

from loginpipe import envelope
from loginpipe.events import GroundTruth, generate
from loginpipe.validation import Valid, validate
from tests.integration.conftest import Pipeline, wait_for

pytestmark = pytest.mark.integration

SEED, COUNT, BAD_SHARE, START = 11, 10_000, 0.2, 1_764_000_000


def expected_run(count: int = COUNT, seed: int = SEED) -> tuple[GroundTruth, dict[bytes, Any]]:
    truth = GroundTruth()
    reason_of: dict[bytes, Any] = {}
    for ev in generate(count, seed=seed, bad_share=BAD_SHARE, start_time=START):
        truth.add(ev)
        reason_of[ev.value] = ev.expected_reason
    return truth, reason_of


def generate_args(count: int = COUNT, rate: float = 0, seed: int = SEED) -> list[str]:
    return [
        "generate",
        f"--count={count}",
        f"--rate={rate}",
        f"--seed={seed}",
        f"--bad-share={BAD_SHARE}",
        f"--start-time={START}",
        "--summary",
    ]


def assert_exactly_once(pl: Pipeline, count: int = COUNT, seed: int = SEED) -> None:
    """Every input offset appears exactly once across processed and errors; counts exact."""
    truth, reason_of = expected_run(count, seed)
    inputs = pl.read_all(pl.input, expected=count)
    assert len(inputs) == count
    by_coord = {(r.partition, r.offset): r for r in inputs}

    processed = pl.read_all(pl.processed, expected=truth.valid)
    errors = pl.read_all(pl.errors, expected=truth.invalid)
    assert len(processed) + len(errors) == count, (len(processed), len(errors))

    # Valid: the multiset of outputs is exactly the normalised valid inputs (values are unique).
    want = Counter()
    for r in inputs:
        res = validate(r.value)
        if isinstance(res, Valid):
            want[(r.key, res.value, res.device_type)] += 1
    got = Counter(
        (r.key, r.value, r.headers[envelope.HEADER_DEVICE_TYPE].decode()) for r in processed
    )
    assert got == want
    assert max(want.values()) == 1

    # Invalid: one envelope per invalid input coordinate, with the expected reason and bytes.
    seen: set[tuple[int, int]] = set()
    for r in errors:
        env = orjson.loads(r.value)
        src = env["source"]
        coord = (src["partition"], src["offset"])
        assert src["topic"] == pl.input
        assert coord not in seen, f"duplicate error for input {coord}"
        seen.add(coord)
        original = by_coord[coord]
        assert envelope.decode_bytes(env["original"]) == original.value
        assert envelope.decode_bytes(src["key"]) == original.key
        assert env["reason"] == reason_of[original.value].value
        assert r.headers[envelope.HEADER_REASON].decode() == env["reason"]
        assert r.key == original.key
    assert len(seen) == truth.invalid
    assert Counter(orjson.loads(r.value)["reason"] for r in errors) == truth.invalid_by_reason

    wait_for(
        "Redis counts to reach the ground truth",
        lambda: pl.counts() == dict(truth.valid_by_device),
        timeout=60,
    )


def test_every_event_is_routed_exactly_once_and_counted_exactly(make_pipeline) -> None:
    pl = make_pipeline(partitions=3)
    gen = pl.run_cli(*generate_args())
    assert gen.returncode == 0, gen.stderr
    summary = orjson.loads(gen.stdout)
    truth, _ = expected_run()
    assert summary["delivered"] == COUNT and summary["failed"] == 0
    assert summary["valid_by_device"] == dict(truth.valid_by_device)

    pl.service("consumer", "consume").start()
    pl.service("aggregator", "aggregate").start()
    assert_exactly_once(pl)


def committed_input(pl: Any) -> int:
    """Input records the consumer group has committed, over every partition."""
    return sum(max(o, 0) for o in pl.committed(pl.consumer_group, pl.input).values())


def kill_once_it_commits(
    pl: Any, gen: Any, consumer: Any, round_: int, mid_transaction: bool = False, **env: str
) -> Any:
    """SIGKILL the consumer once it has committed more input (``mid_transaction``: and while
    its next transaction has records in the log); its replacement, started."""
    floor = committed_input(pl)
    wait_for("the consumer to commit more input", lambda: committed_input(pl) > floor, 60)
    if mid_transaction:
        # Right after a commit the next transaction may have written nothing yet: a kill
        # then aborts an empty one. Kill once records are in the log but not committed.
        wait_for("an open transaction with records in the log", pl.in_open_transaction, 30, 0.02)
    assert gen.running(), f"generator finished before kill round {round_}: raise the count"
    consumer.kill()
    return pl.service("consumer", "consume", **env).start()


def test_counts_stay_exact_when_the_consumer_and_aggregator_are_killed_mid_run(
    make_pipeline,
) -> None:
    pl = make_pipeline(partitions=3)
    count = 30_000
    gen = pl.service("generator", *generate_args(count=count, rate=2000)).start()
    # Transactions held open for a second while events flow: a kill lands inside one.
    slow_commit = {"LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS": "1000"}
    consumer = pl.service("consumer", "consume", **slow_commit).start()
    aggregator = pl.service("aggregator", "aggregate").start()

    # Kill each service twice while events are still flowing, then let them finish.
    for round_ in range(2):
        consumer = kill_once_it_commits(
            pl, gen, consumer, round_, mid_transaction=True, **slow_commit
        )

        total = sum(pl.counts().values())
        wait_for("the aggregator to count more", lambda t=total: sum(pl.counts().values()) > t, 60)
        aggregator.kill()
        aggregator = pl.service("aggregator", "aggregate").start()

    assert gen.wait(60) == 0
    assert_exactly_once(pl, count)
    assert consumer.running() and aggregator.running()
    # The kills did land mid-transaction: aborted records sit in the logs, unseen by readers.
    written = sum(
        len(pl.read_all(t, isolation="read_uncommitted")) for t in (pl.processed, pl.errors)
    )
    assert written > count


def test_at_least_once_mode_loses_nothing(make_pipeline) -> None:
    pl = make_pipeline(partitions=2)
    assert pl.run_cli(*generate_args(count=3000)).returncode == 0
    pl.service("consumer", "consume", "--delivery=at_least_once").start()
    truth, _ = expected_run(3000)
    processed = pl.read_all(pl.processed, expected=truth.valid)
    errors = pl.read_all(pl.errors, expected=truth.invalid)
    coords = {
        (orjson.loads(r.value)["source"]["partition"], orjson.loads(r.value)["source"]["offset"])
        for r in errors
    }
    assert len(coords) == truth.invalid
    assert len({r.value for r in processed}) == truth.valid


def test_at_least_once_mode_killed_mid_run_and_rebalanced_loses_nothing(make_pipeline) -> None:
    """Sealed windows commit only once their records are acknowledged: a kill between a
    window's produce and its commit, or a rebalance with windows in flight, re-reads them."""
    pl = make_pipeline(partitions=3)
    count = 20_000
    gen = pl.service("generator", *generate_args(count=count, rate=2000)).start()
    alo = {"LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"}
    consumer = pl.service("consumer", "consume", **alo).start()

    for round_ in range(2):
        consumer = kill_once_it_commits(pl, gen, consumer, round_, **alo)
    # A second consumer joins while windows are in flight: the revoke commits what they hold.
    floor = committed_input(pl)
    wait_for("the consumer to commit more input", lambda: committed_input(pl) > floor, 60)
    second = pl.service("consumer", "consume", **alo).start()
    assert gen.wait(60) == 0
    # Every input committed: every output of it was acknowledged before its offset moved.
    wait_for("every input committed", lambda: committed_input(pl) == count, 60)
    truth, _ = expected_run(count)
    processed = pl.read_all(pl.processed, expected=truth.valid)
    errors = pl.read_all(pl.errors, expected=truth.invalid)
    assert len({r.value for r in processed}) == truth.valid
    coords = {
        (orjson.loads(r.value)["source"]["partition"], orjson.loads(r.value)["source"]["offset"])
        for r in errors
    }
    assert len(coords) == truth.invalid
    assert consumer.running() and second.running()


def test_sigterm_stops_every_service_cleanly_and_commits_what_it_routed(make_pipeline) -> None:
    pl = make_pipeline(partitions=2)
    gen = pl.service("generator", *generate_args(count=0, rate=500)).start()
    consumer = pl.service("consumer", "consume").start()
    aggregator = pl.service("aggregator", "aggregate").start()
    wait_for("counts in Redis", lambda: sum(pl.counts().values()) > 100, timeout=60)

    for svc in (gen, consumer, aggregator):
        svc.signal(signal.SIGTERM)
        assert svc.wait(timeout=15) == 0, svc.log()[-3000:]
        assert "stopped" in svc.log()

    # Nothing the consumer routed is left uncommitted, and nothing committed is unrouted.
    committed = pl.committed(pl.consumer_group, pl.input)
    outputs = len(pl.read_all(pl.processed)) + len(pl.read_all(pl.errors))
    assert sum(committed.values()) == outputs
    # And the aggregator's stored position covers exactly what it counted.
    positions = pl.positions()
    processed = pl.read_all(pl.processed)
    assert sum(pl.counts().values()) == sum(
        1 for r in processed if r.offset < positions.get(r.partition, 0)
    )


def test_poison_messages_never_stop_the_consumer(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    good = orjson.dumps(
        {
            "user_id": "u",
            "app_version": "1.0",
            "device_type": "Android",
            "ip": "::1",
            "timestamp": "1764000000",
        }
    )
    pl.produce_raw([(None, None), (b"k", b"\x00" * 10_000), (b"k", b"[" * 50_000), (b"k", good)])
    pl.service("consumer", "consume").start()
    errors = pl.read_all(pl.errors, expected=3)
    assert [orjson.loads(r.value)["reason"] for r in errors] == [
        "empty_message",
        "malformed_json",
        "malformed_json",
    ]
    [processed] = pl.read_all(pl.processed, expected=1)
    assert orjson.loads(processed.value)["device_type"] == "android"
    assert orjson.loads(processed.value)["timestamp"] == 1764000000


def set_topic_config(pl: Pipeline, topic: str, **config: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": pl.bootstrap})
    entries = [
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in config.items()
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result(30)


def test_a_record_whose_error_envelope_would_exceed_kafkas_limit_is_routed_cut_to_fit(
    make_pipeline,
) -> None:
    # A 600 KB key and 64 KiB of \x01 fit in Kafka; their envelope, escaped, would not (about
    # 1 MB with the key repeated as the record key): every consumer that took the partition
    # would die on it. It must be routed like any other, cut to fit, and the rest go on.
    pl = make_pipeline(partitions=1)
    set_topic_config(pl, pl.errors, max_message_bytes="300000")
    key, value = b"k" * 600_000, b"\x01" * (64 * 1024)
    good = event_bytes()
    pl.produce_raw([(key, value), (b"u", good)])
    consumer = pl.service("consumer", "consume").start()
    [error] = pl.read_all(pl.errors, expected=1)
    [processed] = pl.read_all(pl.processed, expected=1)
    assert consumer.running(), consumer.log()[-2000:]
    env = orjson.loads(error.value)
    assert len(error.value) + len(error.key or b"") <= 300_000
    assert env["reason"] == "invalid_encoding" or env["reason"] == "malformed_json"
    assert (env["source"]["partition"], env["source"]["offset"]) == (0, 0)
    assert env["source"]["key"]["truncated"] is True and env["source"]["key"]["size"] == 600_000
    assert env["original"]["truncated"] is True and env["original"]["size"] == 64 * 1024
    assert error.key == b"sha256:" + hashlib.sha256(key).hexdigest().encode()
    assert orjson.loads(processed.value)["user_id"] == "u"


def test_an_errors_topic_too_small_for_any_envelope_is_refused_at_start_up(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    set_topic_config(pl, pl.errors, max_message_bytes="1000")
    out = pl.run_cli("consume")
    assert out.returncode == 2, out.stderr
    assert "max.message.bytes" in out.stderr and pl.errors in out.stderr
    assert "Traceback" not in out.stderr


def event_bytes() -> bytes:
    return orjson.dumps(
        {"user_id": "u", "app_version": "1.0", "device_type": "ios", "ip": "::1", "timestamp": 1}
    )


def test_counts_command_prints_the_redis_counts(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    pl.redis.hset(f"{pl.prefix}device_counts", mapping={"android": 3, "ios": 4})
    out = pl.run_cli("counts", "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == {"android": 3, "ios": 4}
    out = pl.run_cli("counts")
    assert out.stdout.split() == ["android", "3", "ios", "4", "total", "7"]


def get(port: int, path: str) -> tuple[int, str]:
    """A service's HTTP status and body at ``path``; (0, "") while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def test_services_report_ready_once_they_have_joined_their_group(make_pipeline) -> None:
    from tests.integration.conftest import free_port

    pl = make_pipeline(partitions=1)

    for name, cmd in (("consumer", "consume"), ("aggregator", "aggregate")):
        port = free_port()
        pl.service(name, cmd, LOGINPIPE_METRICS_PORT=str(port)).start()
        wait_for(f"{name} /readyz", lambda p=port: get(p, "/readyz")[0] == 200, timeout=60)
        assert get(port, "/healthz")[0] == 200
        status, body = get(port, "/metrics")
        assert status == 200 and "loginpipe_ready 1.0" in body
        assert get(port, "/nope")[0] == 404


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_a_repeating_transaction_failure_backs_off_goes_unready_and_exits_naming_its_cause(
    make_pipeline, delivery: str
) -> None:
    from tests.integration.conftest import free_port

    pl = make_pipeline(partitions=1)
    port = free_port()
    consumer = pl.service(
        "consumer",
        "consume",
        LOGINPIPE_METRICS_PORT=str(port),
        LOGINPIPE_CONSUMER_FAILURE_BUDGET_SECONDS="8",
        LOGINPIPE_CONSUMER_DELIVERY=delivery,
    ).start()

    def status(path: str) -> tuple[int, str]:
        return get(port, path)

    wait_for("the consumer to be ready", lambda: status("/readyz")[0] == 200, timeout=60)
    # After start-up, the errors topic stops taking envelopes: every transaction now fails.
    set_topic_config(pl, pl.errors, max_message_bytes="1000")
    # Random bytes: compression cannot bring the envelope under the limit.
    pl.produce_raw([(b"k", os.urandom(5000)), (b"u", event_bytes())])
    wait_for(
        "the consumer to report the failures and go unready",
        lambda: (
            status("/readyz")[0] == 503
            and 'loginpipe_transaction_failures_total{cause="MSG_SIZE_TOO_LARGE"}'
            in status("/metrics")[1]
        ),
        timeout=30,
    )
    assert status("/healthz")[0] == 200  # unready, not dead: the budget is not spent yet
    assert consumer.wait(60) == 4
    log = consumer.log()
    assert "transactions kept failing for" in log and "max.message.bytes" in log
    assert log.count("transaction failed, aborting and rewinding") == 1  # once per cause
    # Backed off: a handful of attempts in the budget, not a hot loop of hundreds a second.
    attempts = int(re.search(r"\((\d+) in a row", log).group(1))  # type: ignore[union-attr]
    assert 3 <= attempts <= 20, attempts
    assert "Traceback" not in log
    # No window's offsets were committed. Exactly-once: nothing of them is visible either;
    # at-least-once: the valid event went out on every attempt. Fixed and restarted, the
    # rest goes through (exactly-once: once).
    tried = pl.read_all(pl.processed)
    assert tried == [] if delivery == "exactly_once" else len(tried) >= 2
    set_topic_config(pl, pl.errors, max_message_bytes="1048588")
    pl.service("consumer", "consume", LOGINPIPE_CONSUMER_DELIVERY=delivery).start()
    assert len(pl.read_all(pl.errors, expected=1)) == 1
    assert len(pl.read_all(pl.processed, expected=len(tried) + 1)) == len(tried) + 1
