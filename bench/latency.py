"""End-to-end latency at fixed offered loads, with the consumer and the aggregator live.

Per delivery mode: fresh topics, one loginpipe consumer and one aggregator, an observer in
this process, then for each load point a load generator process (``bench.loadgen``) that
produces generator events at the rate and records each event's produce time.

- To the processed topic: the observer reads it with ``read_committed`` (as any downstream
  reader would) and stamps each record with the wall time it was handed over. An event's
  latency is that time minus its produce time; events are matched by ``(user_id, ip)``,
  which the consumer forwards unchanged and which is unique within a run.
- To the consumer's output (where the time goes): the processed record's own timestamp is
  the wall time of the consumer's ``produce`` call (CreateTime, in milliseconds); minus the
  event's produce time, it is the first hop (load generator, broker, consumer); the rest of
  "to the processed topic" is the second (the consumer's producer, broker, commit, reader).
- To Redis: the observer polls the stored total every 2 ms and keeps each change. The k-th
  valid event of a load point has reached Redis when the total first reaches the count
  before the point plus k; its latency is that time minus its produce time (counts carry no
  identity, so this is exact only in order; it is the latency of "the k-th count").

The Kafka hop (``run_hop``) is the same load generator and the same observer with no pipeline
at all: the observer reads the input topic itself. What one hop through this broker costs on
this machine at each rate, the least of the pipeline's two hops.

Two warm-up runs (excluded) precede the points: a short one at a low rate that proves the
pipeline works end to end, then a few seconds at the highest load point's rate. The first
seconds at a high rate are slow on fresh topics and processes (measured at 10k/s: p99 to
Redis 48-127 ms in the first run after a 1 s warm-up at 1k/s, 23-37 ms once warm), and a
measured run must not be the one that pays for it. Each point is drained before the next.
"""

from __future__ import annotations

import array
import bisect
import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import loadgen, runs
from bench.context import PEERS, PY, ROOT, Ctx, wait_until, with_services
from bench.procs import Proc
from bench.progress import mib, rate

REDIS_POLL = 0.002
WARMUP_RATE, WARMUP_SECONDS = 1000.0, 1.0
WARMUP_TOP_SECONDS = 5.0  # at the highest load point's rate, capped at a point's length


class Observer:
    """Reads the processed topic and polls the Redis total, in two threads (no Redis thread
    when ``counts_key`` is None: the Kafka hop)."""

    def __init__(self, ctx: Ctx, topic: str, counts_key: str | None) -> None:
        self.ctx = ctx
        self.topic = topic
        self.counts_key = counts_key
        self.received_t: list[float] = []
        self.received_v: list[bytes] = []
        self.received_ct: list[float] = []  # the record's CreateTime: the consumer's produce
        self.redis_t: list[float] = []
        self.redis_n: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, name="observe-kafka", daemon=True)]
        if counts_key is not None:
            self._threads.append(
                threading.Thread(target=self._poll_redis, name="observe-redis", daemon=True)
            )
        self.errors: list[str] = []

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    @property
    def redis_total(self) -> int:
        return self.redis_n[-1] if self.redis_n else 0

    def _read(self) -> None:
        cfg = self.ctx.cfg
        c = Consumer(
            {
                "bootstrap.servers": cfg.bootstrap,
                "group.id": f"bench-observer-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "fetch.queue.backoff.ms": 10,
            }
        )
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(cfg.partitions)])
        try:
            while not self._stop.is_set():
                m = c.poll(0.1)
                if m is None:
                    continue
                now = time.time()  # handed over now: m and whatever is queued behind it
                for x in [m, *c.consume(10_000, 0)]:
                    if x.error() is None:
                        self.received_t.append(now)
                        self.received_v.append(x.value())  # type: ignore[arg-type]
                        self.received_ct.append(x.timestamp()[1] / 1000.0)
        except Exception as exc:
            self.errors.append(f"observer (Kafka): {exc!r}")
        finally:
            c.close()

    def _poll_redis(self) -> None:
        assert self.counts_key is not None
        r = redis.Redis.from_url(self.ctx.cfg.redis_url)
        last = -1
        try:
            while not self._stop.is_set():
                vals = r.hmget(self.counts_key, ["android", "ios"])
                now = time.time()
                total = sum(int(v) for v in vals if v is not None)
                if total != last:
                    self.redis_t.append(now)
                    self.redis_n.append(total)
                    last = total
                time.sleep(REDIS_POLL)
        except Exception as exc:
            self.errors.append(f"observer (Redis): {exc!r}")


def _percentiles(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    s = sorted(xs)

    def rank(q: float) -> float:  # nearest rank
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))] * 1000.0

    return {
        "samples": len(s),
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "max_ms": s[-1] * 1000.0,
        "mean_ms": sum(s) / len(s) * 1000.0,
    }


