"""Several runs of a figure: the median, and the spread (lowest and highest) beside it.

One run is noise on a 2-core machine shared with the broker; ``--runs N`` repeats every
throughput phase (interleaved: all contenders once, then again) and every load point, and
reports the median with the range. With one run the figures are that run's.
"""

from __future__ import annotations

import statistics
from typing import Any

CONTENDER_FIGURES = ("events_per_second", "cpu_seconds_per_million", "peak_rss_bytes")
LATENCY_FIGURES = ("p50_ms", "p99_ms", "max_ms", "mean_ms")


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: list[float]) -> list[float] | None:
    return [min(xs), max(xs)] if xs else None


def contender(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs as one result: the median run's details, the median figures."""
    failed = [r for r in results if "error" in r]
    if failed or len(results) == 1:
        return {**(failed or results)[0], "runs": len(results)}
    by_rate = sorted(results, key=lambda r: r["events_per_second"] or 0.0)
    out = dict(by_rate[(len(by_rate) - 1) // 2])  # the median run (lower middle if even)
    out["runs"] = len(results)
    out["per_run"] = [{k: r.get(k) for k in (*CONTENDER_FIGURES, "span_seconds")} for r in results]
    out["spread"] = {}
    for k in CONTENDER_FIGURES:
        xs = [r[k] for r in results if r.get(k) is not None]
        out[k] = median(xs)
        out["spread"][k] = spread(xs)
    problems = [p for r in results for p in r.get("sanity_problems", [])]
    out["sanity_ok"] = all(r.get("sanity_ok") for r in results)
    out["sanity_problems"] = problems
    if any("phases" in r for r in results):
        names = {k for r in results for k in r.get("phases", {})}
        out["phases"] = {}
        for k in sorted(names):
            shares = [r["phases"][k]["share"] for r in results if k in r.get("phases", {})]
            secs = [r["phases"][k]["seconds"] for r in results if k in r.get("phases", {})]
            out["phases"][k] = {
                "seconds": median(secs),
                "share": median(shares),
                "share_spread": spread(shares),
            }
    return out


# Where a load point's latency is taken: the consumer's output, the processed topic, Redis.
WHERES = ("to_consumer_output", "to_processed", "to_redis")


def latency_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """One load point's runs as one: median percentiles, their spread, worst completeness."""
    if len(points) == 1:
        return {**points[0], "runs": 1}
    out = dict(points[0])
    out["runs"] = len(points)
    out["achieved_rate"] = median([p["achieved_rate"] for p in points])
    out["drained"] = all(p["drained"] for p in points)
    for where in WHERES:
        if where not in points[0]:  # figures written before it was measured
            continue
        merged: dict[str, Any] = {
            "samples": sum(p[where]["samples"] for p in points),
            "missing": sum(p[where]["missing"] for p in points),
        }
        for k in LATENCY_FIGURES:
            xs = [p[where][k] for p in points if p[where][k] is not None]
            merged[k] = median(xs)
            merged[f"{k}_spread"] = spread(xs)
        out[where] = merged
    out["per_run"] = [
        {w: {k: p[w][k] for k in ("p50_ms", "p99_ms")} for w in WHERES if w in p} for p in points
    ]
    for key in ("cpu_percent", "rss_bytes"):
        names = points[0].get(key, {})
        out[key] = {n: median([p[key][n] for p in points if n in p.get(key, {})]) for n in names}
    return out
