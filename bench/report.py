"""The table printed at the end, and the ratios of loginpipe to each peer."""

from __future__ import annotations

from typing import Any

from bench.progress import mib

DELIVERY = {
    "exactly_once": "exactly once",
    "at_least_once": "at least once",
    "auto_commit": "auto-commit",
    "none": "consume only",
    "floor": "relay floor",
    "hop": "Kafka hop, no pipeline",
}
TIMES = "\u00d7"  # the multiplication sign
OURS = {"exactly_once": "loginpipe-eos", "at_least_once": "loginpipe-alo"}


def ratios(contenders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """loginpipe ÷ each other contender, for each of our delivery modes measured.

    ``events_per_second``: above 1, loginpipe routes faster; ``cpu_seconds_per_million`` and
    ``peak_rss_bytes``: below 1, loginpipe uses less.
    """
    by_id = {c["id"]: c for c in contenders if "error" not in c}
    out = []
    for ours_id in OURS.values():
        ours = by_id.get(ours_id)
        if ours is None:
            continue
        for peer in by_id.values():
            if peer["id"] in OURS.values():
                continue
            out.append(
                {
                    "ours": ours_id,
                    "peer": peer["id"],
                    **{
                        k: _div(ours.get(k), peer.get(k))
                        for k in ("events_per_second", "cpu_seconds_per_million", "peak_rss_bytes")
                    },
                }
            )
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}{TIMES}" if x < 10 else f"{x:.1f}{TIMES}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def _ms_range(spread: list[float] | None) -> str:
    return "" if not spread else f"{_ms(spread[0])}-{_ms(spread[1])}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return [fmt(header), sep, *[fmt(r) for r in rows]]


def _rate_range(c: dict[str, Any]) -> str:
    """The lowest-highest events/s of a contender's runs ("" for one run)."""
    spread = (c.get("spread") or {}).get("events_per_second")
    if not spread:
        return ""
    lo, hi = spread
    return f"{lo / 1000:,.1f}k-{hi / 1000:,.1f}k"


PHASE_ORDER = ("consume", "validate", "produce", "begin", "send_offsets", "flush", "commit")


def _breakdown(title: str, contenders: list[dict[str, Any]]) -> list[str]:
    names = [p for p in PHASE_ORDER if any(p in c["phases"] for c in contenders)]
    rows = []
    for c in contenders:
        ph = c["phases"]
        cells = [f"{ph[p]['share'] * 100:.0f}%" if p in ph else "" for p in names]
        rows.append([c["label"], DELIVERY.get(c["delivery"], c["delivery"]), *cells])
    return [
        title,
        "",
        *_table(["contender", "delivery", *names], rows, set(range(2, 2 + len(names)))),
        "",
    ]


def _broker_bound(bb: dict[str, Any]) -> list[str]:
    title = (
        f"Broker-bound: the broker confined to {bb['broker_cpus']:g} CPU, our consumer on the "
        f"first {bb['events']:,} events"
    )
    if "skipped" in bb:
        return [title, f"skipped: {bb['skipped']}", ""]
    rows = []
    for c in bb["contenders"]:
        if "error" in c:
            rows.append([c["label"], DELIVERY[c["delivery"]], "FAILED", "", "", ""])
            continue
        rows.append(
            [
                c["label"],
                DELIVERY[c["delivery"]],
                _num(c["events_per_second"]),
                _rate_range(c),
                _num(c["cpu_seconds_per_million"], 1),
                "ok" if c["sanity_ok"] else "MISMATCH",
            ]
        )
    out = [
        title,
        "",
        *_table(
            ["contender", "delivery", "events/s", "range", "CPU s / M events", "output check"],
            rows,
            {2, 3, 4},
        ),
        "",
    ]
    with_phases = [c for c in bb["contenders"] if c.get("phases")]
    if with_phases:
        out += _breakdown("Where its time goes, broker-bound", with_phases)
    return out