def _run_loader(
    ctx: Ctx, tag: str, topic: str, offered: float, seconds: float, seed: int, obs: Observer
) -> tuple[dict[str, Any], list[float]]:
    times_path = ctx.logdir / (re.sub(r"[^A-Za-z0-9._-]+", "-", tag) + ".times")
    argv = [
        PY,
        "-m",
        "bench.loadgen",
        "--bootstrap",
        ctx.cfg.bootstrap,
        "--topic",
        topic,
        "--rate",
        f"{offered:g}",
        "--seconds",
        f"{seconds:g}",
        "--seed",
        str(seed),
        "--times",
        str(times_path),
    ]
    proc = Proc(tag, argv, logdir=ctx.logdir, cwd=ROOT)
    began = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - began > seconds * 3 + 120:
            proc.stop()
            raise RuntimeError(f"load generator {tag} did not finish")
        ctx.progress.update(
            f"[{tag}] {len(obs.received_t):,} processed records seen, Redis total "
            f"{obs.redis_total:,}  {time.monotonic() - began:.0f}s"
        )
        time.sleep(0.25)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator {tag} failed:\n{proc.log_tail()}")
    summary = json.loads(proc.stdout().strip().splitlines()[-1])
    times = array.array("d")
    with open(times_path, "rb") as f:
        times.fromfile(f, summary["produced"])
    return summary, list(times)


def _expected(seed: int, n: int) -> list[tuple[str, str] | None]:
    """Per event of a load run: its match key if it is valid, else None."""
    f = loadgen.factory(seed)
    out: list[tuple[str, str] | None] = []
    for _ in range(n):
        ev = f.next()
        if ev.expected_reason is None:
            obj = orjson.loads(ev.value)
            out.append((obj["user_id"], obj["ip"]))
        else:
            out.append(None)
    return out


def _point(
    ctx: Ctx,
    *,
    tag: str,
    topic: str,
    offered: float,
    seconds: float,
    seed: int,
    obs: Observer,
    procs: dict[str, Proc],
    hop: bool = False,
) -> dict[str, Any]:
    """One load point. ``hop``: no pipeline, the observer reads the input topic itself (every
    event, the bad ones too, and the load generator's warm-up record); only "to the processed
    topic" is measured, and it is the hop."""
    seen_before = len(obs.received_t)
    base = obs.redis_total
    cpu0 = {k: p.cpu_now for k, p in procs.items()}
    t0 = time.time()
    summary, times = _run_loader(ctx, tag, topic, offered, seconds, seed, obs)
    t1 = time.time()
    cpu1 = {k: p.cpu_now for k, p in procs.items()}
    expected = _expected(seed, summary["produced"])
    n_valid = sum(1 for e in expected if e is not None)
    if hop:
        # Every record the loader wrote: its warm-up record and all its events.
        wanted = seen_before + loadgen.WARM_UP_RECORDS + summary["produced"]
        drained = wait_until(lambda: len(obs.received_t) >= wanted, timeout=60.0, every=0.05)
    else:
        drained = wait_until(
            lambda: (
                obs.redis_total >= base + n_valid and len(obs.received_t) >= seen_before + n_valid
            ),
            timeout=60.0,
            every=0.05,
        )
    # To the processed topic.
    arrival: dict[tuple[str, str], float] = {}
    output: dict[tuple[str, str], float] = {}
    for i in range(seen_before, len(obs.received_t)):
        key = _match_key(obs.received_v[i], strict=not hop)
        if key is None:
            continue
        arrival.setdefault(key, obs.received_t[i])
        output.setdefault(key, obs.received_ct[i])
    to_output: list[float] = []
    to_processed: list[float] = []
    to_redis: list[float] = []
    missing_processed = missing_redis = 0
    k = 0
    rt, rn = obs.redis_t, obs.redis_n
    for e, t_produced in zip(expected, times, strict=True):
        if e is None:
            continue
        k += 1
        t = arrival.get(e)
        if t is None:
            missing_processed += 1
        else:
            to_processed.append(t - t_produced)
            if not hop:  # on the input topic, CreateTime is the load generator's own
                to_output.append(output[e] - t_produced)
        if hop:
            continue
        j = bisect.bisect_left(rn, base + k)
        if j >= len(rn):
            missing_redis += 1
        else:
            to_redis.append(rt[j] - t_produced)
    result = {
        "offered_rate": offered,
        "achieved_rate": summary["achieved_rate"],
        "seconds": seconds,
        "events": summary["produced"],
        "valid_events": n_valid,
        "drained": drained,
        "to_consumer_output": {
            **_percentiles(to_output),
            "missing": 0 if hop else missing_processed,
        },
        "to_processed": {**_percentiles(to_processed), "missing": missing_processed},
        "to_redis": {**_percentiles(to_redis), "missing": missing_redis},
        "cpu_percent": {name: (cpu1[name] - cpu0[name]) / (t1 - t0) * 100.0 for name in procs},
        "rss_bytes": {name: p.rss for name, p in procs.items()},
    }
    pp, pr = result["to_processed"], result["to_redis"]
    po = result["to_consumer_output"]
    complete = drained and not missing_processed and not missing_redis
    if hop:
        ctx.progress.line(
            f"[{tag}] offered {rate(offered)} (achieved {rate(summary['achieved_rate'])}): "
            f"read back p50 {_ms(pp['p50_ms'])} p99 {_ms(pp['p99_ms'])} max {_ms(pp['max_ms'])}"
            + ("" if complete else "  (INCOMPLETE)")
        )
        return result
    ctx.progress.line(
        f"[{tag}] offered {rate(offered)} (achieved {rate(summary['achieved_rate'])}): "
        f"consumer output p50 {_ms(po['p50_ms'])} p99 {_ms(po['p99_ms'])}; "
        f"processed p50 {_ms(pp['p50_ms'])} p99 {_ms(pp['p99_ms'])} max {_ms(pp['max_ms'])}; "
        f"Redis p50 {_ms(pr['p50_ms'])} p99 {_ms(pr['p99_ms'])} max {_ms(pr['max_ms'])}"
        + ("" if complete else "  (INCOMPLETE)")
    )
    return result


