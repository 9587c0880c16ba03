"""The chart's behaviour, specified by rendering it with given values and reading the objects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.e2e.test_dev_loop_files import by_name, skaffold_variants

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loginpipe"
LOCAL_HELM = ROOT / ".cache" / "tools" / "bin" / "helm"  # hack/tools.sh links the pinned one
API_VERSIONS = ["monitoring.coreos.com/v1", "keda.sh/v1alpha1", "kafka.strimzi.io/v1"]
SERVICES = ("generator", "consumer", "aggregator")
PORTS = {"generator": 9101, "consumer": 9102, "aggregator": 9103}


def helm() -> str:
    found = str(LOCAL_HELM) if LOCAL_HELM.exists() else shutil.which("helm")
    require(found is not None, "helm is not installed: run `make tools`")
    assert found is not None
    return found


def render_raw(
    *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [helm(), "template", "loginpipe", str(CHART), "--namespace", "loginpipe"]
    cmd += ["--kube-version", "1.33.0"]
    for api in API_VERSIONS:
        cmd += ["--api-versions", api]
    cmd += list(args)
    if values is not None:
        cmd += ["--values", "-"]
    return subprocess.run(
        cmd,
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".cache/helm")},
    )


def render(values: dict[str, Any] | None = None, *args: str) -> list[dict[str, Any]]:
    out = render_raw(*args, values=values)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_error(values: dict[str, Any]) -> str:
    out = render_raw(values=values)
    assert out.returncode != 0, "the chart rendered values it should have rejected"
    return out.stderr


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield f"Pod/{o['metadata']['name']}", o["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def monitored() -> list[dict[str, Any]]:
    return render(None, "--values", str(CHART / "ci" / "hpa-monitoring-values.yaml"))


def test_the_three_services_are_deployed_with_the_contract_names(default) -> None:
    deployments = by_kind(default, "Deployment")
    services = by_kind(default, "Service")
    for svc in SERVICES:
        assert f"loginpipe-{svc}" in deployments
        assert f"loginpipe-{svc}" in services


def test_selectors_are_minimal_and_stable_across_versions(default) -> None:
    allowed = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }
    for name, obj in {**by_kind(default, "Deployment"), **by_kind(default, "StatefulSet")}.items():
        selector = obj["spec"]["selector"]["matchLabels"]
        assert set(selector) == allowed, name
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    for name, svc in by_kind(default, "Service").items():
        assert set(svc["spec"]["selector"]) <= allowed, name
    bumped = render({"image": {"tag": "9.9.9"}})
    for name, obj in by_kind(bumped, "Deployment").items():
        assert obj["spec"]["selector"] == by_kind(default, "Deployment")[name]["spec"]["selector"]


STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}


def test_every_object_carries_the_standard_labels(default) -> None:
    for o in default:
        labels = o["metadata"].get("labels", {})
        keys = [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
        ]
        # Strimzi copies its CRs' labels to the Kafka pods: no helm.sh/chart there (see below).
        if o["kind"] not in STRIMZI_KINDS:
            keys.append("helm.sh/chart")
        for key in keys:
            assert key in labels, f"{o['kind']}/{o['metadata']['name']} lacks {key}"


def test_every_pod_runs_restricted_with_probes(default) -> None:
    specs = list(pod_specs(default))
    assert len(specs) >= 4
    for name, spec in specs:
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{name}/{c['name']} needs a numeric UID"
            assert c.get("resources", {}).get("requests"), f"{name}/{c['name']} has no requests"
            if not name.startswith("Pod/"):
                assert "livenessProbe" in c and "readinessProbe" in c, f"{name}/{c['name']}"


def test_service_pods_probe_their_health_endpoints_and_mount_no_token(default) -> None:
    for svc in SERVICES:
        dep = by_kind(default, "Deployment")[f"loginpipe-{svc}"]
        spec = dep["spec"]["template"]["spec"]
        assert spec.get("automountServiceAccountToken") is False
        [c] = spec["containers"]
        assert (
            c["args"][0]
            == {"generator": "generate", "consumer": "consume", "aggregator": "aggregate"}[svc]
        )
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http-metrics"] == PORTS[svc]
        assert env_of(c)["LOGINPIPE_METRICS_PORT"]["value"] == str(PORTS[svc])
        assert spec["terminationGracePeriodSeconds"] >= 15
        assert "checksum/config" in dep["spec"]["template"]["metadata"]["annotations"]


def test_the_config_checksum_changes_when_the_config_does(default) -> None:
    changed = render({"config": {"logLevel": "DEBUG"}})
    for svc in SERVICES:
        a = by_kind(default, "Deployment")[f"loginpipe-{svc}"]["spec"]["template"]["metadata"]
        b = by_kind(changed, "Deployment")[f"loginpipe-{svc}"]["spec"]["template"]["metadata"]
        assert a["annotations"]["checksum/config"] != b["annotations"]["checksum/config"]


def test_the_consumer_transactional_id_is_left_to_the_pod_name(default) -> None:
    c = by_kind(default, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"]
    env = env_of(c["containers"][0])
    assert "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID" not in env
    config = by_kind(default, "ConfigMap")
    assert all(
        "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID" not in cm.get("data", {}) for cm in config.values()
    )


def _service_env(objs: list[dict[str, Any]], svc: str) -> dict[str, str]:
    """The LOGINPIPE_* values a service's container sees: its ConfigMaps, then its env."""
    dep = by_kind(objs, "Deployment")[f"loginpipe-{svc}"]
    [c] = dep["spec"]["template"]["spec"]["containers"]
    maps = by_kind(objs, "ConfigMap")
    out: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            out.update(maps[src["configMapRef"]["name"]]["data"])
    for e in c.get("env", []):
        out[e["name"]] = e.get("value", "<from secret>" if "valueFrom" in e else "")
    return out


