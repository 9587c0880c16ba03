"""The chart's optional schema registry (Apicurio Registry, KafkaSQL on the release's Kafka):
off by default; when on, its Kafka user, topics, settings, hook Job and network policies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.test_chart import CHART, by_kind, env_of, render, render_error

REGISTRY = "loginpipe-schema-registry"
URL = f"http://{REGISTRY}:8080/apis/ccompat/v7"


@pytest.fixture(scope="module")
def secured() -> list[dict[str, Any]]:
    """ci/schema-registry-values.yaml: the registry over SCRAM and TLS, wire format on."""
    return render(None, "--values", str(CHART / "ci" / "schema-registry-values.yaml"))


def registry_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    [c] = by_kind(objs, "Deployment")[REGISTRY]["spec"]["template"]["spec"]["containers"]
    return c


def k8s_expand(value: str) -> str:
    """What a container sees of an env value without $(VAR) references: Kubernetes turns $$
    into $ (k8s.io/kubernetes third_party/forked/golang/expansion, tryReadVariableName)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value) and value[i + 1] == "$":
            out.append("$")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def test_no_registry_by_default_and_the_consumer_writes_plain_json() -> None:
    objs = render()
    assert REGISTRY not in by_kind(objs, "Deployment")
    assert not by_kind(objs, "Job")
    assert not any("registry" in name for name in by_kind(objs, "KafkaTopic"))
    [c] = by_kind(objs, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(c)
    assert env["LOGINPIPE_CONSUMER_OUTPUT_FORMAT"]["value"] == "json"
    assert "LOGINPIPE_SCHEMA_REGISTRY_URL" not in env


def test_the_registry_stores_in_its_own_topics_that_keep_every_record(secured) -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(secured, "KafkaTopic").values()}
    for name in ("kafkasql-journal", "kafkasql-snapshots"):
        assert topics[name]["partitions"] == 1
        assert topics[name]["config"]["retention.ms"] == -1
        assert topics[name]["config"]["retention.bytes"] == -1
    assert topics["registry-events"]["partitions"] == 1
    env = env_of(registry_container(secured))
    assert env["APICURIO_STORAGE_KIND"]["value"] == "kafkasql"
    assert env["APICURIO_KAFKASQL_TOPIC"]["value"] == "kafkasql-journal"
    assert env["APICURIO_KAFKASQL_SNAPSHOTS_TOPIC"]["value"] == "kafkasql-snapshots"
    assert env["APICURIO_EVENTS_KAFKA_TOPIC"]["value"] == "registry-events"
    assert env["APICURIO_KAFKASQL_TOPIC_AUTO_CREATE"]["value"] == "false"


