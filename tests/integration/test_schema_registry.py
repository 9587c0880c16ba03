"""The formats in a real Apicurio Registry (hack/registry.sh) on the real broker, through its
Confluent-compatible API and confluent-kafka-python's client: register, fetch by id, the wire
format, BACKWARD compatibility, the CI gate, and schemas kept across a restart (KafkaSQL)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import (
    MessageField,
    SerializationContext,
    SerializationError,
)

from loginpipe import schema_registry, schemas, wire
from loginpipe.kafka_io import acl_bindings
from loginpipe.rights import kafka_acls
from loginpipe.settings import SchemaSettings, load
from loginpipe.validation import Valid, validate
from tests.conftest import require, wait_for
from tests.integration.conftest import ROOT, SERVICES, free_port
from tests.integration.test_pipeline import expected_run, generate_args

pytestmark = pytest.mark.integration
# What the registry demands of its topics before it starts (it refuses anything else: its
# journal is its storage), and what the chart's KafkaTopics give them.
REGISTRY_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
SCRIPT = str(ROOT / "hack/registry.sh")


@dataclass
class Registry:
    env: dict[str, str]
    url: str

    def script(self, cmd: str) -> None:
        subprocess.run([SCRIPT, cmd], env=self.env, check=True, capture_output=True)


def require_registry() -> None:
    java = subprocess.run([SCRIPT, "java"], capture_output=True, text=True, check=False)
    require(java.returncode == 0, "no Java 21+ for the schema registry (set REGISTRY_JAVA_HOME)")
    fetched = subprocess.run([SCRIPT, "fetched"], check=False).returncode == 0
    require(fetched, "the schema registry is not fetched: run `hack/registry.sh fetch`")


@contextlib.contextmanager
def running_registry(bootstrap: str, data_dir: Path, **env: str) -> Iterator[Registry]:
    """hack/registry.sh's registry on ``bootstrap``; ``env``: its APICURIO_* settings."""
    require_registry()
    port = free_port()
    full = {
        **os.environ,
        "REGISTRY_PORT": str(port),
        "REGISTRY_MANAGEMENT_PORT": str(free_port()),
        "REGISTRY_KAFKA": bootstrap,
        "REGISTRY_DATA_DIR": str(data_dir),
        **env,
    }
    reg = Registry(full, f"http://127.0.0.1:{port}/apis/ccompat/v7")
    reg.script("start")
    try:
        yield reg
    finally:
        subprocess.run([SCRIPT, "stop"], env=full, check=False, capture_output=True)