def test_only_known_settings_reach_the_services(default) -> None:
    from loginpipe.settings import known_variables

    for svc in SERVICES:
        unknown = {k for k in _service_env(default, svc) if k.startswith("LOGINPIPE_")}
        unknown -= known_variables()
        assert not unknown, f"{svc} would refuse to start on {unknown}"


def test_topic_names_and_bootstrap_agree_between_strimzi_and_the_services(default) -> None:
    kafka = by_kind(default, "Kafka")
    [kafka_name] = kafka
    topics = {t["spec"].get("topicName", n): t for n, t in by_kind(default, "KafkaTopic").items()}
    for t in topics.values():
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka_name
    for svc in SERVICES:
        env = _service_env(default, svc)
        assert env["LOGINPIPE_KAFKA_BOOTSTRAP"].startswith(f"{kafka_name}-kafka-bootstrap")
        for var in ("LOGINPIPE_TOPIC_INPUT", "LOGINPIPE_TOPIC_PROCESSED", "LOGINPIPE_TOPIC_ERRORS"):
            assert (
                env.get(
                    var,
                    {
                        "LOGINPIPE_TOPIC_INPUT": "user-login",
                        "LOGINPIPE_TOPIC_PROCESSED": "user-login-processed",
                        "LOGINPIPE_TOPIC_ERRORS": "user-login-errors",
                    }[var],
                )
                in topics
            )
    pools = by_kind(default, "KafkaNodePool")
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka_name for p in pools.values())
    spec = kafka[kafka_name]["spec"]["kafka"]
    assert spec["version"] == "4.3.1"
    assert str(spec["config"]["auto.create.topics.enable"]).lower() == "false"
    assert "kafkaExporter" in kafka[kafka_name]["spec"]


def test_renamed_topics_reach_both_strimzi_and_the_services() -> None:
    objs = render({"topics": {"input": {"name": "logins-in"}}})
    names = {t["spec"].get("topicName", n) for n, t in by_kind(objs, "KafkaTopic").items()}
    assert "logins-in" in names and "user-login" not in names
    for svc in ("generator", "consumer"):
        assert _service_env(objs, svc)["LOGINPIPE_TOPIC_INPUT"] == "logins-in"


def secret_file(spec: dict[str, Any], variable: str) -> dict[str, str]:
    """The Secret and key behind a ``<VAR>_FILE`` setting: its mount, then its volume."""
    [c] = spec["containers"]
    path = env_of(c)[variable + "_FILE"]["value"]
    directory, name = path.rsplit("/", 1)
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == directory]
    assert mount.get("readOnly")
    [vol] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    [item] = [i for i in vol["secret"]["items"] if i["path"] == name]
    assert variable not in env_of(c), f"{variable} is also an env value"
    return {"name": vol["secret"]["secretName"], "key": item["key"]}


def test_credentials_come_from_secrets_never_the_configmap(default) -> None:
    for cm in by_kind(default, "ConfigMap").values():
        assert not any("PASSWORD" in k for k in cm.get("data", {})), cm["metadata"]["name"]
    agg = by_kind(default, "Deployment")["loginpipe-aggregator"]["spec"]["template"]["spec"]
    env = env_of(agg["containers"][0])
    assert secret_file(agg, "LOGINPIPE_REDIS_PASSWORD")
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values())


def test_an_external_kafka_and_redis_replace_strimzi_and_the_statefulset() -> None:
    objs = render(None, "--values", str(CHART / "ci" / "external-values.yaml"))
    assert not by_kind(objs, "Kafka") and not by_kind(objs, "KafkaTopic")
    assert not by_kind(objs, "StatefulSet")
    consumer = by_kind(objs, "Deployment")["loginpipe-consumer"]["spec"]["template"]["spec"]
    assert secret_file(consumer, "LOGINPIPE_KAFKA_SASL_PASSWORD") == {
        "name": "kafka-credentials",
        "key": "password",
    }
    assert secret_file(consumer, "LOGINPIPE_KAFKA_SASL_USERNAME") == {
        "name": "kafka-credentials",
        "key": "username",
    }


def test_an_external_tls_redis_gets_its_ca_and_user_in_the_aggregator_only() -> None:
    objs = render(None, "--values", str(CHART / "ci" / "external-values.yaml"))
    env = _service_env(objs, "aggregator")
    assert env["LOGINPIPE_REDIS_URL"].startswith("rediss://")
    assert env["LOGINPIPE_REDIS_USERNAME"] == "loginpipe-aggregator"
    ca = env["LOGINPIPE_REDIS_SSL_CA_LOCATION"]
    spec = by_kind(objs, "Deployment")["loginpipe-aggregator"]["spec"]["template"]["spec"]
    [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "redis-ca"]
    assert ca == f"{mount['mountPath']}/ca.crt"
    [vol] = [v for v in spec["volumes"] if v["name"] == "redis-ca"]
    assert vol["secret"]["secretName"] == "redis-ca"
    for svc in ("generator", "consumer"):
        assert "LOGINPIPE_REDIS_SSL_CA_LOCATION" not in _service_env(objs, svc)
    err = render_error(
        {
            "redis": {
                "mode": "external",
                "external": {"url": "redis://r:6379/0", "caSecret": {"name": "redis-ca"}},
            }
        }
    )
    assert "rediss://" in err


