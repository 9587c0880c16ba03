"""Throughput phases: every contender, in its own process, on the same pre-filled topic.

A router (loginpipe's consumer, Quix Streams, the naive baseline) writes to its own output
topics, stamped with the broker's append time; its rate is the input events over the span
from its first to its last output record, its CPU cost the CPU time it used inside that
span. It is stopped once its group's committed offsets reach the end of the input, and its
outputs are then read back and checked against the generator's ground truth.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bench import broker_limit, runs
from bench.context import BAD_SHARE, PEERS, PY, ROOT, START_TIME, Ctx, with_services
from bench.kafka_util import (
    HEADER_DEVICE_TYPE,
    HEADER_REASON,
    LOG_APPEND_TIME,
    all_log_append,
    as_plain,
    read_topics,
    span_ms,
)
from bench.procs import Proc
from bench.progress import mib, rate
from loginpipe.events import EventFactory
from loginpipe.validation import Valid, validate


def stored_counts(raw: Any) -> dict[str, int]:
    """The device counts of a counts hash; the aggregator's position fields left out."""
    from loginpipe.redis_store import POSITION_PREFIX

    return {
        k.decode(): int(v) for k, v in raw.items() if not k.decode().startswith(POSITION_PREFIX)
    }


def phase_timeout(events: int) -> float:
    """Long enough for the slowest contender (the naive one) at a few thousand events/s."""
    return 120.0 + events / 1000.0


# ---- input ---------------------------------------------------------------------------------
def prefill(ctx: Ctx, count: int | None = None, what: str = "user-login") -> tuple[str, Any]:
    """An input topic: N generator events (a fifth bad) from the fixed seed.

    Every contender reads the shared one of N events; the naive baseline its own sample, the
    first ``count`` events of the same sequence.
    """
    cfg = ctx.cfg
    events = cfg.events if count is None else count
    topic = ctx.name(what)
    ctx.kafka.create_topics([topic])
    env = ctx.loginpipe_env(
        topic_input=topic,
        topic_processed=ctx.name("unused-processed"),
        topic_errors=ctx.name("unused-errors"),
    )
    argv = [
        PY,
        "-m",
        "loginpipe",
        "generate",
        "--count",
        str(events),
        "--rate",
        "0",
        "--seed",
        str(cfg.seed),
        "--bad-share",
        str(BAD_SHARE),
        "--start-time",
        str(START_TIME),
        "--summary",
    ]
    proc = Proc("prefill-generator", argv, logdir=ctx.logdir, env=env, cwd=ROOT)
    began = time.monotonic()
    deadline = began + phase_timeout(events)
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError("pre-filling the input topic timed out")
        n = sum(max(o, 0) for o in ctx.kafka.end_offsets(topic))
        ctx.progress.update(
            f"[prefill] {n:,}/{events:,} events into {topic}  "
            f"{rate(n / max(time.monotonic() - began, 1e-3))}"
        )
        time.sleep(0.5)
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed (exit {proc.returncode}):\n{proc.log_tail()}")
    truth = json.loads(proc.stdout().strip().splitlines()[-1])
    if truth["delivered"] != events or truth["failed"]:
        raise RuntimeError(f"generator delivered {truth['delivered']} of {events}")
    ctx.progress.line(
        f"[prefill] {events:,} events ({truth['invalid']:,} invalid) in "
        f"{time.monotonic() - began:.1f} s"
    )
    return topic, truth


# ---- routers -------------------------------------------------------------------------------
def _check_outputs(stats: dict[str, Any], ok: str, err: str, truth: dict[str, Any]) -> list[str]:
    problems = []
    if stats[ok].records != truth["valid"]:
        problems.append(f"processed {stats[ok].records:,} != valid {truth['valid']:,}")
    if stats[err].records != truth["invalid"]:
        problems.append(f"errors {stats[err].records:,} != invalid {truth['invalid']:,}")
    if dict(stats[ok].by_header) != truth["valid_by_device"]:
        problems.append(f"device types {dict(stats[ok].by_header)} != {truth['valid_by_device']}")
    if dict(stats[err].by_header) != truth["invalid_by_reason"]:
        problems.append(f"reasons {dict(stats[err].by_header)} != {truth['invalid_by_reason']}")
    return problems