def _match_key(value: bytes | None, *, strict: bool) -> tuple[str, str] | None:
    """An event's ``(user_id, ip)``. ``strict``: the value must be a processed record (a
    bug otherwise); else None for what is not a JSON object with both (a bad input event)."""
    if strict:
        obj = orjson.loads(value)  # type: ignore[arg-type]
        return (obj["user_id"], obj["ip"])
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    uid, ip = obj.get("user_id"), obj.get("ip")
    if not isinstance(uid, str) or not isinstance(ip, str):
        return None
    return (uid, ip)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} ms" if x >= 10 else f"{x:.1f} ms"


def _measure(
    ctx: Ctx,
    short: str,
    topic: str,
    rates: list[float],
    seed: int,
    obs: Observer,
    procs: dict[str, Proc],
    hop: bool = False,
) -> list[dict[str, Any]]:
    """Every load point, ``ctx.cfg.runs`` times each, as one point per rate. Repetitions are
    interleaved (every rate once, then again), so a slow spell of the machine does not fall
    on one rate only."""
    runs_n = ctx.cfg.runs
    measured: list[list[dict[str, Any]]] = [[] for _ in rates]
    for run in range(runs_n):
        for i, offered in enumerate(rates):
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited (code {p.returncode}):\n{p.log_tail()}")
            suffix = f" run {run + 1}/{runs_n}" if runs_n > 1 else ""
            measured[i].append(
                _point(
                    ctx,
                    tag=f"latency {short} {rate(offered)}{suffix}",
                    topic=topic,
                    offered=offered,
                    seconds=ctx.cfg.latency_seconds,
                    seed=seed + run * len(rates) + i + 1,
                    obs=obs,
                    procs=procs,
                    hop=hop,
                )
            )
    return [runs.latency_point(m) for m in measured]


FLOOR = "floor"  # the relay floor (bench/peers/relay_floor.py), beside at least once
HOP = "hop"  # one Kafka hop, no pipeline: the observer reads the input topic


def _seed(seed: int, delivery: str) -> int:
    """The first seed of a mode's load points. Everything but exactly once (the floor, the
    hop) gets at least once's seeds: the same events at each point."""
    return seed * 1000 + (1 if delivery == "exactly_once" else 2) * 100


