"""``python -m bench.ab --base REV``: this checkout beside another revision, interleaved, in
one run (``make bench-ab BASE=REV``).

A change is judged against the code it replaces, on the same machine in the same hour: one
run is noise on a 2-core box shared with the broker (the p99 to Redis at 10k/s of one
revision ranged 41-92 ms over six runs in one hour). So this runs, round after round and each
round in another order, for this checkout and for ``REV``: the consumer on a pre-filled input
in both delivery modes (events/s, CPU seconds per million, as ``bench.throughput`` measures
them) and the at-least-once latency point (``bench.latency``); the relay floor's latency too.
It prints the median and range of each figure and the ratios. ``REV``'s ``services/`` is
exported with ``git archive`` into ``.bench/trees/<commit>`` and run on this checkout's venv
(its Python dependencies).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

from bench import latency, runs, throughput
from bench.cli import connect
from bench.cli import parse_args as bench_args
from bench.context import ROOT, Ctx
from bench.procs import Proc
from bench.progress import Progress

TREES = ROOT / ".bench" / "trees"
LOGS = ROOT / ".bench" / "ab-logs"
HEAD, FLOOR = "this checkout", "relay floor"
LATENCY = {  # the figure, and where a load point keeps it
    "p99 to Redis, ms": ("to_redis", "p99_ms"),
    "p50 to Redis, ms": ("to_redis", "p50_ms"),
    "p99 first hop, ms": ("to_consumer_output", "p99_ms"),
}
THROUGHPUT = {  # the figure, and where a contender's result keeps it, per mode
    "events/s": "events_per_second",
    "CPU s per million": "cpu_seconds_per_million",
}
MODES = {True: "exactly once", False: "at least once"}


def rotation(names: list[str], k: int) -> list[str]:
    """Round ``k``'s order: each variant goes first in turn, so none always follows another."""
    i = k % len(names)
    return names[i:] + names[:i]


def summary(rounds: dict[str, list[dict[str, float | None]]]) -> dict[str, dict[str, Any]]:
    """Per variant and figure (in the order first seen): the median of the rounds, the range."""
    figures = list(dict.fromkeys(f for rows in rounds.values() for r in rows for f in r))
    out: dict[str, dict[str, Any]] = {}
    for name, rows in rounds.items():
        out[name] = {}
        for fig in figures:
            xs = [x for r in rows if (x := r.get(fig)) is not None]
            out[name][fig] = (
                {"median": runs.median(xs), "range": runs.spread(xs), "runs": len(xs)}
                if xs
                else None
            )
    return out


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"


def render(summ: dict[str, dict[str, Any]], base: str) -> str:
    """A figure per line, a variant per column (median and range), then the ratios."""
    names = list(summ)
    figures = list(dict.fromkeys(f for figs in summ.values() for f in figs))
    width = max([len(f) for f in figures] + [6]) + 2
    lines = [f"{'':<{width}}" + "".join(f"{n:>26}" for n in names)]
    for fig in figures:
        cells = []
        for n in names:
            f = summ[n].get(fig)
            lo, hi = f["range"] if f else (0.0, 0.0)
            cells.append("-" if f is None else f"{_num(f['median'])} ({_num(lo)}-{_num(hi)})")
        lines.append(f"{fig:<{width}}" + "".join(f"{c:>26}" for c in cells))
    lines.append("")
    for fig in figures:
        med = {n: f["median"] for n in names if (f := summ[n].get(fig))}
        pairs = (
            [(HEAD, base), (HEAD, FLOOR), (base, FLOOR)] if "to Redis" in fig else [(HEAD, base)]
        )
        for x, y in pairs:
            if x in med and y in med and med[y] > 0:
                lines.append(f"{fig}: {x} ÷ {y} = {med[x] / med[y]:.2f}")
    return "\n".join(lines)


def export(rev: str) -> tuple[str, Path]:
    """``rev``'s ``services/`` as a folder (cached by commit)."""
    commit = subprocess.run(  # noqa: S603 - git on this checkout, the revision as one argument
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = TREES / commit
    if not (tree / "services" / "loginpipe" / "__init__.py").exists():
        archive = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "services/loginpipe"],  # noqa: S607
            check=True,
            capture_output=True,
        ).stdout
        part = tree.with_suffix(".part")
        shutil.rmtree(part, ignore_errors=True)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(part, filter="data")
        shutil.rmtree(tree, ignore_errors=True)
        part.rename(tree)
    return commit, tree / "services"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the revision to compare with (e.g. main~1)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, each variant once (6)")
    ap.add_argument("--rate", type=float, default=10000.0, help="offered events/s (10000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per point (20)")
    ap.add_argument("--no-floor", action="store_true", help="leave the relay floor out")
    ap.add_argument(
        "--events",
        type=int,
        default=300_000,
        help="events of the consumer's pre-filled input in each round, both modes (300,000; "
        "0: latency only)",
    )
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka (127.0.0.1:9092)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis")
    ap.add_argument("--out", default=str(ROOT / ".bench" / "ab.json"), help="JSON output")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.rate <= 0 or a.seconds <= 0 or a.events < 0:
        ap.error("--rounds, --rate and --seconds must be positive, --events at least 0")
    return a


