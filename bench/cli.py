"""``python -m bench``: run the benchmark, print the table, write ``.bench/latest.json``."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaException

from bench import latency, machine, peervenv, report, runs, throughput
from bench.context import (
    CONTENDERS,
    PHASES,
    QUICK_SAMPLE_EVENTS,
    ROOT,
    SAMPLE_EVENTS,
    Config,
    Ctx,
)
from bench.kafka_util import Kafka
from bench.procs import Proc
from bench.progress import Progress

SCHEMA_VERSION = 1
PEER_PHASES = {"quix-eos", "quix-alo", "naive"}
LOGS = ROOT / ".bench" / "logs"


def parse_args(argv: list[str] | None) -> Config:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, cost and latency of loginpipe beside its peers, on the local "
        "Kafka broker and Redis (make infra-up).",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="100,000 events and one short latency point per mode (a few minutes, for CI)",
    )
    ap.add_argument("--events", type=int, help="events in the pre-filled topic (1,000,000)")
    ap.add_argument("--seed", type=int, default=42, help="generator seed (42)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of every topic (6)")
    ap.add_argument(
        "--latency-rates",
        help="load points, events/s or a share of the measured maximum: 1000,10000,50%% "
        "(quick: 1000)",
    )
    ap.add_argument("--latency-seconds", type=float, help="seconds per load point (10; quick 3)")
    ap.add_argument(
        "--only",
        help=f"comma-separated phases to run, of: {', '.join(PHASES)} (default: all)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repetitions of every throughput phase and load point; the table shows the median "
        "and the range (1)",
    )
    ap.add_argument(
        "--sample-events",
        type=int,
        help="events of the smaller input the naive baseline and the broker-bound phase read "
        f"(the first of the same sequence; {SAMPLE_EVENTS:,}, quick {QUICK_SAMPLE_EVENTS:,})",
    )
    ap.add_argument(
        "--broker-cpus",
        type=float,
        default=0.1,
        help="the broker-bound phase: the local broker's share of one CPU (0.1)",
    )
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka (127.0.0.1:9092)")
    ap.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis (redis://127.0.0.1:6379/0)"
    )
    ap.add_argument("--out", default=".bench/latest.json", help="JSON output (.bench/latest.json)")
    a = ap.parse_args(argv)
    phases = tuple(PHASES)
    if a.only:
        wanted = [p.strip() for p in a.only.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in PHASES]
        if unknown:
            ap.error(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(PHASES)}")
        phases = tuple(p for p in PHASES if p in wanted)
    rates = a.latency_rates or ("1000" if a.quick else "1000,10000,50%")
    parsed_rates = tuple(r.strip() for r in rates.split(",") if r.strip())
    for r in parsed_rates:
        try:
            float(r.removesuffix("%"))
        except ValueError:
            ap.error(f"--latency-rates: {r!r} is neither events/s nor a percentage")
    events = a.events or (100_000 if a.quick else 1_000_000)
    if events < 1000:
        ap.error("--events must be at least 1000")
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if not 0.01 <= a.broker_cpus <= 64:
        ap.error("--broker-cpus must be between 0.01 and 64")
    sample = a.sample_events or (QUICK_SAMPLE_EVENTS if a.quick else SAMPLE_EVENTS)
    if sample < 1000:
        ap.error("--sample-events must be at least 1000")
    out = Path(a.out)
    return Config(
        quick=a.quick,
        events=events,
        seed=a.seed,
        partitions=a.partitions,
        bootstrap=a.bootstrap,
        redis_url=a.redis_url,
        latency_rates=parsed_rates,
        latency_seconds=a.latency_seconds or (3.0 if a.quick else 10.0),
        phases=phases,
        out=out if out.is_absolute() else ROOT / out,
        runs=a.runs,
        sample_events=min(sample, events),
        broker_cpus=a.broker_cpus,
    )


def _contender(
    ctx: Ctx,
    cid: str,
    input_topic: str,
    truth: dict[str, Any],
    sample: tuple[str, dict[str, Any]] | None,
    attempt: int,
) -> dict[str, Any]:
    if cid == "kafka-perf":
        return throughput.kafka_consumer_perf(ctx, input_topic, attempt)
    if cid == "bare-confluent":
        return throughput.bare_confluent(ctx, input_topic, attempt)
    if cid.startswith("loginpipe-"):
        return throughput.loginpipe_router(ctx, input_topic, truth, cid.endswith("eos"), attempt)
    if cid.startswith("quix-"):
        return throughput.quix_router(ctx, input_topic, truth, cid.endswith("eos"), attempt)
    assert sample is not None
    return throughput.naive_router(ctx, *sample, attempt)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def connect(cfg: Config, prog: str = "bench") -> tuple[Kafka, redis.Redis] | None:
    """Kafka and Redis, each checked; None (and what to do, on stderr) if one is away."""
    kafka = Kafka(cfg.bootstrap, cfg.partitions)
    try:
        kafka.check()
    except KafkaException as exc:
        sys.stderr.write(
            f"{prog}: cannot reach Kafka at {cfg.bootstrap} ({exc}); start it with "
            "`make infra-up` or pass --bootstrap\n"
        )
        return None
    r = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        r.ping()
    except redis.RedisError as exc:
        sys.stderr.write(
            f"{prog}: cannot reach Redis at {cfg.redis_url} ({exc}); start it with "
            "`make infra-up` or pass --redis-url\n"
        )
        return None
    return kafka, r


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    progress = Progress()
    clients = connect(cfg)
    if clients is None:
        return 3
    kafka, r = clients

    logs = LOGS  # the benchmark's own folder, whatever --out says: it is emptied first
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    ctx = Ctx(cfg=cfg, progress=progress, kafka=kafka, redis=r, logdir=logs)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also where the shell started us with it ignored

    started = time.time()
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "machine": machine.info(r),
        "config": cfg.as_dict(),
        "peer_versions": None,
        "ground_truth": None,
        "contenders": [],
        "aggregator": None,
        "latency": [],
        "broker_bound": None,
        "ratios": [],
    }
    progress.line(
        f"bench: {'quick' if cfg.quick else 'full'} mode, {cfg.events:,} events, run "
        f"{ctx.run}, logs in {logs.relative_to(ROOT)}"
    )
    failed: list[str] = []
    try:
        if PEER_PHASES & set(cfg.phases):
            ctx.peer_python = peervenv.ensure(progress)
            result["peer_versions"] = peervenv.versions(ctx.peer_python)
        contenders = [c for c in CONTENDERS if c in cfg.phases]
        sample: tuple[str, dict[str, Any]] | None = None
        if "naive" in cfg.phases or "broker-bound" in cfg.phases:
            sample = throughput.prefill(ctx, cfg.sample_events, "sample-user-login")
            result["sample_ground_truth"] = sample[1]
        if contenders:
            input_topic, truth = throughput.prefill(ctx)
            result["ground_truth"] = truth
            measured: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            for attempt in range(cfg.runs):  # interleaved: every contender, then again
                if cfg.runs > 1:
                    progress.line(f"[throughput] run {attempt + 1} of {cfg.runs}")
                for cid in contenders:
                    measured[cid].append(_contender(ctx, cid, input_topic, truth, sample, attempt))
            result["contenders"] = [runs.contender(measured[c]) for c in contenders]
        if "aggregator" in cfg.phases:
            result["aggregator"] = throughput.aggregator(ctx)
        if "latency" in cfg.phases:
            by_id = {c["id"]: c for c in result["contenders"]}
            floor_rates: list[float] = []
            for delivery, cid in report.OURS.items():
                rates = []
                for spec in cfg.latency_rates:
                    if spec.endswith("%"):
                        top = by_id.get(cid, {}).get("events_per_second")
                        if top is None:
                            progress.line(f"[latency] {spec} of {cid}: not measured, skipped")
                            continue
                        rates.append(round(top * float(spec[:-1]) / 100.0))
                    else:
                        rates.append(float(spec))
                result["latency"].append(latency.run_mode(ctx, delivery, rates))
                if delivery == "at_least_once":
                    floor_rates = rates
            # The relay floor at at-least-once's points: what any Python pipeline pays here.
            result["latency"].append(latency.run_mode(ctx, latency.FLOOR, floor_rates))
            # One Kafka hop at the same points, no pipeline: what the broker and this machine
            # cost before any of the pipeline's code runs.
            result["latency"].append(latency.run_hop(ctx, floor_rates))
        if "broker-bound" in cfg.phases:
            assert sample is not None
            result["broker_bound"] = throughput.broker_bound(ctx, *sample)
    except KeyboardInterrupt:
        progress.line("bench: interrupted; stopping the processes and deleting the topics")
        failed.append("interrupted")
    except Exception as exc:
        progress.line(f"bench: FAILED: {exc!r}")
        (logs / "bench-error.txt").write_text(traceback.format_exc())
        failed.append(f"error: {exc!r}")
    finally:
        Proc.stop_all()
        progress.update("bench: deleting this run's topics, groups and Redis keys ...")
        try:
            kafka.cleanup()
            ctx.cleanup_redis()
        except Exception as exc:
            progress.line(f"bench: cleanup incomplete: {exc}")
    if failed:
        return 130 if failed == ["interrupted"] else 1

    result["ratios"] = report.ratios(result["contenders"])
    result["duration_seconds"] = time.time() - started
    for c in [*result["contenders"], result["aggregator"] or {}]:
        if "error" in c:
            failed.append(f"{c['id']}: {c['error'].splitlines()[0]}")
        elif c and not c["sanity_ok"]:
            failed.append(f"{c['id']}: {'; '.join(c['sanity_problems'])}")
    bb = result["broker_bound"] or {}
    for c in bb.get("contenders", []):
        if "error" in c:
            failed.append(f"broker-bound {c['id']}: {c['error'].splitlines()[0]}")
        elif not c["sanity_ok"]:
            failed.append(f"broker-bound {c['id']}: {'; '.join(c['sanity_problems'])}")
    for mode in result["latency"]:
        if "error" in mode:
            failed.append(f"latency {mode['delivery']}: {mode['error'].splitlines()[0]}")
        for p in mode["points"]:
            if not p["drained"] or p["to_processed"]["missing"] or p["to_redis"]["missing"]:
                failed.append(f"latency {mode['delivery']} {p['offered_rate']:g}/s incomplete")
    result["failures"] = failed
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    tmp.replace(cfg.out)
    progress.line("")
    sys.stdout.write(report.render(result) + "\n")
    where = cfg.out.relative_to(ROOT) if cfg.out.is_relative_to(ROOT) else cfg.out
    sys.stdout.write(f"figures written to {where} in {result['duration_seconds']:.0f} s\n")
    if failed:
        sys.stdout.write("FAILED:\n" + "".join(f"  - {f}\n" for f in failed))
        return 1
    return 0
