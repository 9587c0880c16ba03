"""Typed, frozen settings for each service, read from ``LOGINPIPE_*`` environment variables.

Every field names its variable, its type and its bounds in the dataclass metadata, so the
parser, the start-up error messages and the README table (``loginpipe config --markdown``)
all come from one place. A bad value fails at start-up with the variable's name and what to
set instead.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from loginpipe.exceptions import ConfigError

PREFIX = "LOGINPIPE_"


class Secret(str):
    """A string that never shows its value in ``repr`` or logs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


def setting(
    env: str,
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    from_file: bool = False,
) -> Any:
    """Declare one setting: its variable (without prefix), default, documentation and bounds.

    ``from_file``: the value may also come from the file that ``<variable>_FILE`` names (a
    mounted Secret's key), as every ``Secret`` setting's may.
    """
    return field(
        default=default,
        metadata={
            "env": PREFIX + env,
            "help": help,
            "choices": choices,
            "minimum": minimum,
            "maximum": maximum,
            "from_file": from_file,
        },
    )


def metrics_port_setting(default: int) -> Any:
    """The HTTP port setting; each service has its own default so all run side by side."""
    return setting(
        "METRICS_PORT",
        default,
        "Port of /metrics, /healthz and /readyz (0 disables).",
        minimum=0,
        maximum=65535,
    )


def _hostname() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class CommonSettings:
    kafka_bootstrap: str = setting(
        "KAFKA_BOOTSTRAP", "localhost:9092", "Kafka bootstrap servers, comma-separated host:port."
    )
    kafka_security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "Kafka security protocol.",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    kafka_sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        "SASL mechanism when the protocol is SASL_*.",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    )
    kafka_sasl_username: str = setting(
        "KAFKA_SASL_USERNAME",
        "",
        "SASL user name. Or `LOGINPIPE_KAFKA_SASL_USERNAME_FILE`: a file holding it (a mounted "
        "Kubernetes Secret in the chart).",
        from_file=True,
    )
    kafka_sasl_password: Secret = setting(  # noqa: RUF009
        "KAFKA_SASL_PASSWORD",
        Secret(""),
        "SASL password (masked in logs). Or `LOGINPIPE_KAFKA_SASL_PASSWORD_FILE`: a file holding "
        "it (a mounted Kubernetes Secret in the chart).",
    )
    kafka_ssl_ca_location: str = setting(
        "KAFKA_SSL_CA_LOCATION", "", "Path of the CA bundle that signs the brokers' certificates."
    )
    kafka_session_timeout_ms: int = setting(
        "KAFKA_SESSION_TIMEOUT_MS",
        10_000,
        "Consumer group session timeout: how soon a crashed consumer's partitions move on "
        "(within the broker's group.min/max.session.timeout.ms).",
        minimum=6000,
        maximum=300_000,
    )
    topic_input: str = setting("TOPIC_INPUT", "user-login", "Topic of raw login events.")
    topic_processed: str = setting(
        "TOPIC_PROCESSED", "user-login-processed", "Topic of valid, normalised events."
    )
    topic_errors: str = setting(
        "TOPIC_ERRORS", "user-login-errors", "Topic of error envelopes for invalid events."
    )
    metrics_port: int = metrics_port_setting(9100)
    metrics_host: str = setting("METRICS_HOST", "0.0.0.0", "Address the HTTP endpoint binds to.")  # noqa: S104
    log_level: str = setting(
        "LOG_LEVEL", "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "json",
        "Log format: one JSON object a line, or text.",
        choices=("json", "text"),
    )
    startup_timeout_seconds: float = setting(
        "STARTUP_TIMEOUT_SECONDS",
        30.0,
        "How long start-up waits for Kafka and Redis before failing with an error.",
        minimum=0.1,
    )

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka properties shared by every client of this service."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = self.kafka_sasl_password.reveal()
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        return conf

    def validate(self) -> None:
        topics = (self.topic_input, self.topic_processed, self.topic_errors)
        if len(set(topics)) != 3:
            raise ConfigError(
                "LOGINPIPE_TOPIC_INPUT, LOGINPIPE_TOPIC_PROCESSED and LOGINPIPE_TOPIC_ERRORS "
                f"must be three different topics, got {topics}"
            )
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_username:
            raise ConfigError(
                "LOGINPIPE_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}: set LOGINPIPE_KAFKA_SASL_USERNAME and "
                "LOGINPIPE_KAFKA_SASL_PASSWORD"
            )
        if not self.kafka_bootstrap.strip():
            raise ConfigError("LOGINPIPE_KAFKA_BOOTSTRAP is empty: set it to host:port[,host:port]")
        ca = self.kafka_ssl_ca_location
        if ca and not os.path.isfile(ca):
            raise ConfigError(
                f"LOGINPIPE_KAFKA_SSL_CA_LOCATION={ca!r} is not a readable file: set it to the "
                "PEM bundle of the CA that signs the brokers' certificates (or leave it empty to "
                "use the system's CAs)"
            )