def _latency(point: dict[str, Any]) -> dict[str, float | None]:
    return {fig: point[where][key] for fig, (where, key) in LATENCY.items()}


def _throughput(result: dict[str, Any], eos: bool) -> dict[str, float | None]:
    return {f"{MODES[eos]}, {fig}": result.get(key) for fig, key in THROUGHPUT.items()}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        commit, base_services = export(a.base)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(f"bench.ab: cannot export {a.base!r}: {exc.stderr!s}\n")
        return 2
    base = f"base {commit[:9]}"
    cfg = bench_args(
        [
            *("--only", "latency", "--bootstrap", a.bootstrap, "--redis-url", a.redis_url),
            *("--latency-rates", f"{a.rate:g}", "--latency-seconds", f"{a.seconds:g}"),
        ]
    )
    cfg = replace(cfg, out=Path(a.out), events=a.events)
    clients = connect(cfg, "bench.ab")
    if clients is None:
        return 3
    kafka, r = clients
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    ctx = Ctx(cfg=cfg, progress=Progress(), kafka=kafka, redis=r, logdir=LOGS)
    variants: dict[str, Path | None] = {HEAD: None, base: base_services}
    if not a.no_floor:
        variants[FLOOR] = None
    rounds: dict[str, list[dict[str, float | None]]] = {n: [] for n in variants}
    failures: list[str] = []
    started = time.time()
    input_topic = ""
    try:
        if a.events:
            input_topic, truth = throughput.prefill(ctx, a.events)
            kafka.topics.remove(input_topic)  # kept across the rounds, deleted at the end
        for k in range(a.rounds):
            for name in rotation(list(variants), k):
                ctx.run = uuid.uuid4().hex[:8]  # fresh topics and groups for every run
                ctx.logdir = LOGS / f"round{k + 1}-{name.replace(' ', '-')}"
                ctx.logdir.mkdir(parents=True, exist_ok=True)
                ctx.progress.line(f"[ab] round {k + 1} of {a.rounds}: {name}")
                row: dict[str, float | None] = {}
                if a.events and name != FLOOR:
                    for eos in (True, False):
                        res = throughput.loginpipe_router(
                            ctx, input_topic, truth, eos, k, services=variants[name]
                        )
                        if "error" in res or not res.get("sanity_ok"):
                            problems = res.get("error") or res.get("sanity_problems")
                            failures.append(f"round {k + 1} {name} {MODES[eos]}: {problems}")
                        else:
                            row.update(_throughput(res, eos))
                if name == FLOOR:
                    res = latency.run_mode(ctx, latency.FLOOR, [a.rate])
                else:
                    res = latency.run_mode(ctx, "at_least_once", [a.rate], variants[name])
                try:
                    kafka.cleanup()
                    ctx.cleanup_redis()
                except Exception as exc:  # cleanup is best effort: note it, go on
                    ctx.progress.line(f"[ab] cleanup incomplete: {exc}")
                points = res.get("points") or []
                if "error" in res or not points or not points[0]["drained"]:
                    failures.append(f"round {k + 1} {name}: {res.get('error', 'incomplete')}")
                else:
                    row.update(_latency(points[0]))
                rounds[name].append(row)
    except KeyboardInterrupt:
        failures.append("interrupted")
    except Exception as exc:  # what ran so far is still reported
        ctx.progress.line(f"[ab] FAILED: {exc!r}")
        failures.append(f"error: {exc!r}")
    finally:
        Proc.stop_all()
        if input_topic:
            kafka.topics.append(input_topic)
        kafka.cleanup()
        ctx.cleanup_redis()
    summ = summary(rounds)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps(
            {
                "base": commit,
                "rate": a.rate,
                "seconds": a.seconds,
                "events": a.events,
                "rounds": rounds,
                "summary": summ,
                "failures": failures,
                "duration_seconds": time.time() - started,
            },
            indent=2,
        )
        + "\n"
    )
    sys.stdout.write(
        f"\n{a.rounds} rounds: the consumer on {a.events:,} pre-filled events in each mode; "
        f"at least once's latency at {a.rate:g}/s for {a.seconds:g} s (median, range):\n"
        + render(summ, base)
        + "\n"
    )
    if failures:
        sys.stdout.write("FAILED:\n" + "".join(f"  - {f}\n" for f in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
