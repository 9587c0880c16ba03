"""The run's configuration and the resources every phase shares."""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.kafka_util import Kafka
from bench.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"  # the peers' own programs
PY = sys.executable  # the project's venv: loginpipe and its pins
START_TIME = 1_764_000_000  # first event timestamp of every generated set (reproducible)
BAD_SHARE = 0.2

CONTENDERS = (
    "kafka-perf",
    "bare-confluent",
    "loginpipe-eos",
    "loginpipe-alo",
    "quix-eos",
    "quix-alo",
    "naive",
)
PHASES = (*CONTENDERS, "aggregator", "latency", "broker-bound")
# The naive baseline routes 1-3k events/s, and the broker-bound phase 10-30k: they read a
# sample, the first events of the same sequence (a stable rate in about a minute, where the
# naive one took 11 minutes of a 1M-event run).
SAMPLE_EVENTS = 100_000
QUICK_SAMPLE_EVENTS = 20_000


@dataclass(frozen=True)
class Config:
    quick: bool
    events: int
    seed: int
    partitions: int
    bootstrap: str
    redis_url: str
    latency_rates: tuple[str, ...]  # events/s, or "50%" of the mode's measured maximum
    latency_seconds: float
    phases: tuple[str, ...]
    out: Path
    runs: int = 1  # repetitions of every throughput phase and load point (median, spread)
    sample_events: int = SAMPLE_EVENTS  # the naive baseline's and broker-bound phase's input
    broker_cpus: float = 0.1  # the broker-bound phase: the broker's share of one CPU

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "quick" if self.quick else "full",
            "events": self.events,
            "bad_share": BAD_SHARE,
            "seed": self.seed,
            "partitions": self.partitions,
            "generator_start_time": START_TIME,
            "latency_rates": list(self.latency_rates),
            "latency_seconds": self.latency_seconds,
            "phases": list(self.phases),
            "runs": self.runs,
            "sample_events": self.sample_events,
            "broker_cpus": self.broker_cpus,
            "bootstrap": self.bootstrap,
            "redis_url": self.redis_url,
        }


@dataclass
class Ctx:
    cfg: Config
    progress: Progress
    kafka: Kafka
    redis: redis.Redis
    logdir: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    redis_keys: list[str] = field(default_factory=list)
    peer_python: Path | None = None

    def name(self, what: str) -> str:
        """A topic, group or transactional id unique to this run."""
        return f"bench-{self.run}-{what}"

    def redis_prefix(self, what: str) -> str:
        prefix = f"bench:{self.run}:{what}:"
        self.redis_keys.append(prefix)
        return prefix

    def loginpipe_env(self, **settings: str) -> dict[str, str]:
        """The environment of a loginpipe service: ours only, metrics off, quiet logs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGINPIPE_")}
        env.update(
            {
                "LOGINPIPE_KAFKA_BOOTSTRAP": self.cfg.bootstrap,
                "LOGINPIPE_REDIS_URL": self.cfg.redis_url,
                "LOGINPIPE_METRICS_PORT": "0",
                "LOGINPIPE_LOG_LEVEL": "WARNING",
                "LOGINPIPE_AGGREGATOR_LOG_INTERVAL_SECONDS": "0",
            }
        )
        env.update({f"LOGINPIPE_{k.upper()}": v for k, v in settings.items()})
        return env

    def cleanup_redis(self) -> None:
        for prefix in self.redis_keys:
            keys = list(self.redis.scan_iter(match=prefix + "*", count=1000))
            if keys:
                self.redis.delete(*keys)
        self.redis_keys = []


def with_services(services: Path, env: dict[str, str]) -> str:
    """``env``'s PYTHONPATH with ``services`` first: loginpipe imported from there, before the
    venv's editable install of this checkout and before any folder the caller put there."""
    return os.pathsep.join(p for p in (str(services), env.get("PYTHONPATH")) if p)


def wait_until(pred: Any, timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())