def run_router(
    ctx: Ctx,
    cid: str,
    *,
    label: str,
    delivery: str,
    input_topic: str,
    truth: dict[str, Any],
    group: str,
    ok: str,
    err: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    counts_key: str | None = None,
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """Run one router to the end of the input and measure it.

    With ``metrics_port`` (ours), the consumer's time per phase is read from its metrics when
    its committed offsets first move and when they reach the end: the breakdown of that span.
    """
    n_events = truth["total"]
    result: dict[str, Any] = {"id": cid, "label": label, "kind": "router", "delivery": delivery}
    proc = Proc(cid, argv, logdir=ctx.logdir, env=env, cwd=ROOT)
    began = time.monotonic()
    deadline = began + phase_timeout(n_events)
    moving: float | None = None  # when the committed offsets first moved
    phases_first: dict[str, float] = {}
    phases_last: dict[str, float] = {}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"exited early (code {proc.returncode}):\n{proc.log_tail()}")
            n = ctx.kafka.committed(group, input_topic)
            now = time.monotonic()
            if n and moving is None:
                moving = now
                if metrics_port is not None:
                    phases_first = phase_seconds(metrics_port)
            # Offsets move in steps (a commit every 100 ms for ours, 5 s for Quix and the
            # naive one): show the average since they first moved.
            shown = n / (now - moving) if moving is not None and now > moving + 0.5 else 0.0
            ctx.progress.update(
                f"[{cid}] {n:,}/{n_events:,} routed  {rate(shown)}  "
                f"cpu {proc.cpu_now:.1f}s  rss {mib(proc.rss)}  {now - began:.0f}s"
            )
            if n >= n_events:
                if metrics_port is not None:
                    phases_last = phase_seconds(metrics_port)
                break
            if now > deadline:
                raise RuntimeError(f"not done after {now - began:.0f} s ({n:,} committed)")
            time.sleep(0.2)
    except Exception as exc:
        proc.stop()
        result["error"] = str(exc)
        ctx.progress.line(f"[{cid}] FAILED: {exc}")
        return result
    rc = proc.stop()
    ctx.progress.update(f"[{cid}] reading its outputs back ...")
    stats = read_topics(
        ctx.cfg.bootstrap, {ok: HEADER_DEVICE_TYPE, err: HEADER_REASON}, ctx.cfg.partitions
    )
    first, last = span_ms(stats)
    span = (last - first) / 1000.0
    cpu = proc.cpu_between(first / 1000.0, last / 1000.0)
    ctx.kafka.delete([ok, err])  # read back: free the disk for the next run
    problems = _check_outputs(stats, ok, err, truth)
    if not all_log_append(stats):
        problems.append("output records are not stamped with LogAppendTime")
    if rc not in (0, -15):
        problems.append(f"exit code {rc} on SIGTERM")
    if counts_key is not None:
        raw = ctx.redis.hgetall(counts_key)
        counts = stored_counts(raw)
        result["redis_counts"] = counts
        if counts != truth["valid_by_device"]:
            problems.append(f"Redis counts {counts} != {truth['valid_by_device']}")
    spent = {k: v - phases_first.get(k, 0.0) for k, v in phases_last.items()}
    total = sum(spent.values())
    # No span to break down when the offsets first moved at the end: at least once commits
    # every second, so on a short input its first commit can be its last. Such a run has
    # no breakdown (it showed as 0% everywhere); the table takes the runs that have one.
    if total > 0:
        result["phases"] = {k: {"seconds": v, "share": v / total} for k, v in spent.items()}
    result.update(
        {
            "events": n_events,
            "events_per_second": n_events / span if span > 0 else None,
            "span_seconds": span,
            "cpu_seconds": cpu,
            "cpu_seconds_per_million": cpu / n_events * 1e6,
            "cpu_seconds_process_total": proc.cpu_total,
            "peak_rss_bytes": proc.peak_rss_bytes,
            "outputs": as_plain(stats),
            "sanity_ok": not problems,
            "sanity_problems": problems,
        }
    )
    ctx.progress.line(_summary(result))
    return result