@dataclass(frozen=True)
class RedisSettings:
    redis_url: str = setting(
        "REDIS_URL", "redis://localhost:6379/0", "Redis URL (redis:// or rediss://)."
    )
    redis_username: str = setting(
        "REDIS_USERNAME",
        "",
        "Redis ACL user (Redis 6+); empty: the user in LOGINPIPE_REDIS_URL, else `default`. "
        "Its rights: `loginpipe redis-acl aggregator` (counts command: `reader`).",
    )
    redis_password: Secret = setting(  # noqa: RUF009
        "REDIS_PASSWORD",
        Secret(""),
        "Redis password, if not in the URL (masked in logs). Or `LOGINPIPE_REDIS_PASSWORD_FILE`: "
        "a file holding it (a mounted Kubernetes Secret in the chart).",
    )
    redis_ssl_ca_location: str = setting(
        "REDIS_SSL_CA_LOCATION",
        "",
        "Path of the CA bundle (PEM) that signs Redis' certificate, for a rediss:// URL "
        "(empty: the system's CAs).",
    )
    redis_key_prefix: str = setting(
        "REDIS_KEY_PREFIX", "loginpipe:", "Prefix of every Redis key the pipeline writes."
    )
    redis_cluster: bool = setting(
        "REDIS_CLUSTER",
        False,
        "Redis is a Redis Cluster: LOGINPIPE_REDIS_URL names any one of its nodes.",
    )

    def redis_validate(self) -> None:
        shown = mask_url(self.redis_url)
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"LOGINPIPE_REDIS_URL={shown!r} is not a Redis URL: set it to redis://host:port/db"
            )
        parts = urlsplit(self.redis_url)
        try:
            parts.port  # noqa: B018  # raises for a port that is not a number in range
        except ValueError:
            raise ConfigError(
                f"LOGINPIPE_REDIS_URL={shown!r} has a port that is not a number from 1 to 65535: "
                "set it to redis://host:port/db"
            ) from None
        db = parts.path.lstrip("/")
        if parts.scheme != "unix" and db and not db.isdigit():
            raise ConfigError(
                f"LOGINPIPE_REDIS_URL={shown!r} names database {db!r}, not a number: "
                "set it to redis://host:port/db with db a number (0 by default)"
            )
        ca = self.redis_ssl_ca_location
        if ca and parts.scheme != "rediss":
            raise ConfigError(
                f"LOGINPIPE_REDIS_SSL_CA_LOCATION is set but LOGINPIPE_REDIS_URL={shown!r} is not "
                "TLS: use rediss://host:port/db, or unset LOGINPIPE_REDIS_SSL_CA_LOCATION"
            )
        if ca and not os.path.isfile(ca):
            raise ConfigError(
                f"LOGINPIPE_REDIS_SSL_CA_LOCATION={ca!r} is not a readable file: set it to the "
                "PEM bundle of the CA that signs Redis' certificate (or leave it empty to use the "
                "system's CAs)"
            )
        if self.redis_cluster and (parts.scheme == "unix" or db not in ("", "0")):
            raise ConfigError(
                f"LOGINPIPE_REDIS_URL={shown!r} with LOGINPIPE_REDIS_CLUSTER=true: a Redis Cluster "
                "is reached over TCP and has only database 0; set it to redis://host:port/0"
            )

    @property
    def counts_key(self) -> str:
        """The one hash of counts and positions (see loginpipe.redis_store)."""
        return f"{self.redis_key_prefix}device_counts"