def test_redis_keeps_an_append_only_file_on_a_volume(default) -> None:
    [sts] = by_kind(default, "StatefulSet").values()
    assert sts["spec"]["volumeClaimTemplates"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert "redis" in c["image"] and "bitnami" not in c["image"]
    assert "appendonly" in " ".join(c.get("args", []) + c.get("command", []))


def test_redis_never_evicts_and_an_evicting_policy_is_refused_at_render(default) -> None:
    conf = by_kind(default, "ConfigMap")["loginpipe-redis"]["data"]["redis.conf"]
    assert "maxmemory-policy noeviction" in conf.splitlines()
    err = render_error(
        {"redis": {"internal": {"extraConfig": "maxmemory 1gb\nmaxmemory-policy allkeys-lru"}}}
    )
    assert "maxmemory-policy allkeys-*" in err
    render({"redis": {"internal": {"extraConfig": "maxmemory-policy volatile-lru"}}})


def test_an_external_redis_cluster_reaches_the_aggregator(default) -> None:
    assert _service_env(default, "aggregator")["LOGINPIPE_REDIS_CLUSTER"] == "false"
    objs = render(
        {"redis": {"mode": "external", "external": {"url": "redis://r:6379/0", "cluster": True}}}
    )
    assert _service_env(objs, "aggregator")["LOGINPIPE_REDIS_CLUSTER"] == "true"


def test_the_charts_redis_acl_rules_are_the_ones_loginpipe_rights_defines() -> None:
    from loginpipe.rights import REDIS_COMMANDS, redis_acl_rules

    shipped = json.loads((CHART / "files" / "redis-acl.json").read_text())
    want = {r: redis_acl_rules(r, "{prefix}") for r in REDIS_COMMANDS}
    assert shipped == want, "charts/loginpipe/files/redis-acl.json is stale: run `make chart-acl`"


def test_the_aggregator_connects_as_its_acl_user_and_the_other_services_hold_no_redis_secret(
    default,
) -> None:
    env = _service_env(default, "aggregator")
    assert env["LOGINPIPE_REDIS_USERNAME"] == "loginpipe-aggregator"
    agg = by_kind(default, "Deployment")["loginpipe-aggregator"]["spec"]["template"]["spec"]
    ref = secret_file(agg, "LOGINPIPE_REDIS_PASSWORD")
    assert ref == {"name": "loginpipe-redis-users", "key": "aggregator-password"}
    for svc in ("generator", "consumer"):
        assert not any(k.startswith("LOGINPIPE_REDIS_PASS") for k in _service_env(default, svc))
    objs = render({"redis": {"internal": {"auth": {"aclUsers": False}}}})
    assert "LOGINPIPE_REDIS_USERNAME" not in _service_env(objs, "aggregator")
    assert "loginpipe-redis-users" not in by_kind(objs, "Secret")


def test_the_charts_redis_gives_each_user_exactly_its_rights_on_a_real_redis(tmp_path) -> None:
    """The StatefulSet's start-up script and redis.conf, run against Debian's redis-server."""
    import redis as redis_lib

    from tests.integration.conftest import free_port, wait_for

    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    objs = render({"config": {"redisKeyPrefix": "lp:"}})
    [sts] = by_kind(objs, "StatefulSet").values()
    [script] = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    conf = by_kind(objs, "ConfigMap")["loginpipe-redis"]["data"]["redis.conf"]
    (tmp_path / "etc" / "redis.conf").write_text(conf.replace("dir /data", f"dir {tmp_path}"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passwords = {"password": "admin-pw", "aggregator-password": "agg-pw"}
    passwords["reader-password"] = "read-pw"
    for name, value in passwords.items():  # the projected Secrets' files
        (secrets / name).write_text(value)

    def local(command: str) -> str:
        return (
            command.replace("/etc/redis/", f"{tmp_path}/etc/")
            .replace("/run/redis/", f"{tmp_path}/run/")
            .replace("/etc/redis-secrets/", f"{secrets}/")
        )

    script = local(script).replace("exec redis-server", "exit 0; redis-server")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert not any("PASSWORD" in e["name"] or "AUTH" in e["name"] for e in container.get("env", []))
    subprocess.run(["sh", "-c", script], check=True)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", str(tmp_path / "run" / "redis.conf"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"

        def client(user: str, password: str) -> Any:
            return redis_lib.Redis.from_url(url, username=user, password=password)

        agg = client("loginpipe-aggregator", "agg-pw")
        reader = client("loginpipe-reader", "read-pw")

        def answers() -> bool:
            try:
                return bool(agg.ping())
            except redis_lib.ConnectionError:  # still starting
                return False

        wait_for("the chart's Redis config to start a server", answers, 10)
        assert agg.hincrby("lp:device_counts", "ios", 2) == 2
        assert reader.hgetall("lp:device_counts") == {b"ios": b"2"}
        for call in (
            lambda: agg.flushall(),
            lambda: agg.config_get("*"),
            lambda: agg.hset("other", "f", 1),
            lambda: reader.hset("lp:device_counts", "ios", 0),
        ):
            with pytest.raises(redis_lib.exceptions.NoPermissionError):
                call()
        with pytest.raises(redis_lib.AuthenticationError):
            client("loginpipe-aggregator", "wrong").ping()
        # The probes authenticate with the mounted password file, and fail without it.
        probe = local(container["readinessProbe"]["exec"]["command"][2]).replace(
            "-p 6379", f"-p {port}"
        )
        assert subprocess.run(["sh", "-c", probe]).returncode == 0
        (secrets / "password").write_text("wrong")
        assert subprocess.run(["sh", "-c", probe], capture_output=True).returncode != 0
    finally:
        server.terminate()
        server.wait(10)


def test_with_scram_each_service_is_its_own_kafka_user_holding_only_its_acls() -> None:
    from loginpipe.rights import KAFKA_ROLES, REGISTRY_ROLE, kafka_acls, strimzi_acls

    shipped = json.loads((CHART / "files" / "kafka-acls.json").read_text())
    roles = (*KAFKA_ROLES, REGISTRY_ROLE)
    assert shipped == {r: strimzi_acls(r) for r in roles}, "run `make chart-acl`"
    objs = render({"kafka": {"strimzi": {"listener": {"authentication": "scram-sha-512"}}}})
    users = by_kind(objs, "KafkaUser")
    assert set(users) == {f"loginpipe-{r}" for r in KAFKA_ROLES}
    [kafka] = by_kind(objs, "Kafka").values()
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    groups = {"consumer": "loginpipe-consumer", "aggregator": "loginpipe-aggregator"}
    for role in KAFKA_ROLES:
        want = {
            (a.resource, a.name, a.pattern, op)
            for a in kafka_acls(
                role,
                input_topic="user-login",
                processed_topic="user-login-processed",
                errors_topic="user-login-errors",
                group=groups.get(role, ""),
                transactional_id_prefix="loginpipe-consumer-",
                group_prefix="helm-test-",
                replayed_topic="user-login-replayed",
                replay_transactional_id="loginpipe-replay",
            )
            for op in a.operations
        }
        got = {
            (a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"], op)
            for a in users[f"loginpipe-{role}"]["spec"]["authorization"]["acls"]
            for op in a["operations"]
        }
        assert got == want, role
    for svc in SERVICES:
        dep = by_kind(objs, "Deployment")[f"loginpipe-{svc}"]["spec"]["template"]["spec"]
        env = env_of(dep["containers"][0])
        assert env["LOGINPIPE_KAFKA_SASL_USERNAME"]["value"] == f"loginpipe-{svc}"
        assert secret_file(dep, "LOGINPIPE_KAFKA_SASL_PASSWORD")["name"] == f"loginpipe-{svc}"
    [pod] = by_kind(objs, "Pod").values()
    assert env_of(pod["spec"]["containers"][0])["LOGINPIPE_KAFKA_SASL_USERNAME"]["value"] == (
        "loginpipe-tester"
    )


def test_service_monitors_scrape_ports_that_the_services_expose(monitored) -> None:
    services = by_kind(monitored, "Service")
    monitors = by_kind(monitored, "ServiceMonitor")
    assert len(monitors) >= 3
    for name, sm in monitors.items():
        sel = sm["spec"]["selector"]["matchLabels"]
        matching = [
            s for s in services.values() if sel.items() <= s["metadata"].get("labels", {}).items()
        ]
        assert matching, f"{name} selects no Service"
        for ep in sm["spec"]["endpoints"]:
            for s in matching:
                assert ep["port"] in {p.get("name") for p in s["spec"]["ports"]}, name


def test_the_consumer_hpa_scales_on_group_lag(monitored) -> None:
    [hpa] = by_kind(monitored, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "loginpipe-consumer"
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    labels = metric["external"]["metric"]["selector"]["matchLabels"]
    assert labels == {"consumergroup": "loginpipe-consumer", "topic": "user-login"}
    assert "behavior" in hpa["spec"]
    dep = by_kind(monitored, "Deployment")["loginpipe-consumer"]
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"


def test_the_consumer_hpa_is_capped_at_the_partition_count() -> None:
    msg = render_error(
        {"autoscaling": {"mode": "hpa", "maxReplicas": 12}, "topics": {"input": {"partitions": 6}}}
    )
    assert "maxReplicas" in msg and "partitions" in msg


def test_keda_mode_renders_a_scaled_object_instead_of_an_hpa() -> None:
    objs = render(None, "--values", str(CHART / "ci" / "keda-values.yaml"))
    assert not by_kind(objs, "HorizontalPodAutoscaler")
    [so] = by_kind(objs, "ScaledObject").values()
    assert so["spec"]["scaleTargetRef"]["name"] == "loginpipe-consumer"
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "loginpipe-consumer"
    assert trigger["metadata"]["topic"] == "user-login"
    assert so["spec"]["maxReplicaCount"] <= 6


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"autoscaling": {"mode": "sometimes"}}, "autoscaling"),
        ({"consumer": {"replicaCount": -1}}, "replicaCount"),
        ({"topics": {"input": {"partitions": 0}}}, "partitions"),
        ({"kafka": {"mode": "external", "external": {"bootstrap": ""}}}, "bootstrap"),
        ({"redis": {"mode": "external", "external": {"url": ""}}}, "url"),
        ({"generator": {"rate": "fast"}}, "rate"),
    ],
)
def test_nonsense_values_are_rejected_with_a_message_naming_them(
    values: dict[str, Any], fragment: str
) -> None:
    assert fragment in render_error(values)


def test_the_prometheus_rule_has_the_five_alerts(monitored) -> None:
    [rule] = by_kind(monitored, "PrometheusRule").values()
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "LoginpipeConsumerLagGrowing",
        "LoginpipeErrorShareHigh",
        "LoginpipeAggregatorStalled",
        "LoginpipeConsumerBacklog",
        "LoginpipeTargetDown",
    }