def render(report: dict[str, Any]) -> str:
    cfg = report["config"]
    m = report["machine"]
    lines = [
        f"loginpipe benchmark ({cfg['mode']} mode): {cfg['events']:,} events, a fifth bad, "
        f"seed {cfg['seed']}, {cfg['partitions']} partitions",
        f"{m['cpu_model']}, {m['cores']} cores, {(m['memory_bytes'] or 0) / 2**30:.0f} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, Kafka {m['kafka']} and Redis {m['redis']} "
        "on the same machine",
        "",
    ]
    contenders = report["contenders"]
    if contenders:
        by_id = {c["id"]: c for c in contenders}
        rat = {(r["ours"], r["peer"]): r for r in report["ratios"]}
        versions = report.get("peer_versions") or {}
        rows = []
        for c in contenders:
            label = c["label"]
            if c["id"].startswith("quix") and "quixstreams" in versions:
                label += f" {versions['quixstreams']}"
            if c["id"] == "naive" and "kafka-python" in versions:
                label = f"naive (kafka-python {versions['kafka-python']})"
            if "error" in c:
                rows.append(
                    [
                        label,
                        DELIVERY.get(c["delivery"], c["delivery"]),
                        "FAILED",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            pair = [rat.get((o, c["id"])) for o in ("loginpipe-eos", "loginpipe-alo")]
            if any(pair):
                speed = " / ".join(_ratio(p["events_per_second"]) if p else "-" for p in pair)
                cpu = " / ".join(_ratio(p["cpu_seconds_per_million"]) if p else "-" for p in pair)
            else:
                speed = cpu = ""
            rows.append(
                [
                    label,
                    DELIVERY.get(c["delivery"], c["delivery"]),
                    _num(c["events_per_second"]),
                    _rate_range(c),
                    _num(c["cpu_seconds_per_million"], 1),
                    mib(c["peak_rss_bytes"]),
                    "ok" if c["sanity_ok"] else "MISMATCH",
                    speed,
                    cpu,
                ]
            )
        n_runs = cfg.get("runs", 1)
        sample = cfg.get("sample_events")
        lines += [
            "Consumer throughput: validate and route the pre-filled topic, one process each",
            "(events/s from the first to the last output record; CPU inside that span; peak RSS "
            "of the process;",
            (
                f" median of {n_runs} runs, range = lowest-highest;"
                if n_runs > 1
                else " one run (--runs N: median and range);"
            )
            + (f" the naive baseline reads the first {sample:,} events;" if sample else ""),
            " last two columns: loginpipe exactly-once ÷ this / loginpipe at-least-once ÷ this)",
            "",
            *_table(
                [
                    "contender",
                    "delivery",
                    "events/s",
                    "range",
                    "CPU s / M events",
                    "peak RSS",
                    "output check",
                    "loginpipe ÷ this: events/s",
                    "CPU / event",
                ],
                rows,
                {2, 3, 4, 5, 7, 8},
            ),
            "",
        ]
        breakdown = [c for c in contenders if c.get("phases")]
        if breakdown:
            lines += _breakdown(
                "Where the consumer's time goes (share of its main loop's wall time, "
                "loginpipe_consumer_seconds_total)",
                breakdown,
            )
        del by_id
    agg = report.get("aggregator")
    if agg:
        lines += ["Aggregator throughput: count the pre-filled processed topic into Redis", ""]
        row = (
            [agg["label"], "FAILED", "", "", ""]
            if "error" in agg
            else [
                agg["label"],
                _num(agg["events_per_second"]),
                _num(agg["cpu_seconds_per_million"], 1),
                mib(agg["peak_rss_bytes"]),
                "ok" if agg["sanity_ok"] else "MISMATCH",
            ]
        )
        lines += [
            *_table(
                ["contender", "events/s", "CPU s / M events", "peak RSS", "Redis check"],
                [row],
                {1, 2, 3},
            ),
            "",
        ]
    bb = report.get("broker_bound")
    if bb:
        lines += _broker_bound(bb)
    lat = report.get("latency") or []
    if lat:
        rows = []
        for mode in lat:
            d = DELIVERY[mode["delivery"]]
            if not mode["points"] and "error" in mode:
                rows.append([d, "FAILED", "", "", "", "", "", "", "", "", "", ""])
            for p in mode["points"]:
                pp, pr = p["to_processed"], p["to_redis"]
                po = p.get("to_consumer_output") or {}
                ok = p["drained"] and not pp["missing"] and not pr["missing"]
                rows.append(
                    [
                        d,
                        _num(p["offered_rate"]),
                        _num(p["achieved_rate"]),
                        _ms(po.get("p50_ms")),
                        _ms(po.get("p99_ms")),
                        _ms(pp["p50_ms"]),
                        _ms(pp["p99_ms"]),
                        _ms(pp["max_ms"]),
                        _ms(pr["p50_ms"]),
                        _ms(pr["p99_ms"]),
                        _ms_range(pr.get("p99_ms_spread")),
                        _ms(pr["max_ms"]),
                    ]
                    + ([] if ok else ["INCOMPLETE"])
                )
        width = max(len(r) for r in rows)
        header = [
            "delivery",
            "offered/s",
            "achieved/s",
            "consumer out p50 ms",
            "p99",
            "processed p50 ms",
            "p99",
            "max",
            "Redis p50 ms",
            "p99",
            "p99 range",
            "max",
        ]
        header += [""] * (width - len(header))
        rows = [r + [""] * (width - len(r)) for r in rows]
        lines += [
            "End-to-end latency from the generator's produce, consumer and aggregator live",
            f"({cfg['latency_seconds']:g} s per load point"
            + (
                f"; median of {cfg.get('runs', 1)} runs, range = lowest-highest)"
                if cfg.get("runs", 1) > 1
                else ")"
            ),
            "",
            *_table(header, rows, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}),
            "",
            *_floor_ratios(lat),
            *_hop_line(lat),
        ]
    return "\n".join(lines)


def _hop_line(lat: list[dict[str, Any]]) -> list[str]:
    """What the "Kafka hop" rows are, with their p99 per point."""
    hop = next((m for m in lat if m["delivery"] == "hop"), None)
    if not hop or not hop["points"]:
        return []
    parts = [
        f"{_num(p['offered_rate'])}/s {_ms(p['to_processed']['p99_ms'])} ms" for p in hop["points"]
    ]
    return [
        "Kafka hop, no pipeline: the load generator's own topic read back by the same observer "
        '(its columns under "processed"); the pipeline makes two such hops before Redis. '
        "p99: " + ", ".join(parts),
        "",
    ]


def _floor_ratios(lat: list[dict[str, Any]]) -> list[str]:
    """At least once's p99 to Redis ÷ the relay floor's, at each load point both measured."""
    by_mode = {m["delivery"]: {p["offered_rate"]: p for p in m["points"]} for m in lat}
    alo, floor = by_mode.get("at_least_once", {}), by_mode.get("floor", {})
    parts = []
    for offered in sorted(set(alo) & set(floor)):
        ours, base = alo[offered]["to_redis"]["p99_ms"], floor[offered]["to_redis"]["p99_ms"]
        if ours is not None and base:
            parts.append(f"{_num(offered)}/s {ours / base:.2f}{TIMES}")
    if not parts:
        return []
    return [
        "p99 to Redis, loginpipe at least once ÷ the relay floor (the same rules with nothing "
        "else, bench/peers/relay_floor.py): " + ", ".join(parts),
        "",
    ]