@dataclass(frozen=True)
class GeneratorSettings(CommonSettings):
    metrics_port: int = metrics_port_setting(9101)
    rate: float = setting(
        "GENERATOR_RATE", 100.0, "Events per second (0 = as fast as possible).", minimum=0
    )
    count: int = setting(
        "GENERATOR_COUNT", 0, "Events to produce before exiting (0 = until stopped).", minimum=0
    )
    bad_share: float = setting(
        "GENERATOR_BAD_SHARE",
        0.2,
        "Share of events that are invalid, 0 to 1.",
        minimum=0,
        maximum=1,
    )
    seed: int = setting("GENERATOR_SEED", 0, "Random seed; the same seed gives the same events.")
    users: int = setting("GENERATOR_USERS", 10_000, "Distinct user ids.", minimum=1)
    start_time: int = setting(
        "GENERATOR_START_TIME",
        0,
        "Epoch seconds of the first event's timestamp (0 = now); fixed for reproducible runs.",
        minimum=0,
    )


@dataclass(frozen=True)
class SchemaSettings(CommonSettings):
    """Settings of ``loginpipe schemas``: the registry, and the topics whose subjects it uses."""

    schema_registry_url: str = setting(
        "SCHEMA_REGISTRY_URL",
        "http://127.0.0.1:8081/apis/ccompat/v7",
        "A schema registry's Confluent-compatible API (Apicurio: <base>/apis/ccompat/v7; the "
        "default is hack/registry.sh's local one).",
    )
    schema_subject_prefix: str = setting(
        "SCHEMA_SUBJECT_PREFIX",
        "",
        "Prefix of the formats' subjects (<prefix><topic>-value), to keep several pipelines "
        "apart in one registry.",
    )

    def validate(self) -> None:
        super().validate()
        if not self.schema_registry_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"LOGINPIPE_SCHEMA_REGISTRY_URL={self.schema_registry_url!r} is not an http(s) "
                "URL: set it to the registry's Confluent-compatible API, e.g. "
                "http://127.0.0.1:8081/apis/ccompat/v7"
            )