def _summary(r: dict[str, Any]) -> str:
    if not r.get("sanity_ok", True):
        ok = "CHECK FAILED: " + "; ".join(r["sanity_problems"])
    elif r["kind"] == "ceiling":
        ok = f"read {r['events']:,} records"
    elif r["kind"] == "aggregator":
        ok = "Redis counts match the ground truth"
    else:
        ok = "outputs match the ground truth"
    return (
        f"[{r['id']}] {rate(r['events_per_second'] or 0)}  "
        f"{r['cpu_seconds_per_million']:.1f} CPU s/M events  peak RSS "
        f"{mib(r['peak_rss_bytes'])}  ({ok})"
    )


PHASE_METRIC = "loginpipe_consumer_seconds_total"


def phase_seconds(port: int) -> dict[str, float]:
    """The consumer's seconds per phase so far, from its /metrics ({} if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == PHASE_METRIC:
                out[sample.labels["phase"]] = sample.value
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _names(ctx: Ctx, tag: str, attempt: int) -> tuple[str, str, str]:
    """A run's output topics and group: its own for every repetition."""
    base = f"{tag}-{attempt}"
    return ctx.name(f"{base}-processed"), ctx.name(f"{base}-errors"), ctx.name(base)


def loginpipe_router(
    ctx: Ctx,
    input_topic: str,
    truth: dict[str, Any],
    eos: bool,
    attempt: int = 0,
    *,
    cid: str | None = None,
    label: str = "loginpipe",
    settings: dict[str, str] | None = None,
    services: Path | None = None,
) -> dict[str, Any]:
    """Our consumer on the pre-filled input; ``services``: run loginpipe from that folder
    (another revision's ``services/``, see ``bench.ab``) instead of this checkout's."""
    tag = cid or ("loginpipe-eos" if eos else "loginpipe-alo")
    ok, err, group = _names(ctx, tag, attempt)
    ctx.kafka.create_topics([ok, err], LOG_APPEND_TIME)
    ctx.kafka.group(group)
    env = ctx.loginpipe_env(
        topic_input=input_topic,
        topic_processed=ok,
        topic_errors=err,
        consumer_group=group,
        consumer_transactional_id=ctx.name(f"{tag}-{attempt}-txn"),
        consumer_delivery="exactly_once" if eos else "at_least_once",
        metrics_host="127.0.0.1",
        metrics_port=str(port := free_port()),
        **(settings or {}),
    )
    if services is not None:
        env["PYTHONPATH"] = with_services(services, env)
    return run_router(
        ctx,
        tag,
        label=label,
        delivery="exactly_once" if eos else "at_least_once",
        input_topic=input_topic,
        truth=truth,
        group=group,
        ok=ok,
        err=err,
        argv=[PY, "-m", "loginpipe", "consume"],
        env=env,
        metrics_port=port,
    )


def quix_router(
    ctx: Ctx, input_topic: str, truth: dict[str, Any], eos: bool, attempt: int = 0
) -> dict[str, Any]:
    assert ctx.peer_python is not None
    tag = "quix-eos" if eos else "quix-alo"
    ok, err, group = _names(ctx, tag, attempt)
    ctx.kafka.create_topics([ok, err], LOG_APPEND_TIME)
    ctx.kafka.group(group)
    argv = [
        str(ctx.peer_python),
        str(PEERS / "quix_app.py"),
        "--bootstrap",
        ctx.cfg.bootstrap,
        "--input",
        input_topic,
        "--processed",
        ok,
        "--errors",
        err,
        "--group",
        group,
        "--guarantee",
        "exactly-once" if eos else "at-least-once",
        "--state-dir",
        str(ctx.logdir / f"quix-state-{attempt}"),
    ]
    return run_router(
        ctx,
        tag,
        label="Quix Streams",
        delivery="exactly_once" if eos else "at_least_once",
        input_topic=input_topic,
        truth=truth,
        group=group,
        ok=ok,
        err=err,
        argv=argv,
    )


def naive_router(
    ctx: Ctx, input_topic: str, truth: dict[str, Any], attempt: int = 0
) -> dict[str, Any]:
    assert ctx.peer_python is not None
    tag = "naive"
    ok, err, group = _names(ctx, tag, attempt)
    ctx.kafka.create_topics([ok, err], LOG_APPEND_TIME)
    ctx.kafka.group(group)
    counts_key = ctx.redis_prefix(f"{tag}-{attempt}") + "device_counts"
    argv = [
        str(ctx.peer_python),
        str(PEERS / "naive.py"),
        "--bootstrap",
        ctx.cfg.bootstrap,
        "--input",
        input_topic,
        "--processed",
        ok,
        "--errors",
        err,
        "--group",
        group,
        "--redis-url",
        ctx.cfg.redis_url,
        "--counts-key",
        counts_key,
    ]
    return run_router(
        ctx,
        tag,
        label="naive (kafka-python)",
        delivery="auto_commit",
        input_topic=input_topic,
        truth=truth,
        group=group,
        ok=ok,
        err=err,
        argv=argv,
        counts_key=counts_key,
    )