def test_the_backlog_alert_rests_on_the_services_own_lag_not_kafka_exporter(monitored) -> None:
    [rule] = by_kind(monitored, "PrometheusRule").values()
    [backlog] = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "LoginpipeConsumerBacklog"
    ]
    assert "loginpipe_consumer_lag_messages" in backlog["expr"]
    assert "kafka_consumergroup" not in backlog["expr"]


def test_a_helm_test_hook_checks_routing(default) -> None:
    hooks = [
        o for o in default if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert hooks, "no helm test hook"


def test_the_grafana_dashboard_is_valid_json_for_the_sidecar(monitored) -> None:
    dashboards = [
        cm
        for cm in by_kind(monitored, "ConfigMap").values()
        if cm["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    assert dashboards
    for cm in dashboards:
        for body in cm["data"].values():
            dash = json.loads(body)
            assert dash["panels"]


def test_pod_disruption_budgets_cover_the_consumer_and_aggregator(default) -> None:
    pdbs = by_kind(default, "PodDisruptionBudget")
    assert {"loginpipe-consumer", "loginpipe-aggregator"} <= set(pdbs)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"repository": "r/loginpipe", "tag": "abc"}, "r/loginpipe:abc"),
        (
            {"repository": "r/loginpipe", "tag": "abc@sha256:" + "1" * 64},
            "r/loginpipe:abc@sha256:" + "1" * 64,
        ),
        ({"repository": "r/loginpipe", "tag": "abc@"}, "r/loginpipe:abc"),
        (
            {"repository": "r/loginpipe", "tag": "abc", "digest": "sha256:" + "2" * 64},
            "r/loginpipe:abc@sha256:" + "2" * 64,
        ),
    ],
)
def test_image_references_from_skaffold_and_users_render_correctly(image, expected) -> None:
    objs = render({"image": image})
    dep = by_kind(objs, "Deployment")["loginpipe-consumer"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == expected


# ---- labels that must not roll pods, store lifecycles, finalizers, the dev-loop values -------


def test_strimzi_resources_carry_only_labels_that_never_change_between_releases() -> None:
    """Strimzi copies a CR's labels (all but app.kubernetes.io/* other than part-of) to the pods
    it creates: helm.sh/chart or commonLabels there would roll the broker on every chart change."""
    objs = render(
        {
            "commonLabels": {"team": "logins"},
            "kafka": {"strimzi": {"listener": {"authentication": "scram-sha-512"}}},
        }
    )
    strimzi = [o for o in objs if o["kind"] in STRIMZI_KINDS]
    assert {o["kind"] for o in strimzi} == STRIMZI_KINDS
    allowed = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/part-of",
        "strimzi.io/cluster",
    }
    for o in strimzi:
        labels = o["metadata"]["labels"]
        name = f"{o['kind']}/{o['metadata']['name']}"
        assert "helm.sh/chart" not in labels, name
        assert "team" not in labels, name
        assert set(labels) <= allowed, name
        assert labels["app.kubernetes.io/part-of"] == "loginpipe", name
    # Everything else still carries the chart label and commonLabels.
    for o in objs:
        if o["kind"] not in STRIMZI_KINDS:
            assert o["metadata"]["labels"].get("team") == "logins", o["metadata"]["name"]
    # And an app release changes nothing in them.
    bumped = render(
        {
            "image": {"tag": "9.9.9"},
            "commonLabels": {"team": "logins"},
            "kafka": {"strimzi": {"listener": {"authentication": "scram-sha-512"}}},
        }
    )
    assert [o for o in bumped if o["kind"] in STRIMZI_KINDS] == strimzi