@dataclass(frozen=True)
class ConsumerSettings(SchemaSettings):
    metrics_port: int = metrics_port_setting(9102)
    group_id: str = setting(
        "CONSUMER_GROUP", "loginpipe-consumer", "Consumer group of the validating consumer."
    )
    delivery: str = setting(
        "CONSUMER_DELIVERY",
        "exactly_once",
        "exactly_once (Kafka transactions) or at_least_once (duplicates possible after a crash).",
        choices=("exactly_once", "at_least_once"),
    )
    transactional_id: str = setting(
        "CONSUMER_TRANSACTIONAL_ID",
        "",
        "Transactional id; must be unique per running consumer and stable across its restarts "
        "(default: loginpipe-consumer-<hostname>, the pod name on Kubernetes; a second consumer "
        "on the same host takes loginpipe-consumer-<hostname>-1, and so on).",
    )
    batch_size: int = setting(
        "CONSUMER_BATCH_SIZE",
        2000,
        "Most messages taken per consume call.",
        minimum=1,
        maximum=1_000_000,
    )
    commit_interval_ms: int = setting(
        "CONSUMER_COMMIT_INTERVAL_MS",
        0,
        "Time a transaction (exactly once) or an offset commit (at least once) stays open "
        "while commits are quick. Exactly once: with the commit's own time it sets the "
        "end-to-end latency. At least once: records are visible at once, and it bounds what "
        "is routed again after a crash. 0: 50 for exactly_once, 1000 for at_least_once.",
        minimum=0,
    )
    max_commit_interval_ms: int = setting(
        "CONSUMER_MAX_COMMIT_INTERVAL_MS",
        0,
        "Longest the commit interval may grow to while commits are slow (a loaded broker) and "
        "a backlog waits, so that commits stall the loop about a tenth of the time; the "
        "latency bound under load. 0: the larger of 1000 and the commit interval. Equal to "
        "the commit interval: never grows.",
        minimum=0,
    )

    @property
    def commit_interval_in_effect_ms(self) -> int:
        """The commit interval (0 stands for the delivery mode's default).

        Exactly once: 50 ms, since a record is visible only once its transaction commits. At
        least once: 1 s, since its records are visible at once; a shorter interval only
        adds offset commits (20 a second at 50 ms, measured to lengthen the p99 to Redis at
        10k/s: 68 against 47 ms, median of 8 interleaved runs, ``make bench-ab``).
        """
        if self.commit_interval_ms:
            return self.commit_interval_ms
        return 50 if self.delivery == "exactly_once" else 1000

    @property
    def commit_interval_bound_ms(self) -> int:
        """The commit interval's upper bound in effect (0 stands for the default)."""
        return self.max_commit_interval_ms or max(1000, self.commit_interval_in_effect_ms)

    linger_ms: int = setting(
        "CONSUMER_LINGER_MS",
        -1,
        "How long the consumer's producer waits to fill a batch before sending it "
        "(librdkafka's linger.ms). Shorter: lower latency at least once, more produce "
        "requests. -1: 5 for exactly_once (a transaction's records show only at its commit, "
        "which sends them at once), 1 for at_least_once (they show when acknowledged).",
        minimum=-1,
        maximum=60_000,
    )

    @property
    def linger_in_effect_ms(self) -> int:
        """The producer's linger (-1 stands for the delivery mode's default).

        Exactly once: 5 ms, librdkafka's default; the commit flushes the transaction's records
        whatever the linger, so a longer one only makes fuller batches. At least once: a record
        is visible once acknowledged, so its linger is latency: 1 ms against 5 ms gave a p50 to
        Redis at 10k/s of 19.6 against 23.5 ms and a p99 of 48 against 59 ms (medians of 6
        interleaved rounds, ``make bench-ab``; p50 lower in 12 of 12 rounds of two such runs),
        for about 6% more CPU per event on a backlog, where more, smaller produce requests go.
        """
        if self.linger_ms >= 0:
            return self.linger_ms
        return 5 if self.delivery == "exactly_once" else 1

    failure_budget_seconds: float = setting(
        "CONSUMER_FAILURE_BUDGET_SECONDS",
        120.0,
        "How long transactions (or offset commits) may keep failing, retried with backoff and "
        "the service unready, before the consumer exits (code 4) naming the cause.",
        minimum=1,
    )
    output_format: str = setting(
        "CONSUMER_OUTPUT_FORMAT",
        "json",
        "Format of the processed and error records: json (plain JSON, what every reader "
        "takes) or registry (the schema registry's wire format: a zero byte, the 4-byte id of "
        "the format's schema at LOGINPIPE_SCHEMA_REGISTRY_URL, then the JSON; the ids are "
        "looked up at start-up, so the schemas must be registered first: loginpipe schemas "
        "register). The aggregator, loginpipe errors and loginpipe replay read either.",
        choices=("json", "registry"),
    )
    transaction_timeout_ms: int = setting(
        "CONSUMER_TRANSACTION_TIMEOUT_MS",
        60_000,
        "Broker-side timeout after which an abandoned transaction is aborted "
        "(at most the broker's transaction.max.timeout.ms).",
        minimum=1000,
        maximum=900_000,
    )

    def validate(self) -> None:
        super().validate()
        interval = self.commit_interval_in_effect_ms
        if self.delivery == "exactly_once" and interval >= self.transaction_timeout_ms:
            raise ConfigError(
                f"LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS={self.commit_interval_ms} is not below "
                f"LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS={self.transaction_timeout_ms}: the "
                "broker would abort every transaction before the consumer commits it; set the "
                "commit interval well below the transaction timeout (defaults: 50 and 60000)"
            )
        if 0 < self.max_commit_interval_ms < interval:
            raise ConfigError(
                f"LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS={self.max_commit_interval_ms} is "
                f"below the commit interval, {interval} ms "
                f"(LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS={self.commit_interval_ms}): the "
                "interval grows from the second up to the first; set the maximum at least as "
                "high (equal: a fixed interval; 0: the larger of 1000 and the interval)"
            )
        if (
            self.delivery == "exactly_once"
            and self.commit_interval_bound_ms >= self.transaction_timeout_ms
        ):
            raise ConfigError(
                f"LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS={self.max_commit_interval_ms} (in "
                f"effect {self.commit_interval_bound_ms}) is not below "
                f"LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS={self.transaction_timeout_ms}: the "
                "broker would abort a transaction kept open that long; set the maximum well "
                "below the transaction timeout"
            )

    def default_transactional_id(self) -> str:
        """The base of the default id; ``kafka_io.TransactionalIdClaim`` makes it unique."""
        return f"loginpipe-consumer-{_hostname()}"


