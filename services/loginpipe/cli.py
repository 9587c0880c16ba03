"""The ``loginpipe`` command: one subcommand per service, plus tools around them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from loginpipe import __version__
from loginpipe.exceptions import ConfigError, LoginpipeError
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper, serve_http, setup_logging
from loginpipe.settings import (
    AggregatorSettings,
    CommonSettings,
    ConsumerSettings,
    CountsSettings,
    GeneratorSettings,
    ReplaySettings,
    SchemaSettings,
    check_unknown,
    describe,
    load,
    markdown_table,
)

log = logging.getLogger("loginpipe")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_REPEATING_FAILURE = 4


def _service(
    name: str, settings: CommonSettings, body: Callable[[Metrics, Health, Stopper], Any]
) -> Any:
    setup_logging(settings.log_level, settings.log_format)
    log.info("starting %s", name, extra={"version": __version__, "settings": describe(settings)})
    metrics = Metrics(name)
    health = Health(metrics)
    stopper = Stopper()
    stopper.install()
    serve_http(settings.metrics_host, settings.metrics_port, metrics, health)
    return body(metrics, health, stopper)


def cmd_generate(args: argparse.Namespace) -> int:
    from loginpipe.generator import Generator

    s = load(
        GeneratorSettings,
        os.environ,
        rate=args.rate,
        count=args.count,
        bad_share=args.bad_share,
        seed=args.seed,
        start_time=args.start_time,
    )
    summary = _service("generator", s, lambda m, h, st: Generator(s, m, h, st).run())
    if args.summary:
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["failed"] == 0 else 1


def cmd_consume(args: argparse.Namespace) -> int:
    from loginpipe.consumer import Router

    s = load(ConsumerSettings, os.environ, delivery=args.delivery)
    _service("consumer", s, lambda m, h, st: Router(s, m, h, st).run())
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from loginpipe.aggregator import Aggregator

    s = load(AggregatorSettings, os.environ)
    _service("aggregator", s, lambda m, h, st: Aggregator(s, m, h, st).run())
    return 0


def cmd_counts(args: argparse.Namespace) -> int:
    from loginpipe.redis_store import check_redis, read_counts

    s = load(CountsSettings, os.environ)
    counts = read_counts(check_redis(s, args.timeout), s.counts_key)
    if args.json:
        sys.stdout.write(json.dumps(counts, sort_keys=True) + "\n")
    else:
        width = max(len(k) for k in counts)
        for k in sorted(counts):
            sys.stdout.write(f"{k:<{width}}  {counts[k]}\n")
        sys.stdout.write(f"{'total':<{width}}  {sum(counts.values())}\n")
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    """Summarise the error topic over a window: what went wrong, where, and samples."""
    from loginpipe.error_report import ErrorSummary
    from loginpipe.exceptions import ConfigError
    from loginpipe.kafka_io import check_kafka, read_ranges, window_reader

    s = load(ReplaySettings, os.environ)  # the Kafka settings, and the reader group
    setup_logging(s.log_level, "text")
    try:
        since, until, explicit = _window(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    topic = s.topic_errors
    partitions = check_kafka(s, [topic], s.startup_timeout_seconds)[topic]
    summary = ErrorSummary(samples_per_reason=args.samples)
    ranges = _ranges(s, topic, partitions, since, until, explicit)
    consumer = window_reader(s, s.reader_group)
    try:
        total = sum(max(0, end - start) for start, end in ranges.values())
        show = _progress_line(total) if sys.stderr.isatty() and not args.quiet else None
        read_ranges(consumer, topic, ranges, summary.add, progress=show)
        if show is not None:
            sys.stderr.write("\r\033[K")
    finally:
        consumer.close()
    if args.json:
        report = summary.as_dict(args.top)
        report["topic"] = topic
        report["ranges"] = {str(p): list(r) for p, r in sorted(ranges.items())}
        sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    else:
        sys.stdout.write(f"{topic}: " + summary.render(args.top))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Route the chosen error records that today's rules accept, exactly once."""
    from loginpipe.exceptions import ConfigError
    from loginpipe.kafka_io import check_kafka
    from loginpipe.replay import Replayer, check_reasons

    s = load(ReplaySettings, os.environ)
    setup_logging(s.log_level, "text")
    reasons = check_reasons(args.reason or [])
    try:
        since, until, explicit = _window(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    topics = [s.topic_errors, s.topic_processed, s.topic_replayed]
    partitions = check_kafka(s, topics, s.startup_timeout_seconds)[s.topic_errors]
    stopper = Stopper()
    stopper.install()
    replayer = Replayer(s, reasons, args.dry_run, stop=lambda: stopper.stopping)
    try:
        ranges = _ranges(s, s.topic_errors, partitions, since, until, explicit)
        total = sum(max(0, end - start) for start, end in ranges.values())
        show = _progress_line(total) if sys.stderr.isatty() and not args.quiet else None
        outcome = replayer.run(ranges, progress=show)
        if show is not None:
            sys.stderr.write("\r\033[K")
    finally:
        replayer.close()
    report = {"dry_run": args.dry_run, "reasons": sorted(reasons), **outcome.as_dict()}
    if args.json:
        sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    else:
        verb = "would route" if args.dry_run else "routed"
        sys.stdout.write(
            f"{s.topic_errors}: read {outcome.read} error records; {verb} "
            f"{report['replayed']} to {s.topic_processed} {report['replayed_by_device']}; "
            f"{report['still_invalid']} still invalid {report['still_invalid_by_reason']}; "
            f"{outcome.already_replayed} replayed before; {outcome.not_selected} of other "
            f"reasons; {outcome.not_replayable} without their whole original\n"
        )
    return 130 if stopper.stopping else 0


def _window(
    args: argparse.Namespace,
) -> tuple[int | None, int | None, dict[int, tuple[int, int | None]] | None]:
    """--since, --until and --offsets of `errors` and `replay`."""
    from loginpipe.error_report import parse_when

    now_ms = int(time.time() * 1000)
    since = parse_when(args.since, now_ms) if args.since else None
    until = parse_when(args.until, now_ms) if args.until else None
    explicit = parse_offsets(args.offsets) if args.offsets else None
    return since, until, explicit


def _ranges(
    s: ReplaySettings,
    topic: str,
    partitions: int,
    since: int | None,
    until: int | None,
    explicit: dict[int, tuple[int, int | None]] | None,
) -> dict[int, tuple[int, int]]:
    """The offset ranges of a window: explicit ones (within the watermarks), or by time."""
    from loginpipe.exceptions import ConfigError
    from loginpipe.kafka_io import window_ranges, window_reader

    consumer = window_reader(s, s.reader_group)
    try:
        if explicit is None:
            return window_ranges(consumer, topic, range(partitions), since, until, 10.0)
        unknown = sorted(p for p in explicit if p >= partitions)
        if unknown:
            raise ConfigError(f"{topic} has no partition {unknown[0]} (it has {partitions})")
        marks = {p: consumer.get_watermark_offsets(_tp(topic, p), 10.0) for p in explicit}
        return {
            p: (max(start, marks[p][0]), min(marks[p][1] if end is None else end, marks[p][1]))
            for p, (start, end) in explicit.items()
        }
    finally:
        consumer.close()


def parse_offsets(text: str) -> dict[int, tuple[int, int | None]]:
    """``--offsets 0:100-200,3:500-``: partition, first offset, end offset (exclusive, open)."""
    out: dict[int, tuple[int, int | None]] = {}
    for part in text.split(","):
        p, sep, span = part.strip().partition(":")
        start, dash, end = span.partition("-")
        try:
            if not sep or not dash or not start:
                raise ValueError
            key, first, last = int(p), int(start), int(end) if end else None
        except ValueError:
            raise ValueError(
                f"--offsets {part.strip()!r}: give PARTITION:START-END or PARTITION:START- "
                "(END exclusive), comma-separated"
            ) from None
        out[key] = (first, last)
    return out


def _tp(topic: str, partition: int) -> Any:
    from confluent_kafka import TopicPartition

    return TopicPartition(topic, partition)


def _progress_line(total: int) -> Callable[[int], None]:
    """A progress line on the terminal (stderr), at most twice a second."""
    last = [0.0]

    def show(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            sys.stderr.write(f"\rread {done} of about {total} records{share}\033[K")
            sys.stderr.flush()

    return show


def cmd_topics(args: argparse.Namespace) -> int:
    from loginpipe.kafka_io import create_topics

    s = load(ReplaySettings, os.environ)
    setup_logging(s.log_level, "text")
    topics = [s.topic_input, s.topic_processed, s.topic_errors]
    created = create_topics(s, topics, partitions=args.partitions, replication=args.replication)
    # The replay ledger: only the latest record per key matters (loginpipe replay).
    created += create_topics(
        s,
        [s.topic_replayed],
        partitions=args.partitions,
        replication=args.replication,
        config={"cleanup.policy": "compact"},
    )
    for t in [*topics, s.topic_replayed]:
        state = "created" if t in created else "exists"
        sys.stdout.write(f"{t}: {state}\n")
    return 0


def _sleep_then_go_on(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def cmd_schemas(args: argparse.Namespace) -> int:
    from loginpipe import schema_registry, schemas

    s = load(SchemaSettings, os.environ)
    setup_logging(s.log_level, "text")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    if args.action == "list":
        released = schemas.released()
        subjects = schema_registry.subjects(s)
        for name, version in schemas.VERSIONS.items():
            sys.stdout.write(
                f"{name}: v{version} ({schemas.file_name(name)}), released "
                f"v{released[name]['version']}, subject {subjects[name]}\n"
            )
        return 0
    if args.action == "register":
        # A registry still starting (the chart's hook Job runs beside it) is waited for.
        registered = schema_registry.register(
            s, released=args.released, timeout_seconds=s.startup_timeout_seconds,
            wait=_sleep_then_go_on,
        )  # fmt: skip
        for r in registered:
            sys.stdout.write(
                f"{r.name}: {r.subject} version {r.version} (schema id {r.schema_id})\n"
            )
        return 0
    candidates: dict[str, str] = {}
    for spec in args.schema or ():
        name, _, path = spec.partition("=")
        if name not in schemas.VERSIONS or not path:
            raise ConfigError(
                f"--schema {spec!r}: expected NAME=FILE, NAME one of {', '.join(schemas.VERSIONS)}"
            )
        try:
            with open(path, encoding="utf-8") as f:
                candidates[name] = f.read()
            doc = json.loads(candidates[name])
        except OSError as exc:
            raise ConfigError(f"--schema {spec!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--schema {spec!r}: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"--schema {spec!r}: a JSON Schema is an object")
    verdicts = schema_registry.check(s, candidates, released=args.released)
    for v in verdicts:
        sys.stdout.write(v.message() + "\n")
    return 0 if all(v.compatible for v in verdicts) else 1


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(markdown_table() + "\n")
        return 0
    for cls in (GeneratorSettings, ConsumerSettings, AggregatorSettings):
        name = cls.__name__.removesuffix("Settings").lower()
        sys.stdout.write(f"[{name}]\n")
        for k, v in describe(load(cls, os.environ)).items():
            sys.stdout.write(f"  {k}={v}\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Topics, then generator, consumer and aggregator as child processes; live counts."""
    from pathlib import Path

    from loginpipe.exceptions import ConfigError
    from loginpipe.kafka_io import create_topics
    from loginpipe.local_run import PORTS_HINT, check_ports_free, parse_ports, run_pipeline
    from loginpipe.redis_store import check_redis, read_counts

    if "LOGINPIPE_METRICS_PORT" in os.environ:
        raise ConfigError(
            "loginpipe run starts three services, each with its own metrics port, so "
            f"LOGINPIPE_METRICS_PORT does not apply: unset it and {PORTS_HINT}"
        )
    ports = parse_ports(args.metrics_ports)
    common = load(CommonSettings, os.environ)
    counts_settings = load(CountsSettings, os.environ)
    setup_logging(common.log_level, "text")
    check_ports_free(common.metrics_host, ports)
    topics = [common.topic_input, common.topic_processed, common.topic_errors]
    create_topics(common, topics, partitions=args.partitions, replication=1)
    rds = check_redis(counts_settings, common.startup_timeout_seconds)
    env = dict(os.environ)
    env.setdefault("LOGINPIPE_LOG_FORMAT", "text")
    if args.rate is not None:
        env["LOGINPIPE_GENERATOR_RATE"] = str(args.rate)
    env.setdefault("LOGINPIPE_GENERATOR_RATE", "1000")
    if args.bad_share is not None:
        env["LOGINPIPE_GENERATOR_BAD_SHARE"] = str(args.bad_share)
    return run_pipeline(
        env, ports, Path(args.log_dir), lambda: read_counts(rds, counts_settings.counts_key)
    )


SERVICES = ("generate", "consume", "aggregate")


def _fatal(command: str, message: str, code: int) -> None:
    """The one line a failing command ends with: JSON like the service's log in JSON mode."""
    text = f"loginpipe {command}: error: {message}"
    fmt = os.environ.get("LOGINPIPE_LOG_FORMAT", "json")
    if command in SERVICES and fmt == "json":
        record = {
            "ts": round(time.time(), 3),
            "level": "critical",
            "logger": "loginpipe",
            "msg": text,
            "exit_code": code,
        }
        sys.stderr.write(json.dumps(record) + "\n")
    else:
        sys.stderr.write(text + "\n")


def cmd_redis_acl(args: argparse.Namespace) -> int:
    from loginpipe.exceptions import ConfigError
    from loginpipe.rights import redis_acl_rules

    prefix = args.key_prefix or load(CountsSettings, os.environ).redis_key_prefix
    try:
        sys.stdout.write(redis_acl_rules(args.role, prefix) + "\n")
    except ValueError as exc:
        raise ConfigError(f"{exc} (LOGINPIPE_REDIS_KEY_PREFIX or --key-prefix)") from None
    return 0


def _window_arguments(p: argparse.ArgumentParser) -> None:
    """The options `errors` and `replay` share: which error records, and how to report."""
    p.add_argument("--since", help="from this time: a duration ago (30m, 1h, 2d), epoch ms or ISO")
    p.add_argument("--until", help="up to this time (same forms); default: now")
    p.add_argument("--offsets", help="instead: PARTITION:START-END,... (END exclusive or open)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loginpipe",
        description="Real-time pipeline for login events. Settings come from LOGINPIPE_* "
        "variables (see `loginpipe config`); flags override them.",
    )
    p.add_argument("--version", action="version", version=f"loginpipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="produce login events to the input topic")
    g.add_argument("--rate", type=float, help="events per second, 0 = unlimited")
    g.add_argument("--count", type=int, help="events to produce, 0 = until stopped")
    g.add_argument("--bad-share", type=float, help="share of invalid events, 0 to 1")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--start-time", type=int, help="epoch seconds of the first event (0 = now)")
    g.add_argument("--summary", action="store_true", help="print the run's ground truth as JSON")
    g.set_defaults(fn=cmd_generate)

    c = sub.add_parser("consume", help="validate and route input events")
    c.add_argument("--delivery", choices=("exactly_once", "at_least_once"))
    c.set_defaults(fn=cmd_consume)

    a = sub.add_parser("aggregate", help="count processed events per device type in Redis")
    a.set_defaults(fn=cmd_aggregate)

    k = sub.add_parser("counts", help="print the login counts per device type")
    k.add_argument("--json", action="store_true", help="print JSON")
    k.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for Redis")
    k.set_defaults(fn=cmd_counts)

    e = sub.add_parser(
        "errors",
        help="summarise the error topic: counts by reason and field, top values, samples",
        description="Reads LOGINPIPE_TOPIC_ERRORS (read_committed) over a window, in bounded "
        "memory, and prints counts by reason, by problem and by source partition, the most "
        "frequent offending values of each field, and a few samples with their source "
        "coordinates and original bytes. Without a window, the whole topic as it is now.",
    )
    _window_arguments(e)
    e.add_argument("--top", type=int, default=10, help="values listed per field (default 10)")
    e.add_argument("--samples", type=int, default=3, help="samples kept per reason (default 3)")
    e.set_defaults(fn=cmd_errors)

    rp = sub.add_parser(
        "replay",
        help="route error records that today's rules accept to the processed topic, once",
        description="Re-validates the original bytes of the chosen error records with today's "
        "rules and routes those now valid to LOGINPIPE_TOPIC_PROCESSED, exactly once: each "
        "routed record is marked on the replay ledger (LOGINPIPE_TOPIC_REPLAYED) in the same "
        "transaction, so a second replay of the same records, or one after a crash, routes "
        "nothing twice. Records still invalid stay in the errors topic.",
    )
    rp.add_argument("--reason", action="append", help="only records of this reason (repeatable)")
    _window_arguments(rp)
    rp.add_argument(
        "--dry-run", action="store_true", help="count what would be routed; route nothing"
    )
    rp.set_defaults(fn=cmd_replay)

    t = sub.add_parser("topics", help="create the topics (and the replay ledger) if missing")
    t.add_argument("--partitions", type=int, default=6)
    t.add_argument("--replication", type=int, default=1)
    t.set_defaults(fn=cmd_topics)

    sc = sub.add_parser(
        "schemas",
        help="the message formats (JSON Schemas) in a schema registry",
        description="list: the formats, their versions and subjects. register: put them in the "
        "registry (LOGINPIPE_SCHEMA_REGISTRY_URL) under <topic>-value with BACKWARD "
        "compatibility; --released: the released versions. check: each format as it is now "
        "(or --schema NAME=FILE) against the latest registered version; exit 1 naming the "
        "fields of an incompatible change.",
    )
    sc.add_argument("action", choices=("list", "register", "check"))
    sc.add_argument(
        "--released",
        action="store_true",
        help="register: the released versions; check: against the released versions (which "
        "must be registered), not the latest",
    )
    sc.add_argument(
        "--schema",
        action="append",
        metavar="NAME=FILE",
        help="check: this file instead of the format NAME as it is now (repeatable)",
    )
    sc.set_defaults(fn=cmd_schemas)

    cf = sub.add_parser("config", help="show the settings in effect")
    cf.add_argument("--markdown", action="store_true", help="the README's table of variables")
    cf.set_defaults(fn=cmd_config)

    ra = sub.add_parser(
        "redis-acl",
        help="print a role's Redis ACL rules (for ACL SETUSER or an ACL file)",
        description="The Redis rights of a role, and no more: `aggregator` (the aggregator) or "
        "`reader` (the counts command). Keys: LOGINPIPE_REDIS_KEY_PREFIX, or --key-prefix. "
        "Example: redis-cli ACL SETUSER loginpipe-aggregator on '>PASSWORD' "
        "$(loginpipe redis-acl aggregator)",
    )
    ra.add_argument("role", choices=("aggregator", "reader"))
    ra.add_argument("--key-prefix", help="key prefix (default: LOGINPIPE_REDIS_KEY_PREFIX)")
    ra.set_defaults(fn=cmd_redis_acl)

    r = sub.add_parser("run", help="run the whole pipeline locally with live counts")
    r.add_argument("--partitions", type=int, default=6)
    r.add_argument("--rate", type=float, help="generator events per second (default 1000)")
    r.add_argument("--bad-share", type=float, help="share of invalid events (default 0.2)")
    r.add_argument("--log-dir", default=".cache/run/logs", help="one log file per service")
    r.add_argument(
        "--metrics-ports",
        default="9101,9102,9103",
        help="metrics ports of the generator, consumer and aggregator (0 disables one)",
    )
    r.set_defaults(fn=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_unknown(os.environ)
        rc: int = args.fn(args)
        return rc
    except LoginpipeError as exc:
        from loginpipe.exceptions import ProducerHung, RepeatingFailure
        from loginpipe.local_run import ChildFailed

        if isinstance(exc, ChildFailed):  # a service's own exit code, passed on as it is
            code = exc.code if exc.code > 0 else 1
        elif isinstance(exc, RepeatingFailure):
            code = EXIT_REPEATING_FAILURE
        else:
            code = EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_UNAVAILABLE
        logging.getLogger("loginpipe").debug("fatal", exc_info=True)
        _fatal(args.command, str(exc), code)
        if isinstance(exc, ProducerHung):
            # Tearing down a client with a call still inside it can hang or crash: leave now.
            logging.shutdown()
            sys.stderr.flush()
            os._exit(code)
        return code
    except KeyboardInterrupt:
        return 130