def run_mode(
    ctx: Ctx, delivery: str, rates: list[float], services: Path | None = None
) -> dict[str, Any]:
    """Every load point of one delivery mode (or of the relay floor), on its own topics and
    services. ``services``: run loginpipe from that folder (another revision's
    ``services/``, see ``bench.ab``) instead of this checkout's."""
    short = {"exactly_once": "eos", "at_least_once": "alo", FLOOR: FLOOR}[delivery]
    cfg = ctx.cfg
    topic_in = ctx.name(f"lat-{short}-user-login")
    topic_ok = ctx.name(f"lat-{short}-processed")
    topic_err = ctx.name(f"lat-{short}-errors")
    ctx.kafka.create_topics([topic_in, topic_ok, topic_err])
    prefix = ctx.redis_prefix(f"lat-{short}")
    consumer_group = ctx.kafka.group(ctx.name(f"lat-{short}-consumer"))
    aggregator_group = ctx.kafka.group(ctx.name(f"lat-{short}-aggregator"))
    if delivery == FLOOR:
        floor = [PY, str(PEERS / "relay_floor.py")]
        common = ["--bootstrap", cfg.bootstrap, "--processed", topic_ok]
        argv = {
            "consumer": [
                *floor, "relay", *common, "--input", topic_in, "--errors", topic_err,
                "--group", consumer_group,
            ],
            "aggregator": [
                *floor, "count", *common, "--group", aggregator_group,
                "--redis-url", cfg.redis_url, "--key", prefix + "device_counts",
            ],
        }  # fmt: skip
        env = ctx.loginpipe_env()
    else:
        argv = {
            "consumer": [PY, "-m", "loginpipe", "consume"],
            "aggregator": [PY, "-m", "loginpipe", "aggregate"],
        }
        env = ctx.loginpipe_env(
            topic_input=topic_in,
            topic_processed=topic_ok,
            topic_errors=topic_err,
            consumer_group=consumer_group,
            aggregator_group=aggregator_group,
            consumer_transactional_id=ctx.name(f"lat-{short}-txn"),
            consumer_delivery=delivery,
            redis_key_prefix=prefix,
        )
    if services is not None:
        env["PYTHONPATH"] = with_services(services, env)
    procs = {
        role: Proc(f"lat-{short}-{role}", args, logdir=ctx.logdir, env=env, cwd=ROOT)
        for role, args in argv.items()
    }
    obs = Observer(ctx, topic_ok, prefix + "device_counts")
    obs.start()
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the observer threads stamp times: keep GIL waits short
    points: list[dict[str, Any]] = []
    out: dict[str, Any] = {"delivery": delivery, "points": points}
    seed = _seed(cfg.seed, delivery)
    try:
        # Both warm-ups must drain: a backlog left behind would fall on the first point.
        top = max(rates, default=WARMUP_RATE)
        warm_ups = [
            ("warm-up", WARMUP_RATE, WARMUP_SECONDS),
            (f"warm-up at {rate(top)}", top, min(WARMUP_TOP_SECONDS, cfg.latency_seconds)),
        ]
        for k, (tag, offered, seconds) in enumerate(warm_ups):
            warm = _point(
                ctx,
                tag=f"latency {short} {tag}",
                topic=topic_in,
                offered=offered,
                seconds=seconds,
                seed=seed + 99 * k,
                obs=obs,
                procs=procs,
            )
            if not warm["drained"]:
                raise RuntimeError(f"the {tag} events did not reach Redis within 60 s")
        points.extend(_measure(ctx, short, topic_in, rates, seed, obs, procs))
    except Exception as exc:
        out["error"] = str(exc)
        ctx.progress.line(f"[latency {short}] FAILED: {exc}")
    finally:
        sys.setswitchinterval(old_switch)
        for p in procs.values():
            p.stop()
        obs.stop()
    out["peak_rss_bytes"] = {k: p.peak_rss_bytes for k, p in procs.items()}
    if obs.errors:
        out.setdefault("error", "; ".join(obs.errors))
    ctx.progress.line(
        f"[latency {short}] consumer peak RSS {mib(procs['consumer'].peak_rss_bytes)}, "
        f"aggregator {mib(procs['aggregator'].peak_rss_bytes)}"
    )
    return out


def run_hop(ctx: Ctx, rates: list[float]) -> dict[str, Any]:
    """The load points with no pipeline: the load generator writes a fresh topic and the
    observer reads that topic itself. What one hop through the broker costs on this machine,
    with the same producer, reader and observer as every other mode; the pipeline has two.
    At least once's seeds, so the same events at each point."""
    cfg = ctx.cfg
    topic = ctx.name("lat-hop-user-login")
    ctx.kafka.create_topics([topic])
    obs = Observer(ctx, topic, None)
    obs.start()
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as in run_mode: the observer thread stamps times
    points: list[dict[str, Any]] = []
    out: dict[str, Any] = {"delivery": HOP, "points": points}
    seed = _seed(cfg.seed, HOP)
    try:
        warm = _point(
            ctx,
            tag="latency hop warm-up",
            topic=topic,
            offered=WARMUP_RATE,
            seconds=WARMUP_SECONDS,
            seed=seed,
            obs=obs,
            procs={},
            hop=True,
        )
        if not warm["drained"]:
            raise RuntimeError("the warm-up events were not read back within 60 s")
        points.extend(_measure(ctx, "hop", topic, rates, seed, obs, {}, hop=True))
    except Exception as exc:
        out["error"] = str(exc)
        ctx.progress.line(f"[latency hop] FAILED: {exc}")
    finally:
        sys.setswitchinterval(old_switch)
        obs.stop()
    if obs.errors:
        out.setdefault("error", "; ".join(obs.errors))
    return out