@dataclass(frozen=True)
class AggregatorSettings(CommonSettings, RedisSettings):
    metrics_port: int = metrics_port_setting(9103)
    group_id: str = setting(
        "AGGREGATOR_GROUP", "loginpipe-aggregator", "Consumer group of the aggregator."
    )
    batch_size: int = setting(
        "AGGREGATOR_BATCH_SIZE",
        5000,
        "Most messages applied to Redis in one atomic write.",
        minimum=1,
        maximum=1_000_000,
    )
    log_interval_seconds: float = setting(
        "AGGREGATOR_LOG_INTERVAL_SECONDS",
        10.0,
        "How often the counts are logged (0 = never).",
        minimum=0,
    )

    def validate(self) -> None:
        super().validate()
        self.redis_validate()


@dataclass(frozen=True)
class CountsSettings(RedisSettings):
    """Settings of ``loginpipe counts``: Redis only."""

    def validate(self) -> None:
        self.redis_validate()


@dataclass(frozen=True)
class ReplaySettings(CommonSettings):
    """Settings of ``loginpipe replay``: Kafka only."""

    topic_replayed: str = setting(
        "TOPIC_REPLAYED",
        "user-login-replayed",
        "Replay ledger: a compacted topic with one record per error record a replay routed, "
        "so that no replay routes one twice (`loginpipe topics` creates it).",
    )
    replay_transactional_id: str = setting(
        "REPLAY_TRANSACTIONAL_ID",
        "loginpipe-replay",
        "Transactional id of `loginpipe replay`: one per errors topic, shared by every run, so "
        "that a run fences one still running and aborts what a killed one left open.",
    )
    reader_group: str = setting(
        "READER_GROUP",
        "loginpipe-reader",
        "Consumer group id of `loginpipe errors` and `replay`. They read by assignment and commit "
        "nothing, but librdkafka looks up the group's coordinator: their Kafka user needs "
        "Describe on this group.",
    )
    replay_batch_size: int = setting(
        "REPLAY_BATCH_SIZE",
        1000,
        "Records a replay routes per transaction (at most; a transaction also ends after 1 s).",
        minimum=1,
        maximum=100_000,
    )


S = TypeVar("S")


def _parse(raw: str, typ: type, meta: Mapping[str, Any]) -> Any:
    name = meta["env"]
    value: Any
    if typ is bool:
        low = raw.strip().lower()
        if low not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ConfigError(f"{name}={raw!r} is not a boolean: set it to true or false")
        value = low in {"1", "true", "yes", "on"}
    elif typ is int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} is not an integer: set it to a whole number"
            ) from None
    elif typ is float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number: set it to a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}={raw!r} is not a finite number")
    elif typ is Secret:
        value = Secret(raw)
    else:
        value = raw.strip()
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}: set one of those")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and value < lo:
        raise ConfigError(f"{name}={raw!r} is below the minimum {lo}: set it to {lo} or more")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}={raw!r} is above the maximum {hi}: set it to {hi} or less")
    return value