def test_the_registry_is_a_kafka_user_holding_only_the_registry_rights(secured) -> None:
    from loginpipe.rights import kafka_acls

    user = by_kind(secured, "KafkaUser")["loginpipe-registry"]
    got = {
        (a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"], op)
        for a in user["spec"]["authorization"]["acls"]
        for op in a["operations"]
    }
    want = {
        (a.resource, a.name, a.pattern, op)
        for a in kafka_acls(
            "registry",
            input_topic="",
            processed_topic="",
            errors_topic="",
            registry_topics=("kafkasql-journal", "kafkasql-snapshots", "registry-events"),
        )
        for op in a.operations
    }
    assert got == want


def test_the_registrys_kafka_clients_use_scram_over_tls_with_the_password_in_a_file(
    secured,
) -> None:
    """The settings tests/integration/test_schema_registry.py proves on a SASL_SSL broker."""
    c = registry_container(secured)
    env = env_of(c)
    assert env["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"]["value"] == "loginpipe-kafka-bootstrap:9093"
    assert env["APICURIO_KAFKA_COMMON_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["APICURIO_KAFKA_COMMON_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["APICURIO_KAFKA_COMMON_CONFIG_PROVIDERS_SECRET_CLASS"]["value"] == (
        "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
    )
    # Kubernetes unescapes once; the registry's SmallRye Config turns the $${ left into ${.
    jaas = env["APICURIO_KAFKA_COMMON_SASL_JAAS_CONFIG"]["value"]
    assert k8s_expand(jaas) == "$${secret:/etc/loginpipe/kafka-credentials:sasl.jaas.config}"
    assert env["APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_TYPE"]["value"] == "PEM"
    assert env["APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_LOCATION"]["value"] == (
        "/etc/loginpipe/kafka-ca/ca.crt"
    )
    assert all("valueFrom" not in e for e in c["env"])  # no secret in an env value
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["kafka-credentials"] == "/etc/loginpipe/kafka-credentials"
    volumes = {
        v["name"]: v
        for v in by_kind(secured, "Deployment")[REGISTRY]["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["kafka-credentials"]["secret"]["secretName"] == "loginpipe-registry"
    assert volumes["kafka-credentials"]["secret"]["items"] == [
        {"key": "sasl.jaas.config", "path": "sasl.jaas.config"}
    ]


def test_the_registry_is_probed_on_its_management_port_and_runs_restricted(secured) -> None:
    c = registry_container(secured)
    assert c["image"] == "docker.io/apicurio/apicurio-registry:3.3.3"
    for probe, path in (
        ("startupProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ):
        assert c[probe]["httpGet"] == {"path": path, "port": "management"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "management": 9000}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}


def test_a_hook_job_registers_the_formats_at_install_and_upgrade(secured) -> None:
    [job] = by_kind(secured, "Job").values()
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["schemas", "register"]
    env = env_of(c)
    assert env["LOGINPIPE_SCHEMA_REGISTRY_URL"]["value"] == URL
    assert (
        c["image"]
        == by_kind(secured, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
    )


def test_the_consumer_writes_the_wire_format_with_the_registrys_url(secured) -> None:
    [c] = by_kind(secured, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(c)
    assert env["LOGINPIPE_CONSUMER_OUTPUT_FORMAT"]["value"] == "registry"
    assert env["LOGINPIPE_SCHEMA_REGISTRY_URL"]["value"] == URL


def test_only_the_consumer_and_the_hook_job_reach_the_registry(secured) -> None:
    policies = by_kind(secured, "NetworkPolicy")
    reg = policies[REGISTRY]["spec"]
    [rule] = reg["ingress"]
    allowed = [
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        or next(iter(p["podSelector"]["matchLabels"]))
        for p in rule["from"]
    ]
    assert allowed == ["consumer", "schema-registry-register", "loginpipe-registry-client"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    consumer_egress = policies["loginpipe-consumer"]["spec"]["egress"]
    to_registry = [
        r
        for r in consumer_egress
        if any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            == "schema-registry"
            for p in r.get("to", [])
        )
    ]
    assert [r["ports"] for r in to_registry] == [[{"protocol": "TCP", "port": 8080}]]
    aggregator_egress = policies["loginpipe-aggregator"]["spec"]["egress"]
    assert "schema-registry" not in str(aggregator_egress)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"consumer": {"outputFormat": "registry"}}, "there is no schema registry"),
        (
            {
                "schemaRegistry": {"enabled": True},
                "kafka": {"mode": "external", "external": {"bootstrap": "k:9092"}},
            },
            "schemaRegistry.enabled needs kafka.mode=strimzi",
        ),
    ],
)
def test_a_wire_format_without_a_registry_or_a_registry_without_strimzi_is_refused(
    values: dict[str, Any], message: str
) -> None:
    assert message in render_error(values)


def test_an_external_registrys_url_reaches_the_consumer_with_its_port_open() -> None:
    objs = render(
        {
            "consumer": {"outputFormat": "registry"},
            "schemaRegistry": {"url": "https://registry.example.net/apis/ccompat/v7"},
        }
    )
    assert REGISTRY not in by_kind(objs, "Deployment") and not by_kind(objs, "Job")
    [c] = by_kind(objs, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(c)["LOGINPIPE_SCHEMA_REGISTRY_URL"]["value"].startswith("https://registry.")
    egress = by_kind(objs, "NetworkPolicy")["loginpipe-consumer"]["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in egress


def _settings_env(objs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    maps = by_kind(objs, "ConfigMap")
    out: dict[str, str] = {}
    for src in container.get("envFrom", []):
        out.update(maps[src["configMapRef"]["name"]]["data"])
    out.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return out


def test_the_formats_are_registered_before_the_consumer_starts_and_the_settings_load(
    secured,
) -> None:
    """Both registering containers start on a secured Kafka: their settings pass the
    start-up checks although they mount no Kafka credentials (they never talk to Kafka)."""
    from loginpipe.settings import SchemaSettings, load

    spec = by_kind(secured, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    [job] = by_kind(secured, "Job").values()
    [hook] = job["spec"]["template"]["spec"]["containers"]
    for c in (init, hook):
        assert c["args"] == ["schemas", "register"]
        s = load(SchemaSettings, _settings_env(secured, c))
        assert s.schema_registry_url == URL
    assert (
        "initContainers"
        not in (by_kind(render(), "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"])
    )


def test_the_registrys_topics_keep_the_replicas_of_the_first_install() -> None:
    objs = render({"schemaRegistry": {"enabled": True}, "kafka": {"strimzi": {"replicas": 3}}})
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(objs, "KafkaTopic").values()}
    assert topics["kafkasql-journal"]["replicas"] == 3
    assert topics["kafkasql-journal"]["config"]["min.insync.replicas"] == 2


def test_the_charts_registry_and_an_external_url_together_are_refused() -> None:
    err = render_error(
        {"schemaRegistry": {"enabled": True, "url": "http://r:8080/apis/ccompat/v7"}}
    )
    assert "set one" in err
