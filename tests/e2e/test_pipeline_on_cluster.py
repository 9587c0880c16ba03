"""The deployed pipeline on a real cluster: rollouts, Kafka, metrics, exact counts, autoscaling.

Needs the dev cluster (`hack/kind.sh up && skaffold run`); skipped otherwise (see conftest.py).
Waits are polls with deadlines. The counting test scales the generator to 0 for its duration
(and restores it); the burst test runs a Job that it deletes afterwards.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import (
    METRICS_PORTS,
    SERVICES,
    Cluster,
    condition,
    counts,
    exec_in_pod,
    http_get,
    one_ready_pod,
    ready_pods,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("cluster")]

ROLLOUT_TIMEOUT = 600.0  # a first install pulls Kafka's image and starts the broker
SCALE_TIMEOUT = float(os.environ.get("LOGINPIPE_TEST_E2E_SCALE_TIMEOUT", "600"))
BURST_EVENTS = int(os.environ.get("LOGINPIPE_TEST_E2E_BURST_EVENTS", "1000000"))
BURST_PODS = int(os.environ.get("LOGINPIPE_TEST_E2E_BURST_PODS", "4"))


def metrics(cluster: Cluster, service: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """One pod's /metrics, read through a port-forward: {sample name: {labels: value}}."""
    pod = one_ready_pod(cluster, service)
    text = http_get(cluster, pod, METRICS_PORTS[service], "/metrics")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def device_logins(cluster: Cluster) -> dict[str, int]:
    gauge = metrics(cluster, "aggregator").get("loginpipe_device_logins", {})
    return {dict(labels)["device_type"]: int(v) for labels, v in gauge.items()}


def consumer_autoscaler(cluster: Cluster) -> Any:
    """The HPA that scales the consumer: the chart's (mode hpa) or KEDA's (mode keda); or None."""
    target = cluster.deployment_name("consumer")
    for hpa in cluster.autoscaling.list_namespaced_horizontal_pod_autoscaler(
        cluster.namespace
    ).items:
        ref = hpa.spec.scale_target_ref
        if ref.kind == "Deployment" and ref.name == target:
            return hpa
    return None


# ---- rollouts ------------------------------------------------------------------------------