# ---- the broker as the bottleneck ------------------------------------------------------------
# The fixed 100 ms interval of before: the bound equal to the interval, which never grows.
FIXED = {"consumer_commit_interval_ms": "100", "consumer_max_commit_interval_ms": "100"}
BROKER_BOUND: tuple[tuple[str, bool, str, dict[str, str]], ...] = (
    ("bb-loginpipe-eos", True, "paced commit interval (default)", {}),
    ("bb-loginpipe-eos-fixed", True, "fixed 100 ms commit interval", FIXED),
    ("bb-loginpipe-alo", False, "paced commit interval (default)", {}),
    ("bb-loginpipe-alo-fixed", False, "fixed 100 ms commit interval", FIXED),
)


def broker_bound(ctx: Ctx, topic: str, truth: dict[str, Any]) -> dict[str, Any]:
    """Our consumer with the broker confined to a CPU quota: commits are slow.

    Each mode twice, in the same run: as it ships (the commit interval grows while commits
    are slow) and with the interval fixed at 100 ms (as before the pacing), so that the
    pacing's effect is read side by side, on the same machine and the same throttled broker.
    """
    cfg = ctx.cfg
    out: dict[str, Any] = {"broker_cpus": cfg.broker_cpus, "events": truth["total"]}
    measured: dict[str, list[dict[str, Any]]] = {cid: [] for cid, *_ in BROKER_BOUND}
    try:
        with broker_limit.confined(cfg.bootstrap, cfg.broker_cpus, f"loginpipe-bench-{ctx.run}"):
            ctx.progress.line(f"[broker-bound] the broker is confined to {cfg.broker_cpus:g} CPU")
            for attempt in range(cfg.runs):
                for cid, eos, label, settings in BROKER_BOUND:
                    measured[cid].append(
                        loginpipe_router(
                            ctx,
                            topic,
                            truth,
                            eos,
                            attempt,
                            cid=cid,
                            label=f"loginpipe, {label}",
                            settings=settings,
                        )
                    )
    except broker_limit.Unavailable as exc:
        out["skipped"] = str(exc)
        ctx.progress.line(f"[broker-bound] skipped: {exc}")
        return out
    out["contenders"] = [runs.contender(measured[cid]) for cid, *_ in BROKER_BOUND]
    return out


# ---- ceilings ------------------------------------------------------------------------------
def _wait_exit(ctx: Ctx, proc: Proc, cid: str, what: str) -> int | None:
    began = time.monotonic()
    deadline = began + phase_timeout(ctx.cfg.events)
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            proc.stop()
            return None
        ctx.progress.update(
            f"[{cid}] {what}  cpu {proc.cpu_now:.1f}s  rss {mib(proc.rss)}  {now - began:.0f}s"
        )
        time.sleep(0.2)
    return proc.returncode