@pytest.fixture(scope="module")
def registry(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(kafka_bootstrap, tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def settings(registry: Registry, prefix: str) -> SchemaSettings:
    return load(
        SchemaSettings,
        {
            "LOGINPIPE_SCHEMA_REGISTRY_URL": registry.url,
            "LOGINPIPE_SCHEMA_SUBJECT_PREFIX": prefix,
        },
    )


@pytest.fixture
def registry_client() -> Iterator[Callable[[Registry], SchemaRegistryClient]]:
    made: list[SchemaRegistryClient] = []

    def make(registry: Registry) -> SchemaRegistryClient:
        made.append(SchemaRegistryClient({"url": registry.url, "timeout": 30}))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}-"


def run_cli(
    registry: Registry, prefix: str, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGINPIPE_")}
    env.update(
        {
            "PYTHONPATH": str(SERVICES),
            "LOGINPIPE_SCHEMA_REGISTRY_URL": registry.url,
            "LOGINPIPE_SCHEMA_SUBJECT_PREFIX": prefix,
            **extra,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "loginpipe", "schemas", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def incompatible_processed_event(tmp_path: Path) -> Path:
    """processed-event v2 as a careless change would make it: locale required, non-null."""
    doc = schemas.load("processed-event")
    doc["properties"]["locale"] = {"type": "string", "minLength": 2}
    doc["properties"]["session_id"] = {"type": "string"}
    doc["required"] = [*doc["required"], "session_id"]
    path = tmp_path / "processed-event.v2.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_formats_register_under_their_topics_subjects_and_a_record_round_trips(
    registry: Registry, prefix: str, registry_client: Any
) -> None:
    s = settings(registry, prefix)
    done = {r.name: r for r in schema_registry.register(s)}
    assert set(done) == set(schemas.VERSIONS)
    assert done["processed-event"].subject == f"{prefix}user-login-processed-value"
    client = registry_client(registry)
    for r in done.values():  # fetched by id: the same document
        assert json.loads(client.get_schema(r.schema_id).schema_str) == schemas.load(r.name)
        assert client.get_compatibility(r.subject) == "BACKWARD"
    # Registering again changes nothing: same version, same id.
    again = {r.name: r for r in schema_registry.register(s)}
    assert {n: (r.version, r.schema_id) for n, r in again.items()} == {
        n: (r.version, r.schema_id) for n, r in done.items()
    }

    # The wire format: magic byte 0, the schema id, then the JSON, as Confluent's clients read.
    raw = orjson.dumps(
        {
            "user_id": "u1",
            "app_version": "2.3.0",
            "device_type": "iOS",
            "ip": "10.0.0.1",
            "timestamp": "1764000000",
        }
    )
    result = validate(raw)
    assert isinstance(result, Valid)
    event = orjson.loads(result.value)
    topic = f"{prefix}user-login-processed"
    ctx = SerializationContext(topic, MessageField.VALUE)
    text = schemas.text("processed-event")
    ser = JSONSerializer(
        text, client, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    wire = ser(event, ctx)
    assert wire is not None and wire[0] == 0
    assert int.from_bytes(wire[1:5], "big") == done["processed-event"].schema_id
    assert JSONDeserializer(text, schema_registry_client=client)(wire, ctx) == event
    # A record off the contract is refused before it is sent.
    with pytest.raises(SerializationError, match="'iOS' is not one of"):
        ser({**event, "device_type": "iOS"}, ctx)


def test_an_incompatible_version_is_refused_by_the_registry_with_409(
    registry: Registry, prefix: str, registry_client: Any, tmp_path: Path
) -> None:
    s = settings(registry, prefix)
    schema_registry.register(s)
    client = registry_client(registry)
    subject = schema_registry.subjects(s)["processed-event"]
    v2 = incompatible_processed_event(tmp_path).read_text()
    assert client.test_compatibility(subject, Schema(v2, "JSON")) is False
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject, Schema(v2, "JSON"))
    assert err.value.http_status_code == 409


def test_the_ci_gate_passes_todays_formats_and_fails_an_incompatible_one_naming_its_fields(
    registry: Registry, prefix: str, tmp_path: Path
) -> None:
    # CI's steps: the released versions into a fresh registry, then today's checked against them.
    reg = run_cli(registry, prefix, "register", "--released")
    assert reg.returncode == 0, reg.stderr
    assert f"{prefix}user-login-errors-value version 1" in reg.stdout
    ok = run_cli(registry, prefix, "check", "--released")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("compatible (BACKWARD)") == 3

    bad = run_cli(
        registry,
        prefix,
        "check",
        "--released",
        "--schema",
        f"processed-event={incompatible_processed_event(tmp_path)}",
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    line = next(x for x in bad.stdout.splitlines() if x.startswith("processed-event"))
    assert "INCOMPATIBLE (BACKWARD)" in line
    assert "session_id: now required" in line and "locale: type" in line
    # The other two formats are still fine.
    assert bad.stdout.count("compatible (BACKWARD)") == 2


def test_the_registry_keeps_its_schemas_across_a_restart(
    registry: Registry, prefix: str, registry_client: Any
) -> None:
    s = settings(registry, prefix)
    before = {r.name: r.schema_id for r in schema_registry.register(s)}
    registry.script("stop")
    registry.script("start")  # KafkaSQL: it replays its journal topic from the broker
    client = registry_client(registry)
    for name, schema_id in before.items():
        assert json.loads(client.get_schema(schema_id).schema_str) == schemas.load(name)
    assert {r.name: r.schema_id for r in schema_registry.register(s)} == before


def test_a_registry_that_is_not_there_is_a_clear_error(prefix: str) -> None:
    dead = Registry({}, f"http://127.0.0.1:{free_port()}/apis/ccompat/v7")
    # `register` waits for a registry still starting, up to the start-up timeout.
    began = time.monotonic()
    out = run_cli(dead, prefix, "register", LOGINPIPE_STARTUP_TIMEOUT_SECONDS="3")
    assert time.monotonic() - began >= 3
    assert out.returncode == 3
    assert "schema registry at http://127.0.0.1:" in out.stderr
    assert "hack/registry.sh start" in out.stderr


def test_an_operators_compatibility_level_is_kept_and_a_wrong_url_is_an_error(
    registry: Registry, prefix: str, registry_client: Any
) -> None:
    s = settings(registry, prefix)
    client = registry_client(registry)
    subject = schema_registry.subjects(s)["error-envelope"]
    client.set_compatibility(subject, "FULL")
    schema_registry.register(s)
    assert client.get_compatibility(subject) == "FULL"
    # The registry's base URL without /apis/ccompat/v7: its 404s are not "nothing registered".
    wrong = run_cli(Registry({}, registry.url.removesuffix("/apis/ccompat/v7")), prefix, "check")
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert "answered HTTP 404" in wrong.stderr


# ---- the consumer's output in the registry's wire format ------------------------------------


def wire_env(registry: Registry, prefix: str) -> dict[str, str]:
    return {
        "LOGINPIPE_CONSUMER_OUTPUT_FORMAT": "registry",
        "LOGINPIPE_SCHEMA_REGISTRY_URL": registry.url,
        "LOGINPIPE_SCHEMA_SUBJECT_PREFIX": prefix,
    }


def registered_ids(pl: Any, registry: Registry, prefix: str) -> dict[str, int]:
    """Register the formats under the pipeline's topics' subjects; their ids by topic."""
    out = pl.run_cli("schemas", "register", **wire_env(registry, prefix))
    assert out.returncode == 0, out.stdout + out.stderr
    s = load(SchemaSettings, {**pl.env, **wire_env(registry, prefix)})
    ids = schema_registry.output_schema_ids(s, 10, lambda _: False)
    return {pl.processed: ids["processed-event"], pl.errors: ids["error-envelope"]}


def assert_framed_and_complete(pl: Any, ids: dict[str, int], count: int, seed: int) -> None:
    """Every output framed with its topic's schema id; each input routed exactly once."""
    truth, _ = expected_run(count, seed)
    processed = pl.read_all(pl.processed, expected=truth.valid)
    errors = pl.read_all(pl.errors, expected=truth.invalid)
    assert (len(processed), len(errors)) == (truth.valid, truth.invalid)
    for topic, records in ((pl.processed, processed), (pl.errors, errors)):
        assert {wire.schema_id(r.value) for r in records} == {ids[topic]}
    sources = [orjson.loads(wire.payload(r.value))["source"] for r in errors]
    coords = {(src["partition"], src["offset"]) for src in sources}
    assert len(coords) == truth.invalid
    wait_for("the counts", lambda: pl.counts() == dict(truth.valid_by_device), timeout=60)


def test_the_consumer_writes_the_wire_format_and_every_reader_takes_it(
    make_pipeline: Any, registry: Registry, prefix: str, registry_client: Any
) -> None:
    pl = make_pipeline(partitions=2)
    ids = registered_ids(pl, registry, prefix)
    assert pl.run_cli(*generate_args(count=2000, seed=5)).returncode == 0
    pl.service("consumer", "consume", **wire_env(registry, prefix)).start()
    pl.service("aggregator", "aggregate").start()  # reads either format, nothing to set
    assert_framed_and_complete(pl, ids, 2000, seed=5)
    # A registry-aware reader finds the writer's schema by the record's id, and the record
    # holds to it. (JSONDeserializer itself is exercised in the round trip above: with no
    # schema of its own it first asks for subject associations, an API Apicurio's ccompat
    # does not serve, and that request can hang.)
    client = registry_client(registry)
    for topic, name in ((pl.processed, "processed-event"), (pl.errors, "error-envelope")):
        [schema_id] = {wire.schema_id(r.value) for r in pl.read_all(topic)}
        writer = json.loads(client.get_schema(schema_id).schema_str)
        assert writer == schemas.load(name)
        check = jsonschema.Draft7Validator(writer)
        for r in pl.read_all(topic)[:200]:
            check.validate(orjson.loads(wire.payload(r.value)))
    # The error summary reads the framed envelopes.
    report = pl.run_cli("errors", "--json")
    assert report.returncode == 0, report.stderr
    assert orjson.loads(report.stdout)["unreadable"] == 0


def test_a_wire_format_consumer_stops_at_start_up_when_the_registry_is_away_or_lacks_the_formats(
    make_pipeline: Any, registry: Registry, prefix: str
) -> None:
    pl = make_pipeline(partitions=1)
    dead = Registry({}, f"http://127.0.0.1:{free_port()}/apis/ccompat/v7")
    away = pl.service(
        "consumer", "consume", LOGINPIPE_STARTUP_TIMEOUT_SECONDS="3", **wire_env(dead, prefix)
    ).start()
    assert away.wait(60) == 3
    assert f"schema registry at {dead.url} failed" in away.log()
    assert "LOGINPIPE_SCHEMA_REGISTRY_URL" in away.log()
    # Up, but the formats were never registered under these subjects.
    unregistered = pl.service("consumer", "consume", **wire_env(registry, prefix)).start()
    assert unregistered.wait(60) == 2
    assert "loginpipe schemas register" in unregistered.log()
    assert pl.read_all(pl.processed) == [] and pl.read_all(pl.errors) == []


def test_the_registry_going_down_mid_run_loses_no_record(
    make_pipeline: Any, registry: Registry, prefix: str
) -> None:
    """The ids are looked up once, at start-up: the registry is not on the hot path."""
    pl = make_pipeline(partitions=2)
    ids = registered_ids(pl, registry, prefix)
    count = 6000
    gen = pl.service("generator", *generate_args(count=count, rate=1000, seed=6)).start()
    pl.service("consumer", "consume", **wire_env(registry, prefix)).start()
    pl.service("aggregator", "aggregate").start()
    wait_for("the first counts", lambda: sum(pl.counts().values()) > 0, timeout=60)
    registry.script("stop")
    try:
        assert gen.running(), "the generator finished before the registry went: raise the count"
        assert gen.wait(60) == 0
        assert_framed_and_complete(pl, ids, count, seed=6)
    finally:
        registry.script("start")


def test_the_registry_runs_on_a_secured_broker_with_only_the_registry_roles_rights(
    own_kafka: Any, tmp_path: Path
) -> None:
    """The chart's settings of the registry's Kafka clients (APICURIO_KAFKA_COMMON_*: SCRAM
    over TLS, a PEM CA) and its KafkaUser's ACLs (loginpipe.rights "registry"), on a broker
    that allows nothing without an ACL, with the topics made beforehand as the chart's
    KafkaTopics make them (REGISTRY_TOPIC_CONFIG)."""
    require_registry()
    kafka = own_kafka(security="sasl_ssl")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, **kafka.client_config()})
    tag = uuid.uuid4().hex[:8]
    journal, snapshots = f"registry-journal-{tag}", f"registry-snapshots-{tag}"
    events = f"registry-events-{tag}"
    new = [
        NewTopic(t, num_partitions=1, replication_factor=1, config=REGISTRY_TOPIC_CONFIG)
        for t in (journal, snapshots)
    ]
    new.append(NewTopic(events, num_partitions=1, replication_factor=1))
    for fut in admin.create_topics(new, operation_timeout=30).values():
        fut.result(timeout=30)
    user, password = f"registry-{tag}", uuid.uuid4().hex
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
    )
    for fut in admin.alter_user_scram_credentials([upsert]).values():
        fut.result(timeout=30)
    acls = kafka_acls(
        "registry", input_topic="", processed_topic="", errors_topic="",
        registry_topics=(journal, snapshots, events),
    )  # fmt: skip
    for fut in admin.create_acls(acl_bindings(f"User:{user}", acls)).values():
        fut.result(timeout=30)
    secret_dir = tmp_path / "kafka-credentials"  # the Secret's keys, as Kubernetes mounts them
    secret_dir.mkdir()
    (secret_dir / "sasl.jaas.config").write_text(
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )
    env = {
        "APICURIO_KAFKASQL_TOPIC": journal,
        "APICURIO_KAFKASQL_SNAPSHOTS_TOPIC": snapshots,
        "APICURIO_EVENTS_KAFKA_TOPIC": events,
        "APICURIO_KAFKASQL_TOPIC_AUTO_CREATE": "false",
        "APICURIO_KAFKA_COMMON_SECURITY_PROTOCOL": "SASL_SSL",
        "APICURIO_KAFKA_COMMON_SASL_MECHANISM": "SCRAM-SHA-512",
        # As the chart gives it: the JAAS line is a file of the KafkaUser's Secret, read by
        # Kafka's DirectoryConfigProvider (the password is never an env value).
        "APICURIO_KAFKA_COMMON_CONFIG_PROVIDERS": "secret",
        "APICURIO_KAFKA_COMMON_CONFIG_PROVIDERS_SECRET_CLASS": (
            "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
        ),
        "APICURIO_KAFKA_COMMON_SASL_JAAS_CONFIG": f"$${{secret:{secret_dir}:sasl.jaas.config}}",
        "APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_TYPE": "PEM",
        "APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_LOCATION": kafka.ca,
    }
    prefix = f"secured-{tag}-"
    with running_registry(kafka.bootstrap, tmp_path / "registry", **env) as reg:
        before = {r.name: r.schema_id for r in schema_registry.register(settings(reg, prefix))}
        reg.script("stop")
        reg.script("start")  # the journal read back, in a new group under its prefix
        after = {r.name: r.schema_id for r in schema_registry.register(settings(reg, prefix))}
    assert after == before and len(before) == 3