@pytest.mark.timeout(ROLLOUT_TIMEOUT + 60)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_deployment_rolls_out_completely(cluster: Cluster, service: str) -> None:
    name = cluster.deployment_name(service)

    def probe() -> tuple[bool | None, str]:
        d = cluster.apps.read_namespaced_deployment(name, cluster.namespace)
        want = d.spec.replicas or 0
        s = d.status
        state = (
            f"generation {d.metadata.generation}/{s.observed_generation}, replicas {want}, "
            f"updated {s.updated_replicas}, available {s.available_replicas}, "
            f"ready {s.ready_replicas}"
        )
        done = (
            (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == want
            and (s.available_replicas or 0) == want
            and (s.replicas or 0) == want  # no old pods left
        )
        return (True if done else None), state

    wait_for(f"Deployment {name} to roll out", probe, ROLLOUT_TIMEOUT)


@pytest.mark.timeout(ROLLOUT_TIMEOUT + 60)
def test_redis_statefulset_is_ready_on_its_current_revision(cluster: Cluster) -> None:
    name = f"{cluster.fullname}-redis"
    try:
        cluster.apps.read_namespaced_stateful_set(name, cluster.namespace)
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip(f"no StatefulSet {name}: redis.mode is external")
        raise

    def probe() -> tuple[bool | None, str]:
        st = cluster.apps.read_namespaced_stateful_set(name, cluster.namespace)
        want = st.spec.replicas or 0
        s = st.status
        state = (
            f"ready {s.ready_replicas}/{want}, revision {s.current_revision} -> {s.update_revision}"
        )
        done = (s.ready_replicas or 0) == want and s.current_revision == s.update_revision
        return (True if done else None), state

    wait_for(f"StatefulSet {name} to be ready", probe, ROLLOUT_TIMEOUT)


@pytest.mark.timeout(ROLLOUT_TIMEOUT + 60)
def test_strimzi_reports_the_kafka_cluster_and_its_topics_ready(cluster: Cluster) -> None:
    name = cluster.fullname  # the Kafka CR is named after the release
    group, version = "kafka.strimzi.io", "v1"
    try:
        cluster.custom.get_namespaced_custom_object(
            group, version, cluster.namespace, "kafkas", name
        )
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip(f"no Kafka {name}: kafka.mode is external")
        raise

    def kafka_ready() -> tuple[bool | None, str]:
        k = cluster.custom.get_namespaced_custom_object(
            group, version, cluster.namespace, "kafkas", name
        )
        status = k.get("status") or {}
        ready = condition(k, "Ready")
        current = status.get("observedGeneration") == k["metadata"]["generation"]
        return (True if ready == "True" and current else None), f"Ready={ready}, status={status}"

    wait_for(f"Kafka {name} to be Ready", kafka_ready, ROLLOUT_TIMEOUT, every=5)

    def topics_ready() -> tuple[list[str] | None, str]:
        topics = cluster.custom.list_namespaced_custom_object(
            group,
            version,
            cluster.namespace,
            "kafkatopics",
            label_selector=f"strimzi.io/cluster={name}",
        )["items"]
        states = {t["metadata"]["name"]: condition(t, "Ready") for t in topics}
        done = len(states) >= 3 and all(v == "True" for v in states.values())
        return (sorted(states) if done else None), f"KafkaTopics: {states}"

    names = wait_for(f"the KafkaTopics of {name} to be Ready", topics_ready, ROLLOUT_TIMEOUT)
    assert len(names) >= 3, names


# ---- metrics -------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_serves_metrics_and_reports_ready(cluster: Cluster, service: str) -> None:
    if service == "generator" and not ready_pods(cluster, cluster.deployment_name("generator")):
        pytest.skip("the generator is scaled to 0")
    samples = metrics(cluster, service)
    assert samples["loginpipe_ready"] == {(): 1.0}
    info = samples["loginpipe_build_info"]
    assert [dict(labels)["component"] for labels in info] == [service]


# ---- exact counts --------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_events_sent_are_counted_exactly_once_in_redis(cluster: Cluster) -> None:
    """Quiesce the input (generator to 0), send a known batch, expect exactly its valid events."""
    generator = cluster.deployment_name("generator")
    replicas = cluster.apps.read_namespaced_deployment_scale(
        generator, cluster.namespace
    ).spec.replicas
    cluster.apps.patch_namespaced_deployment_scale(
        generator, cluster.namespace, {"spec": {"replicas": 0}}
    )
    try:
        # No generator pods, then counts that stop moving: everything produced so far is counted.
        wait_for(
            f"{generator} to have no pods",
            lambda: (True if not ready_pods(cluster, generator) else None, "pods still running"),
            180,
        )
        seen: list[dict[str, int]] = []

        def settled() -> tuple[dict[str, int] | None, str]:
            seen.append(counts(cluster))
            last = seen[-4:]
            return (last[-1] if len(last) == 4 and all(c == last[0] for c in last) else None), str(
                last
            )

        before = wait_for("the counts to stop changing", settled, 300, every=5)

        seed = uuid.uuid4().int % 2**31
        pod = one_ready_pod(cluster, "aggregator")
        rc, out, err = exec_in_pod(
            cluster,
            pod,
            # LOGINPIPE_METRICS_PORT=0: the pod's own aggregator already listens on its port.
            ["env", "LOGINPIPE_METRICS_PORT=0", "loginpipe", "generate", "--count", "5000",
             "--rate", "0", "--bad-share", "0.2", "--seed", str(seed), "--summary"],
            timeout=180,
        )  # fmt: skip
        assert rc == 0, f"generate failed ({rc}): {err[-2000:]}"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["delivered"] == summary["total"] == 5000 and summary["failed"] == 0
        valid = summary["valid_by_device"]
        assert summary["invalid"] > 0 and sum(valid.values()) == summary["valid"]
        expected = {d: before.get(d, 0) + valid.get(d, 0) for d in set(before) | set(valid)}

        def arrived() -> tuple[dict[str, int] | None, str]:
            now = counts(cluster)
            over = {d for d in now if now[d] > expected.get(d, 0)}
            assert not over, f"counted more than sent: {now} > {expected} (duplicates?)"
            return (now if now == expected else None), f"{now}, want {expected}"

        wait_for("Redis counts to grow by the batch's valid events", arrived, 300)

        # The aggregator's gauge reports the same stored totals.
        def gauge_caught_up() -> tuple[bool | None, str]:
            shown = device_logins(cluster)
            return (True if shown == expected else None), f"{shown}, want {expected}"

        wait_for("loginpipe_device_logins to show the new totals", gauge_caught_up, 120, every=5)
        assert counts(cluster) == expected  # and nothing more arrived afterwards
    finally:
        cluster.apps.patch_namespaced_deployment_scale(
            generator, cluster.namespace, {"spec": {"replicas": replicas}}
        )


# ---- autoscaling ---------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_consumer_autoscaler_can_read_its_lag_metric(cluster: Cluster) -> None:
    if consumer_autoscaler(cluster) is None:
        pytest.skip("no autoscaler for the consumer: autoscaling.mode is none")

    def probe() -> tuple[Any, str]:
        hpa = consumer_autoscaler(cluster)
        conds = {c.type: (c.status, c.reason) for c in hpa.status.conditions or []}
        external = [m for m in hpa.status.current_metrics or [] if m.type == "External"]
        active = conds.get("ScalingActive", ("?", ""))[0] == "True"
        return (hpa if active and external else None), f"conditions {conds}, metrics {external}"

    hpa = wait_for("the consumer HPA to read its external lag metric", probe, 540, every=5)
    assert hpa.status.current_metrics[0].external.current.average_value is not None


@pytest.mark.timeout(SCALE_TIMEOUT + 300)
def test_a_burst_of_events_scales_the_consumer_out(cluster: Cluster) -> None:
    hpa = consumer_autoscaler(cluster)
    if hpa is None:
        pytest.skip("no autoscaler for the consumer: autoscaling.mode is none")
    consumer = cluster.deployment_name("consumer")
    start = (
        cluster.apps.read_namespaced_deployment(consumer, cluster.namespace).status.replicas or 0
    )
    if start >= hpa.spec.max_replicas:
        pytest.skip(f"{consumer} already runs maxReplicas ({start})")

    # Enough lag for several replicas, whatever the per-replica target.
    target = None
    for m in hpa.spec.metrics or []:
        if m.type == "External" and m.external.target.average_value is not None:
            target = float(parse_quantity(m.external.target.average_value))
    events = max(BURST_EVENTS, math.ceil(20 * (target or 1000) * hpa.spec.max_replicas))
    job = burst_job(cluster, events, BURST_PODS)
    cluster.batch.create_namespaced_job(cluster.namespace, client.V1Job.from_dict(job))
    name = job["metadata"]["name"]
    try:

        def scaled() -> tuple[int | None, str]:
            d = cluster.apps.read_namespaced_deployment(consumer, cluster.namespace)
            h = consumer_autoscaler(cluster)
            seen = (
                f"{consumer} replicas {d.spec.replicas} (started at {start}); HPA desired "
                f"{h.status.desired_replicas}, metrics {h.status.current_metrics}"
            )
            return ((d.spec.replicas or 0) if (d.spec.replicas or 0) > start else None), seen

        replicas = wait_for(f"{consumer} to scale out under lag", scaled, SCALE_TIMEOUT, every=5)
        assert start < replicas <= hpa.spec.max_replicas
    finally:
        cluster.batch.delete_namespaced_job(
            name, cluster.namespace, propagation_policy="Background"
        )


def burst_job(cluster: Cluster, events: int, pods: int) -> dict[str, Any]:
    """A Job of ``pods`` generator pods producing ``events`` in all, as fast as they can.

    Built from the generator Deployment's pod template (same image, config, secrets and
    security context), with its own labels so no Service or monitor selects its pods.
    """
    dep = cluster.apps.read_namespaced_deployment(
        cluster.deployment_name("generator"), cluster.namespace
    )
    spec = cluster.api.sanitize_for_serialization(dep.spec.template.spec)
    container = spec["containers"][0]
    container["args"] = ["generate", "--count", str(math.ceil(events / pods)), "--rate", "0"]
    env = [e for e in container.get("env", []) if e["name"] != "LOGINPIPE_METRICS_PORT"]
    container["env"] = [*env, {"name": "LOGINPIPE_METRICS_PORT", "value": "0"}]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        container.pop(probe, None)
    spec["restartPolicy"] = "Never"
    labels = {
        "app.kubernetes.io/name": "loginpipe-e2e-burst",
        "app.kubernetes.io/part-of": "loginpipe",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"e2e-burst-{uuid.uuid4().hex[:8]}", "labels": labels},
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