def kafka_consumer_perf(ctx: Ctx, input_topic: str, attempt: int = 0) -> dict[str, Any]:
    """Kafka's own ConsumerPerformance tool, from the same jars as the broker."""
    cid, n = "kafka-perf", ctx.cfg.events
    group = ctx.kafka.group(ctx.name(f"{cid}-{attempt}"))
    argv = [
        str(ROOT / "hack" / "kafka.sh"),
        "run-class",
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        ctx.cfg.bootstrap,
        "--topic",
        input_topic,
        "--num-records",
        str(n),
        "--group",
        group,
        "--timeout",
        "60000",
    ]
    result: dict[str, Any] = {
        "id": cid,
        "label": "Kafka ConsumerPerformance (Java)",
        "kind": "ceiling",
        "delivery": "none",
    }
    proc = Proc(cid, argv, logdir=ctx.logdir, cwd=ROOT)
    rc = _wait_exit(ctx, proc, cid, f"consuming {n:,} records (JVM)")
    try:
        if rc != 0:
            raise RuntimeError(f"exit code {rc}:\n{proc.log_tail()}")
        fields = parse_consumer_perf(proc.stdout())
        fetch_s = float(fields["fetch.time.ms"]) / 1000.0
        consumed = int(fields["data.consumed.in.nMsg"])
        if consumed < n:
            raise RuntimeError(f"consumed {consumed:,} of {n:,} records")
        end = datetime.strptime(fields["end.time"], "%Y-%m-%d %H:%M:%S:%f").timestamp()
    except Exception as exc:
        result["error"] = str(exc)
        ctx.progress.line(f"[{cid}] FAILED: {exc}")
        return result
    cpu = proc.cpu_between(end - fetch_s, end)
    result.update(
        {
            "events": consumed,
            "events_per_second": float(fields["fetch.nMsg.sec"]),
            "span_seconds": fetch_s,
            "cpu_seconds": cpu,
            "cpu_seconds_per_million": cpu / consumed * 1e6,
            "cpu_seconds_process_total": proc.cpu_total,
            "peak_rss_bytes": proc.peak_rss_bytes,
            "tool_output": fields,
            "sanity_ok": True,
            "sanity_problems": [],
        }
    )
    ctx.progress.line(_summary(result))
    return result


def parse_consumer_perf(out: str) -> dict[str, str]:
    """The header and the figures line of ConsumerPerformance's report."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            names = [x.strip() for x in line.split(",")]
            values = [x.strip() for x in lines[i + 1].split(",")]
            if len(names) == len(values):
                return dict(zip(names, values, strict=True))
    raise ValueError(f"no report in ConsumerPerformance's output: {out[-500:]!r}")


def bare_confluent(ctx: Ctx, input_topic: str, attempt: int = 0) -> dict[str, Any]:
    """A confluent-kafka batch-consume loop that does no work, with the services' settings."""
    cid, n = "bare-confluent", ctx.cfg.events
    group = ctx.kafka.group(ctx.name(f"{cid}-{attempt}"))
    argv = [
        PY,
        str(PEERS / "bare_confluent.py"),
        "--bootstrap",
        ctx.cfg.bootstrap,
        "--topic",
        input_topic,
        "--group",
        group,
        "--records",
        str(n),
    ]
    result: dict[str, Any] = {
        "id": cid,
        "label": "bare confluent-kafka loop (no work)",
        "kind": "ceiling",
        "delivery": "none",
    }
    proc = Proc(cid, argv, logdir=ctx.logdir, cwd=ROOT)
    rc = _wait_exit(ctx, proc, cid, f"consuming {n:,} records")
    try:
        if rc != 0:
            raise RuntimeError(f"exit code {rc}:\n{proc.log_tail()}")
        out = json.loads(proc.stdout().strip().splitlines()[-1])
        span = out["last"] - out["first"]
        if out["records"] < n or span <= 0:
            raise RuntimeError(f"read {out['records']:,} of {n:,} records")
    except Exception as exc:
        result["error"] = str(exc)
        ctx.progress.line(f"[{cid}] FAILED: {exc}")
        return result
    cpu = proc.cpu_between(out["first"], out["last"])
    counted = out["records"] - out["first_batch"]
    result.update(
        {
            "events": out["records"],
            "events_per_second": counted / span,
            "span_seconds": span,
            "cpu_seconds": cpu,
            "cpu_seconds_per_million": cpu / counted * 1e6,
            "cpu_seconds_process_total": proc.cpu_total,
            "peak_rss_bytes": proc.peak_rss_bytes,
            "sanity_ok": True,
            "sanity_problems": [],
        }
    )
    ctx.progress.line(_summary(result))
    return result