def test_a_new_app_image_leaves_redis_alone(default) -> None:
    """Redis' pod template must not change with the loginpipe image (no restart of Redis)."""
    [sts] = by_kind(default, "StatefulSet").values()
    bumped = render({"image": {"tag": "9.9.9"}})
    [sts2] = by_kind(bumped, "StatefulSet").values()
    assert sts2["spec"]["template"] == sts["spec"]["template"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/version"] == "8.4.0-bookworm"
    assert "helm.sh/chart" not in pod_labels
    for o in default:
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis":
            assert o["metadata"]["labels"]["app.kubernetes.io/version"] == "8.4.0-bookworm", (
                f"{o['kind']}/{o['metadata']['name']}"
            )
    # The app's own objects still carry the app's version.
    dep = by_kind(bumped, "Deployment")["loginpipe-consumer"]
    assert dep["metadata"]["labels"]["app.kubernetes.io/version"] == "9.9.9"


def test_the_redis_checksum_follows_redis_conf_not_the_configmap_labels(default) -> None:
    [sts] = by_kind(default, "StatefulSet").values()
    checksum = sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    relabelled = render({"commonLabels": {"team": "logins"}})
    [sts2] = by_kind(relabelled, "StatefulSet").values()
    assert sts2["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == checksum
    reconfigured = render({"redis": {"internal": {"appendfsync": "always"}}})
    [sts3] = by_kind(reconfigured, "StatefulSet").values()
    assert sts3["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_the_redis_pvc_retention_policy_is_a_value_retaining_by_default(default) -> None:
    [sts] = by_kind(default, "StatefulSet").values()
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    dropped = render(
        {"redis": {"internal": {"persistence": {"retentionPolicy": {"whenDeleted": "Delete"}}}}}
    )
    [sts2] = by_kind(dropped, "StatefulSet").values()
    assert sts2["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert sts2["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    assert "retentionPolicy" in render_error(
        {"redis": {"internal": {"persistence": {"retentionPolicy": {"whenDeleted": "Forget"}}}}}
    )
    # The production default keeps Kafka's data too: the two stores share a lifecycle.
    [pool] = by_kind(default, "KafkaNodePool").values()
    assert pool["spec"]["storage"]["volumes"][0]["deleteClaim"] is False


def _topic_operator_env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    [kafka] = by_kind(objs, "Kafka").values()
    template = kafka["spec"]["entityOperator"]["template"]["topicOperatorContainer"]
    return {e["name"]: e["value"] for e in template["env"]}


def test_topic_operator_finalizers_are_off_by_default_and_can_be_turned_on(default) -> None:
    assert _topic_operator_env(default) == {"STRIMZI_USE_FINALIZERS": "false"}
    on = render({"kafka": {"strimzi": {"topicOperator": {"useFinalizers": True}}}})
    assert _topic_operator_env(on) == {"STRIMZI_USE_FINALIZERS": "true"}


def test_the_startup_timeout_leaves_room_for_two_waits(default) -> None:
    assert _service_env(default, "consumer")["LOGINPIPE_STARTUP_TIMEOUT_SECONDS"] == "25"
    assert render({"config": {"startupTimeoutSeconds": 50}})
    assert "startupTimeoutSeconds" in render_error({"config": {"startupTimeoutSeconds": 51}})


def test_hpa_without_kafka_exporter_is_refused() -> None:
    msg = render_error(
        {
            "autoscaling": {"mode": "hpa"},
            "kafka": {"strimzi": {"kafkaExporter": {"enabled": False}}},
        }
    )
    assert "kafkaExporter" in msg and "autoscaling.mode=hpa" in msg
    # KEDA reads the lag from Kafka itself: no exporter needed.
    assert render(
        {
            "autoscaling": {"mode": "keda"},
            "kafka": {"strimzi": {"kafkaExporter": {"enabled": False}}},
        }
    )


@pytest.mark.parametrize("password", ['pa"ss', "pa\\ss", "pa ss"])
def test_a_redis_password_that_would_break_the_config_file_is_rejected(password: str) -> None:
    assert "password" in render_error({"redis": {"internal": {"auth": {"password": password}}}})


def test_jvm_options_follow_strimzis_schema() -> None:
    objs = render({"kafka": {"strimzi": {"jvmOptions": {"-Xms": "512m", "-Xmx": "512m"}}}})
    [pool] = by_kind(objs, "KafkaNodePool").values()
    assert pool["spec"]["jvmOptions"] == {"-Xms": "512m", "-Xmx": "512m"}
    assert "jvmOptions" in render_error({"kafka": {"strimzi": {"jvmOptions": {"Xmx": "512m"}}}})


def test_the_stall_alert_ignores_commit_marker_lag(monitored) -> None:
    [rule] = by_kind(monitored, "PrometheusRule").values()
    [stalled] = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "LoginpipeAggregatorStalled"
    ]
    assert "> 100" in stalled["expr"] and "> 0\n" not in stalled["expr"]
    custom = render(
        {
            "metrics": {
                "prometheusRule": {
                    "enabled": True,
                    "alerts": {"aggregatorStalled": {"lagThreshold": 500}},
                }
            }
        }
    )
    [rule2] = by_kind(custom, "PrometheusRule").values()
    assert "> 500" in json.dumps(rule2)


def _render_skaffold_release(variant: str) -> list[dict[str, Any]]:
    """The chart as skaffold installs it in a profile: its setValues as --set (image aside)."""
    release = by_name(skaffold_variants()[variant])["loginpipe"]
    args: list[str] = []
    for key, value in release.get("setValues", {}).items():
        args += ["--set", f"{key}={value}"]
    return render(None, *args)


@pytest.mark.parametrize("variant", ["default", "hpa", "minimal"])
def test_the_dev_loop_drops_kafka_and_redis_data_together_on_uninstall(variant: str) -> None:
    """Ctrl-C in `skaffold dev` uninstalls: a kept Kafka PVC crash-loops the next broker (new
    cluster id), a kept Redis holds positions of a Kafka log that is gone. Both go, together."""
    objs = _render_skaffold_release(variant)
    [pool] = by_kind(objs, "KafkaNodePool").values()
    assert pool["spec"]["storage"]["volumes"][0]["deleteClaim"] is True
    [sts] = by_kind(objs, "StatefulSet").values()
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert pool["spec"]["jvmOptions"] == {"-Xms": "512m", "-Xmx": "512m"}
    assert _topic_operator_env(objs)["STRIMZI_USE_FINALIZERS"] == "false"


@pytest.mark.parametrize("variant", ["default", "hpa", "minimal"])
def test_the_dev_loop_judges_the_chart_by_the_status_check_not_helm_wait(variant: str) -> None:
    cfg = skaffold_variants()[variant]
    assert not by_name(cfg)["loginpipe"].get("wait", False)
    assert cfg["deploy"]["tolerateFailuresUntilDeadline"] is True
    # Kafka's cold start (image pull, broker, topics) and the services' restarts until then.
    assert cfg["deploy"]["statusCheckDeadlineSeconds"] >= 900


def test_the_adapter_values_file_points_at_the_same_prometheus_as_skaffold() -> None:
    adapter = yaml.safe_load((ROOT / "k8s" / "prometheus-adapter-values.yaml").read_text())
    release = by_name(skaffold_variants()["hpa"])["prometheus-adapter"]
    assert adapter["prometheus"]["url"] == release["setValues"]["prometheus.url"]
    assert str(adapter["prometheus"]["port"]) == release["setValues"]["prometheus.port"]


# ---- names, bootstrap, grace periods, topic replicas (issue 7) ----------------------------


def render_release(release: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm(), "template", release, str(CHART), "--namespace", "payments"]
        + ["--kube-version", "1.33.0"]
        + [arg for api in API_VERSIONS for arg in ("--api-versions", api)]
        + (["--values", "-"] if values is not None else []),
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".cache/helm")},
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def strimzi_derived_names(objs: list[dict[str, Any]]) -> list[str]:
    """The names Strimzi 1.2.0 gives what it creates for the chart's Kafka and node pool."""
    kafka = next(o for o in objs if o["kind"] == "Kafka")["metadata"]["name"]
    pool = next(o for o in objs if o["kind"] == "KafkaNodePool")
    nodes = pool["spec"]["replicas"]
    pods = [f"{kafka}-{pool['metadata']['name']}-{i}" for i in range(nodes)]
    suffixes = ("kafka-bootstrap", "kafka-brokers", "entity-operator", "kafka-exporter")
    secrets = ("cluster-ca-cert", "clients-ca-cert", "cluster-operator-certs")
    return pods + [f"{kafka}-{s}" for s in (*suffixes, *secrets)]


@pytest.mark.parametrize(
    "release",
    ["loginpipe", "team-payments-prod", "a-release-name-of-fifty-three-characters-abcdefghijk"],
)
def test_every_generated_name_reads_once_and_fits_kubernetes_limit(release: str) -> None:
    assert len(release) <= 53  # helm's own limit on release names
    objs = render_release(release, {"kafka": {"strimzi": {"replicas": 3}}})
    names = [o["metadata"]["name"] for o in objs] + strimzi_derived_names(objs)
    too_long = [n for n in names if len(n) > 63]
    assert not too_long, too_long
    for name in strimzi_derived_names(objs):
        assert "kafka-kafka" not in name and name.count("loginpipe") <= 1, name


def test_kafka_pods_are_named_fullname_kafka_id() -> None:
    objs = render_release("team-payments-prod", {"kafka": {"strimzi": {"replicas": 3}}})
    assert strimzi_derived_names(objs)[:3] == [
        "team-payments-prod-loginpipe-kafka-0",
        "team-payments-prod-loginpipe-kafka-1",
        "team-payments-prod-loginpipe-kafka-2",
    ]
    config = by_kind(objs, "ConfigMap")["team-payments-prod-loginpipe-config"]["data"]
    assert (
        config["LOGINPIPE_KAFKA_BOOTSTRAP"] == "team-payments-prod-loginpipe-kafka-bootstrap:9092"
    )


def test_a_node_pool_name_that_makes_a_name_too_long_is_refused_at_render() -> None:
    err = render_error(
        {"fullnameOverride": "x" * 40, "kafka": {"strimzi": {"nodePoolName": "p" * 30}}}
    )
    assert "more than Kubernetes' 63" in err
    assert "kafka.strimzi.nodePoolName" in err and "fullnameOverride" in err


def test_keda_dials_kafka_by_a_name_that_resolves_from_its_own_namespace() -> None:
    objs = render_release("loginpipe", {"autoscaling": {"mode": "keda"}})
    scaled = next(o for o in objs if o["kind"] == "ScaledObject")
    servers = scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"]
    assert servers == "loginpipe-kafka-bootstrap.payments.svc:9092"
    external = render_release(
        "loginpipe",
        {
            "autoscaling": {"mode": "keda"},
            "kafka": {"mode": "external", "external": {"bootstrap": "broker.example:9092"}},
        },
    )
    scaled = next(o for o in external if o["kind"] == "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == "broker.example:9092"


def test_each_grace_period_outlasts_its_services_longest_shutdown(default) -> None:
    # consumer: commit (30 s budget) + abort on failure (30 s) + close (~10 s);
    # generator: final flush (30 s) + close.
    longest = {"consumer": 70, "generator": 30, "aggregator": 10}
    deployments = by_kind(default, "Deployment")
    for svc, seconds in longest.items():
        grace = deployments[f"loginpipe-{svc}"]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        assert grace > seconds, (svc, grace)


def render_notes(tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it: rendered as a template of a copy of the chart."""
    copy = tmp_path / "loginpipe"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "notes-as-template.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: "
        '{{ include (print $.Template.BasePath "/NOTES.txt") . | toJson }}\n'
    )
    out = subprocess.run(
        [
            helm(),
            "template",
            "loginpipe",
            str(copy),
            *("--namespace", "lp", "--kube-version", "1.33.0"),
            *("--show-only", "templates/notes-as-template.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".cache/helm")},
    )
    assert out.returncode == 0, out.stderr
    return str(yaml.safe_load(out.stdout)["data"]["notes"])


def test_notes_select_strimzis_pods_by_strimzis_own_label(tmp_path: Path) -> None:
    notes = render_notes(tmp_path)
    assert "-l strimzi.io/cluster=loginpipe" in notes
    assert "-l app.kubernetes.io/instance=loginpipe" in notes  # the chart's own pods
    assert "loginpipe errors --since 1h" in notes
    assert "create job --from=cronjob/loginpipe-replay" in notes
    assert "loginpipe-kafka-client=true" in notes  # NetworkPolicies: how a one-off pod gets out


def test_topics_keep_their_own_min_insync_replicas_whatever_the_broker_count() -> None:
    objs = render({"kafka": {"strimzi": {"replicas": 3}}, "topics": {"input": {"replicas": 1}}})
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(objs, "KafkaTopic").values()}
    assert topics["user-login"]["replicas"] == 1
    assert topics["user-login"]["config"]["min.insync.replicas"] == 1
    assert topics["user-login-processed"]["replicas"] == 3
    assert topics["user-login-processed"]["config"]["min.insync.replicas"] == 2
    kafka = next(o for o in objs if o["kind"] == "Kafka")
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2


def test_a_scrape_timeout_longer_than_the_interval_is_refused() -> None:
    # prometheus-operator drops such a ServiceMonitor (InvalidConfiguration): nothing scraped.
    err = render_error({"metrics": {"serviceMonitor": {"enabled": True, "interval": "5s"}}})
    assert "metrics.serviceMonitor.scrapeTimeout (10s)" in err and "interval (5s)" in err
    ok = render(
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "59s"}}}
    )
    assert by_kind(ok, "ServiceMonitor")


# ---- NetworkPolicies ----------------------------------------------------------------------------


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def policies_of(objs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in by_kind(objs, "NetworkPolicy").values() if selects(p, labels)]


def pod_labels(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            out[o["metadata"]["name"]] = o["spec"]["template"]["metadata"]["labels"]
        elif o["kind"] == "Pod":
            out[o["metadata"]["name"]] = o["metadata"]["labels"]
    return out


def egress_ports(objs: list[dict[str, Any]], labels: dict[str, str]) -> set[tuple[str, int]]:
    return {
        (port["protocol"], port["port"])
        for policy in policies_of(objs, labels)
        for rule in policy["spec"].get("egress", [])
        for port in rule["ports"]
    }


def test_every_pod_is_isolated_both_ways_and_the_namespace_denies_by_default(default) -> None:
    deny = by_kind(default, "NetworkPolicy")["loginpipe-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, labels in pod_labels(default).items():
        own = [p for p in policies_of(default, labels) if p["spec"]["podSelector"]]
        assert own, f"{name}: no NetworkPolicy of its own"
        for policy in own:
            assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], policy["metadata"]


def test_each_service_reaches_only_dns_kafka_and_for_the_aggregator_redis(default) -> None:
    labels = pod_labels(default)
    dns = {("UDP", 53), ("TCP", 53)}
    assert egress_ports(default, labels["loginpipe-generator"]) == dns | {("TCP", 9092)}
    assert egress_ports(default, labels["loginpipe-consumer"]) == dns | {("TCP", 9092)}
    assert egress_ports(default, labels["loginpipe-aggregator"]) == dns | {
        ("TCP", 9092),
        ("TCP", 6379),
    }
    assert egress_ports(default, labels["loginpipe-redis"]) == set()
    kafka_rule = by_kind(default, "NetworkPolicy")["loginpipe-consumer"]["spec"]["egress"][1]
    assert kafka_rule["to"] == [
        {
            "podSelector": {
                "matchLabels": {"strimzi.io/cluster": "loginpipe", "strimzi.io/kind": "Kafka"}
            }
        }
    ]


def test_only_the_aggregator_and_labelled_clients_may_connect_to_redis(default) -> None:
    ingress = by_kind(default, "NetworkPolicy")["loginpipe-redis"]["spec"]["ingress"]
    assert ingress == [
        {
            "from": [
                {"podSelector": {"matchLabels": {
                    "app.kubernetes.io/name": "loginpipe",
                    "app.kubernetes.io/instance": "loginpipe",
                    "app.kubernetes.io/component": "aggregator",
                }}},
                {"podSelector": {"matchLabels": {"loginpipe-redis-client": "true"}}},
            ],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }
    ]  # fmt: skip


def test_only_prometheus_may_scrape_the_metrics_ports(default) -> None:
    policies = by_kind(default, "NetworkPolicy")
    for service, port in PORTS.items():
        assert policies[f"loginpipe-{service}"]["spec"]["ingress"] == [
            {
                "from": [
                    {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": port}],
            }
        ]
    strimzi = policies["loginpipe-kafka-cluster"]["spec"]
    assert strimzi["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9404}]
    assert strimzi["egress"][0] == {
        "to": [{"podSelector": {"matchLabels": {"strimzi.io/cluster": "loginpipe"}}}]
    }


def test_an_external_kafka_and_redis_are_reached_on_the_ports_their_addresses_name() -> None:
    peers = [{"ipBlock": {"cidr": "192.0.2.0/24"}}]
    objs = render(
        {
            "kafka": {"mode": "external", "external": {"bootstrap": "k1:9094, k2:9095,k3:9094"}},
            "redis": {"mode": "external", "external": {"url": "rediss://user@r.example:6380/0"}},
            "networkPolicy": {"kafka": {"to": peers}},
        }
    )
    policies = by_kind(objs, "NetworkPolicy")
    assert "loginpipe-kafka-cluster" not in policies and "loginpipe-redis" not in policies
    kafka, redis = policies["loginpipe-aggregator"]["spec"]["egress"][1:]
    assert kafka == {
        "to": peers,
        "ports": [{"protocol": "TCP", "port": 9094}, {"protocol": "TCP", "port": 9095}],
    }
    assert redis == {"ports": [{"protocol": "TCP", "port": 6380}]}  # no `to`: any address
    objs = render(
        {
            "kafka": {"mode": "external", "external": {"bootstrap": "k1:9092"}},
            "redis": {"mode": "external", "external": {"url": "redis://r"}},
        }
    )
    egress = by_kind(objs, "NetworkPolicy")["loginpipe-aggregator"]["spec"]["egress"]
    assert egress[2] == {"ports": [{"protocol": "TCP", "port": 6379}]}


def test_network_policies_can_be_turned_off_or_kept_to_the_releases_own_pods() -> None:
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
    own = by_kind(render({"networkPolicy": {"denyAllInNamespace": False}}), "NetworkPolicy")
    assert own and all(p["spec"]["podSelector"] for p in own.values())


def test_the_dashboards_error_panel_points_at_the_errors_command() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Error share by reason"]
    assert "loginpipe errors" in panel["description"]
    assert "### Looking into the errors: `loginpipe errors`" in (ROOT / "README.md").read_text()


# ---- the replay of error records -----------------------------------------------------------------


def test_the_replay_is_a_suspended_cronjob_started_by_hand_with_its_options_as_values() -> None:
    objs = render(
        {
            "replay": {"reasons": ["invalid_app_version", "invalid_ip"], "since": "2d"},
            "kafka": {"strimzi": {"listener": {"authentication": "scram-sha-512"}}},
        }
    )
    cron = by_kind(objs, "CronJob")["loginpipe-replay"]
    assert cron["spec"]["suspend"] is True and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    [c] = pod["spec"]["containers"]
    assert c["args"] == [
        "replay", "--json", "--quiet", "--reason=invalid_app_version", "--reason=invalid_ip",
        "--since=2d",
    ]  # fmt: skip
    env = env_of(c)
    assert env["LOGINPIPE_REPLAY_TRANSACTIONAL_ID"]["value"] == "loginpipe-replay"
    assert env["LOGINPIPE_KAFKA_SASL_USERNAME"]["value"] == "loginpipe-replayer"
    assert secret_file(pod["spec"], "LOGINPIPE_KAFKA_SASL_PASSWORD")["name"] == "loginpipe-replayer"
    # A Kafka client for the NetworkPolicies, restricted like every pod.
    assert pod["metadata"]["labels"]["loginpipe-kafka-client"] == "true"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    config = by_kind(objs, "ConfigMap")["loginpipe-config"]["data"]
    assert config["LOGINPIPE_TOPIC_REPLAYED"] == "user-login-replayed"
    ledger = by_kind(objs, "KafkaTopic")["user-login-replayed"]["spec"]
    assert ledger["config"]["cleanup.policy"] == "compact"
    assert "retention.ms" not in ledger["config"]


def test_the_replays_reason_values_are_the_reason_codes() -> None:
    from loginpipe.validation import Reason

    schema = json.loads((CHART / "values.schema.json").read_text())
    enum = schema["properties"]["replay"]["properties"]["reasons"]["items"]["enum"]
    assert sorted(enum) == sorted(r.value for r in Reason)
    assert "/replay/reasons" in render_error({"replay": {"reasons": ["bogus"]}})
