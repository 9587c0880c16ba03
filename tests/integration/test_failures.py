"""Unreachable dependencies and bad configuration give a clear error, at start-up."""

from __future__ import annotations

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def test_an_unreachable_broker_fails_start_up_naming_the_setting(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    out = pl.run_cli(
        "consume",
        LOGINPIPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        LOGINPIPE_STARTUP_TIMEOUT_SECONDS="2",
    )
    assert out.returncode == 3
    assert "cannot reach Kafka" in out.stderr
    assert "LOGINPIPE_KAFKA_BOOTSTRAP" in out.stderr


def test_an_unreachable_redis_fails_start_up_naming_the_setting(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    out = pl.run_cli(
        "aggregate",
        LOGINPIPE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        LOGINPIPE_STARTUP_TIMEOUT_SECONDS="1",
    )
    assert out.returncode == 3
    assert "cannot reach Redis" in out.stderr
    assert "LOGINPIPE_REDIS_URL" in out.stderr


def test_a_missing_topic_fails_start_up_and_says_how_to_create_it(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    out = pl.run_cli("consume", LOGINPIPE_TOPIC_INPUT="no-such-topic-here")
    assert out.returncode == 3
    assert "no-such-topic-here" in out.stderr and "loginpipe topics" in out.stderr


def test_a_bad_setting_fails_start_up_with_exit_code_2(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    out = pl.run_cli("consume", LOGINPIPE_CONSUMER_DELIVERY="twice")
    assert out.returncode == 2
    assert "LOGINPIPE_CONSUMER_DELIVERY='twice' is not one of" in out.stderr


def test_in_json_log_mode_the_fatal_line_is_json_too(make_pipeline) -> None:
    import json

    pl = make_pipeline(partitions=1)
    out = pl.run_cli("consume", LOGINPIPE_LOG_FORMAT="json", LOGINPIPE_TOPIC_INPUT="no-such-topic")
    assert out.returncode == 3
    lines = [json.loads(line) for line in out.stderr.strip().splitlines()]  # every line JSON
    last = lines[-1]
    assert last["level"] == "critical" and last["exit_code"] == 3
    assert "no-such-topic" in last["msg"] and "loginpipe topics" in last["msg"]