# ---- aggregator ----------------------------------------------------------------------------
def prefill_processed(ctx: Ctx, topic: str, n: int, seed: int) -> dict[str, int]:
    """N valid, normalised events with the consumer's device header, as the consumer writes."""
    ctx.kafka.create_topics([topic])
    producer = Producer(
        {
            "bootstrap.servers": ctx.cfg.bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": True,
        }
    )
    factory = EventFactory(seed, bad_share=0.0, users=10_000, start_time=START_TIME)
    counts: Counter[str] = Counter()
    headers: dict[str, list[tuple[str, str | bytes | None]]] = {
        d: [(HEADER_DEVICE_TYPE, d.encode())] for d in ("android", "ios")
    }
    began = time.monotonic()
    for i in range(n):
        ev = factory.next()
        res = validate(ev.value)
        assert isinstance(res, Valid)
        counts[res.device_type] += 1
        while True:
            try:
                producer.produce(topic, res.value, ev.key, headers=headers[res.device_type])
                break
            except BufferError:
                producer.poll(0.05)
        if i % 20_000 == 0:
            producer.poll(0)
            ctx.progress.update(
                f"[prefill] {i:,}/{n:,} processed records into {topic}  "
                f"{rate(i / max(time.monotonic() - began, 1e-3))}"
            )
    if producer.flush(60) != 0:
        raise RuntimeError("pre-filling the processed topic: records undelivered")
    ctx.progress.line(f"[prefill] {n:,} processed records in {time.monotonic() - began:.1f} s")
    return dict(sorted(counts.items()))


def aggregator(ctx: Ctx) -> dict[str, Any]:
    """loginpipe's aggregator counting a pre-filled processed topic of N records into Redis.

    Its rate is taken from Redis itself, polled every 5 ms: the events counted between the
    first poll that sees a count and the poll that sees the total, over the time between.
    """
    cid, n = "aggregator", ctx.cfg.events
    topic = ctx.name("agg-processed")
    truth = prefill_processed(ctx, topic, n, ctx.cfg.seed + 1)
    group = ctx.kafka.group(ctx.name(cid))
    prefix = ctx.redis_prefix(cid)
    counts_key = prefix + "device_counts"
    env = ctx.loginpipe_env(
        topic_input=ctx.name("agg-unused-input"),
        topic_processed=topic,
        topic_errors=ctx.name("agg-unused-errors"),
        aggregator_group=group,
        redis_key_prefix=prefix,
    )
    result: dict[str, Any] = {"id": cid, "label": "loginpipe aggregator", "kind": "aggregator"}
    proc = Proc(cid, [PY, "-m", "loginpipe", "aggregate"], logdir=ctx.logdir, env=env, cwd=ROOT)
    began = time.monotonic()
    deadline = began + phase_timeout(n)
    first: tuple[float, int] | None = None
    last_show = 0.0
    total = 0
    try:
        while True:
            vals = ctx.redis.hmget(counts_key, ["android", "ios"])
            now = time.time()
            total = sum(int(v) for v in vals if v is not None)
            if total and first is None:
                first = (now, total)
            if total >= n:
                break
            if time.monotonic() - last_show > 0.25:
                last_show = time.monotonic()
                if proc.poll() is not None:
                    raise RuntimeError(f"exited early (code {proc.returncode}):\n{proc.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not done after {time.monotonic() - began:.0f} s")
                ctx.progress.update(
                    f"[{cid}] {total:,}/{n:,} counted  cpu {proc.cpu_now:.1f}s  "
                    f"rss {mib(proc.rss)}  {time.monotonic() - began:.0f}s"
                )
            time.sleep(0.005)
    except Exception as exc:
        proc.stop()
        result["error"] = str(exc)
        ctx.progress.line(f"[{cid}] FAILED: {exc}")
        return result
    proc.stop()
    if first is None or first[1] >= n:
        result["error"] = "the count went from 0 to the total between two polls"
        ctx.progress.line(f"[{cid}] FAILED: {result['error']}")
        return result
    raw = ctx.redis.hgetall(counts_key)
    counts = stored_counts(raw)
    span = now - first[0]
    counted = n - first[1]
    cpu = proc.cpu_between(first[0], now)
    problems = [] if counts == truth else [f"Redis counts {counts} != {truth}"]
    result.update(
        {
            "events": n,
            "events_per_second": counted / span if span > 0 else None,
            "span_seconds": span,
            "events_in_span": counted,
            "cpu_seconds": cpu,
            "cpu_seconds_per_million": cpu / counted * 1e6 if counted else None,
            "cpu_seconds_process_total": proc.cpu_total,
            "peak_rss_bytes": proc.peak_rss_bytes,
            "redis_counts": counts,
            "sanity_ok": not problems,
            "sanity_problems": problems,
        }
    )
    ctx.progress.line(_summary(result))
    return result