def load(cls: type[S], environ: Mapping[str, str], **overrides: Any) -> S:
    """Build settings of ``cls`` from ``environ``; ``overrides`` (from CLI flags) win.

    Unknown ``LOGINPIPE_*`` variables are rejected too, so a typo does not pass silently.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = f.metadata["env"]
        if f.name in overrides and overrides[f.name] is not None:
            raw = str(overrides[f.name])
        elif _from_file(f, hints) and env + FILE_SUFFIX in environ:
            raw = _read_secret_file(env, environ)
        elif env in environ:
            raw = environ[env]
        else:
            continue
        values[f.name] = _parse(raw, hints[f.name], f.metadata)
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


FILE_SUFFIX = "_FILE"


def _from_file(f: dataclasses.Field[Any], hints: Mapping[str, Any]) -> bool:
    """Whether a setting may come from the file ``<variable>_FILE`` names."""
    return hints[f.name] is Secret or bool(f.metadata.get("from_file"))


def _read_secret_file(env: str, environ: Mapping[str, str]) -> str:
    """A secret from the file ``<env>_FILE`` names (a mounted Secret): never in the environment."""
    path = environ[env + FILE_SUFFIX]
    if env in environ:
        raise ConfigError(f"both {env} and {env}{FILE_SUFFIX} are set: set only one of them")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"{env}{FILE_SUFFIX}={path!r} cannot be read ({exc.strerror}): set it to the file "
            f"holding the secret (a mounted Secret's key), or set {env} instead"
        ) from None


def known_variables() -> set[str]:
    names: set[str] = set()
    for cls in (
        GeneratorSettings,
        ConsumerSettings,
        AggregatorSettings,
        CountsSettings,
        ReplaySettings,
        SchemaSettings,
    ):
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            names.add(f.metadata["env"])
            if _from_file(f, hints):
                names.add(f.metadata["env"] + FILE_SUFFIX)
    return names


def check_unknown(environ: Mapping[str, str]) -> None:
    """Fail on ``LOGINPIPE_*`` variables that no service reads (usually a typo)."""
    extra = sorted(k for k in environ if k.startswith(PREFIX) and k not in known_variables())
    # Variables used only by tests and scripts, never by the services.
    extra = [k for k in extra if not k.startswith(("LOGINPIPE_TEST_", "LOGINPIPE_BENCH_"))]
    if extra:
        raise ConfigError(
            f"unknown setting(s) {', '.join(extra)}: see `loginpipe config` for the variables"
        )


def mask_url(url: str) -> str:
    """A URL without its credentials or query (Redis URLs may carry a password)."""
    parts = urlsplit(url)
    if not parts.scheme or ("@" not in parts.netloc and not parts.query):
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe(obj: Any) -> dict[str, Any]:
    """Settings as a dict for the start-up log, secrets and URL credentials masked."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Secret):
            value = "***" if value else ""
        elif f.name.endswith("_url") and isinstance(value, str):
            value = mask_url(value)
        out[f.metadata["env"]] = value
    return out


def markdown_table() -> str:
    """The README's settings table, one row a variable, with the services that read it."""
    services = {
        "generator": GeneratorSettings,
        "consumer": ConsumerSettings,
        "aggregator": AggregatorSettings,
        "counts": CountsSettings,
        "replay": ReplaySettings,
        "schemas": SchemaSettings,
    }
    rows: dict[str, dict[str, Any]] = {}
    for svc, cls in services.items():
        for f in dataclasses.fields(cls):
            env = f.metadata["env"]
            row = rows.setdefault(env, {"help": f.metadata, "defaults": {}, "services": []})
            row["services"].append(svc)
            row["defaults"][svc] = f.default
    lines = [
        "| variable | services | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for env in sorted(rows):
        row = rows[env]
        meta = row["help"]
        defaults = {repr(v) for v in row["defaults"].values()}
        if len(defaults) == 1:
            default = _fmt_default(next(iter(row["defaults"].values())))
        else:
            default = ", ".join(f"{s}: {_fmt_default(v)}" for s, v in row["defaults"].items())
        text = meta["help"]
        if meta["choices"]:
            text += " One of: " + ", ".join(f"`{c}`" for c in meta["choices"]) + "."
        lines.append(f"| `{env}` | {', '.join(row['services'])} | {default} | {text} |")
    return "\n".join(lines)


def _fmt_default(v: Any) -> str:
    if isinstance(v, Secret):
        return "(empty)" if not v else "***"
    if v == "":
        return "(empty)"
    return f"`{v}`"
