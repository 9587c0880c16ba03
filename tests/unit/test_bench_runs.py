"""The benchmark's repeated runs: medians, ranges and the table that shows them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from bench import report, runs


def router(rate: float, cpu: float, *, ok: bool = True, commit_share: float = 0.1) -> Any:
    return {
        "id": "loginpipe-eos",
        "label": "loginpipe",
        "kind": "router",
        "delivery": "exactly_once",
        "events_per_second": rate,
        "cpu_seconds_per_million": cpu,
        "peak_rss_bytes": 100 * 2**20,
        "span_seconds": 1e6 / rate,
        "sanity_ok": ok,
        "sanity_problems": [] if ok else ["processed 1 != valid 2"],
        "phases": {
            "validate": {"seconds": 5.0, "share": 1 - commit_share},
            "commit": {"seconds": 1.0, "share": commit_share},
        },
    }


def test_three_runs_report_the_median_and_the_lowest_and_highest() -> None:
    c = runs.contender([router(40_000, 25), router(50_000, 20), router(30_000, 30)])
    assert c["runs"] == 3
    assert c["events_per_second"] == 40_000 and c["spread"]["events_per_second"] == [30_000, 50_000]
    assert c["cpu_seconds_per_million"] == 25 and c["spread"]["cpu_seconds_per_million"] == [20, 30]
    assert [r["events_per_second"] for r in c["per_run"]] == [40_000, 50_000, 30_000]
    assert c["sanity_ok"]


def test_one_failed_check_in_any_run_fails_the_contender() -> None:
    c = runs.contender([router(40_000, 25), router(50_000, 20, ok=False)])
    assert not c["sanity_ok"] and c["sanity_problems"] == ["processed 1 != valid 2"]
    failed = runs.contender([router(40_000, 25), {"id": "loginpipe-eos", "error": "exited"}])
    assert failed["error"] == "exited"


def test_the_time_breakdown_is_the_median_share_per_phase() -> None:
    c = runs.contender(
        [
            router(1, 1, commit_share=0.1),
            router(2, 1, commit_share=0.3),
            router(3, 1, commit_share=0.2),
        ]
    )
    assert c["phases"]["commit"]["share"] == 0.2
    assert c["phases"]["commit"]["share_spread"] == [0.1, 0.3]


def point(p99: float, *, drained: bool = True, missing: int = 0) -> Any:
    lat = {"samples": 100, "p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99 * 2, "mean_ms": p99 / 2}
    return {
        "offered_rate": 10_000.0,
        "achieved_rate": 10_000.0,
        "seconds": 10.0,
        "events": 1000,
        "valid_events": 800,
        "drained": drained,
        "to_processed": {**lat, "missing": missing},
        "to_redis": {**lat, "missing": 0},
        "cpu_percent": {"consumer": 30.0, "aggregator": 10.0},
        "rss_bytes": {"consumer": 1, "aggregator": 2},
    }


def test_a_load_point_run_three_times_reports_median_percentiles_and_any_loss() -> None:
    p = runs.latency_point([point(20), point(90), point(25, missing=3)])
    assert p["to_redis"]["p99_ms"] == 25 and p["to_redis"]["p99_ms_spread"] == [20, 90]
    assert p["to_processed"]["missing"] == 3  # a loss in any run shows
    assert p["to_processed"]["samples"] == 300


def test_the_table_shows_the_range_the_broker_bound_phase_and_the_relay_floor() -> None:
    c = runs.contender([router(40_000, 25), router(50_000, 20), router(30_000, 30)])
    bb = runs.contender([router(20_000, 30), router(22_000, 31), router(21_000, 29)])
    result = {
        "config": {
            "mode": "full",
            "events": 1_000_000,
            "seed": 42,
            "partitions": 6,
            "runs": 3,
            "sample_events": 100_000,
            "latency_seconds": 10,
        },
        "machine": {
            "cpu_model": "cpu",
            "cores": 2,
            "memory_bytes": 2**34,
            "kernel": "6",
            "python": "3.11",
            "kafka": "4.3.1",
            "redis": "7",
        },
        "contenders": [c],
        "ratios": [],
        "broker_bound": {"broker_cpus": 0.1, "events": 100_000, "contenders": [bb]},
        "latency": [
            {"delivery": "exactly_once", "points": [runs.latency_point([point(20)] * 3)]},
            {"delivery": "at_least_once", "points": [runs.latency_point([point(30)] * 3)]},
            {"delivery": "floor", "points": [runs.latency_point([point(20)] * 3)]},
        ],
    }
    text = report.render(result)
    assert "relay floor" in text
    assert "loginpipe at least once ÷ the relay floor" in text and "1.50\u00d7" in text
    assert "median of 3 runs" in text
    assert "30.0k-50.0k" in text
    assert "Broker-bound: the broker confined to 0.1 CPU" in text and "20.0k-22.0k" in text
    assert "Where the consumer's time goes" in text
    skipped = {**result, "broker_bound": {"broker_cpus": 0.1, "events": 1, "skipped": "not root"}}
    assert "skipped: not root" in report.render(skipped)


def hop_point(p99: float) -> Any:
    """A Kafka-hop load point as ``bench.latency`` writes it: only the read-back is measured."""
    none = {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    p = point(p99)
    return {
        **p,
        "to_consumer_output": {**none, "missing": 0},
        "to_redis": {**none, "missing": 0},
        "cpu_percent": {},
        "rss_bytes": {},
    }


def test_the_kafka_hop_rows_show_the_read_back_and_no_redis_figures() -> None:
    hop = runs.latency_point([hop_point(12), hop_point(30), hop_point(15)])
    assert hop["to_processed"]["p99_ms"] == 15 and hop["to_processed"]["p99_ms_spread"] == [12, 30]
    assert hop["to_redis"]["p99_ms"] is None and hop["to_redis"]["p99_ms_spread"] is None
    text = report.render(
        {
            "config": {"mode": "quick", "events": 1, "seed": 42, "partitions": 6, "runs": 3,
                       "latency_seconds": 3},
            "machine": {"cpu_model": "cpu", "cores": 2, "memory_bytes": 2**34, "kernel": "6",
                        "python": "3.11", "kafka": "4.3.1", "redis": "7"},
            "contenders": [],
            "ratios": [],
            "latency": [
                {"delivery": "at_least_once", "points": [runs.latency_point([point(30)] * 3)]},
                {"delivery": "hop", "points": [hop]},
            ],
        }
    )  # fmt: skip
    row = next(line for line in text.splitlines() if line.startswith("| Kafka hop"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # consumer out p50, p99 | read back p50, p99, max | Redis p50, p99, range, max
    assert cells[3:5] == ["-", "-"] and cells[5:8] == ["7.5", "15", "30"]
    assert cells[8:10] == ["-", "-"] and cells[11] == "-"
    assert "INCOMPLETE" not in row
    assert "the pipeline makes two such hops before Redis. p99: 10,000/s 15 ms" in text


def test_the_hop_matches_good_input_events_and_passes_over_the_bad_ones() -> None:
    from bench.latency import _match_key

    good = b'{"user_id": "user-000001", "ip": "10.0.0.1", "device_type": "ios"}'
    assert _match_key(good, strict=False) == ("user-000001", "10.0.0.1")
    for bad in (b"", b"\xff\xfe not json", b"[1, 2]", b'{"user_id": 7, "ip": "10.0.0.1"}',
                b'{"ip": "10.0.0.1"}', None):  # fmt: skip
        assert _match_key(bad, strict=False) is None
    with pytest.raises(orjson.JSONDecodeError):  # a processed record must be JSON: a bug else
        _match_key(b"not json", strict=True)


def test_a_run_without_a_breakdown_leaves_the_breakdown_to_the_runs_that_have_one() -> None:
    bare = {k: v for k, v in router(45_000, 22).items() if k != "phases"}
    c = runs.contender([bare, router(40_000, 25, commit_share=0.2), bare])
    assert c["phases"]["commit"]["share"] == 0.2  # not the median of 0.2 and two zeros
    assert c["phases"]["commit"]["share_spread"] == [0.2, 0.2]
