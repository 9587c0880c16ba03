"""The chart's NetworkPolicies, enforced on the project's own Kubernetes, flow by flow.

`make cluster-up` runs kube-network-policies (the agent kind's kindnet enforces policies with) on
the node. A release with the chart's defaults (policies on, default deny in its namespace) runs;
then every flow below is tried with a real TCP connection from inside the pods (`kubectl exec`),
to IP addresses so that DNS and TCP are told apart. A needed flow must connect; a refused one
must time out: the policy drops the connection's first packet, whereas a target that merely had
nothing listening would answer at once (so "refused" fails the test too, as it proves nothing).
Each refused target is also reached by an allowed source, so a refusal is the policy's doing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.conftest import (
    KAFKA_NAMESPACE,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Cluster,
    app_image,
    scraped_every_5s,
    wait_for,
)
from tests.cluster.test_autoscaling_and_monitoring import Prometheus
from tests.cluster.test_chart_on_cluster import Release

pytestmark = pytest.mark.cluster

# Prints "open", "timeout" or "error <errno>" for a TCP connection to HOST PORT.
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(f"error {exc.errno}")
"""
# The same with bash's /dev/tcp, for the Redis image (no Python there).
BASH_PROBE = (
    'if timeout "$3" bash -c "exec 3<>/dev/tcp/$1/$2"; then echo open; '
    "elif [ $? -eq 124 ]; then echo timeout; else echo error; fi"
)
TIMEOUT = 3.0


@pytest.fixture
def guarded(cluster: Cluster, tmp_path: Path) -> Iterator[Release]:
    rel = Release(cluster, tmp_path, "netpol", generator={"rate": 50}, metrics=scraped_every_5s())
    outsider = cluster.namespace("outsider")
    rel.outsider = outsider  # type: ignore[attr-defined]
    try:
        yield rel
    finally:
        cluster.delete_namespace(outsider)
        rel.delete()


def idle_pod(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod of the loginpipe image that only waits (restricted), to connect from."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": RESTRICTED_POD,
            "containers": [
                {
                    "name": "probe",
                    "image": app_image(),
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }


def test_each_needed_flow_connects_and_every_other_is_dropped(
    cluster: Cluster, guarded: Release
) -> None:
    rel = guarded
    ns, outsider = rel.namespace, rel.outsider  # type: ignore[attr-defined]
    agent = cluster.apps.read_namespaced_daemon_set("kube-network-policies", "kube-system")
    assert agent.status.number_ready == 1, "kube-network-policies does not run on the node"
    rel.install()
    rel.wait_ready(4)
    policies = {
        p.metadata.name
        for p in client.NetworkingV1Api(cluster.api).list_namespaced_network_policy(ns).items
    }
    assert f"{rel.name}-default-deny" in policies, policies

    # Probe pods: one unlabelled and one Kafka client in the release's namespace, one elsewhere.
    probes = [
        idle_pod(ns, "stranger", {}),
        idle_pod(ns, "kafka-client", {f"{rel.name}-kafka-client": "true"}),
        idle_pod(outsider, "outsider", {}),
    ]
    for pod in probes:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    for pod in probes:
        meta = pod["metadata"]
        cluster.kubectl(
            "-n", meta["namespace"], "wait", "--for=condition=Ready", f"pod/{meta['name']}",
            "--timeout=120s", timeout=150,
        )  # fmt: skip

    def pod_of(component: str) -> tuple[str, str]:
        pods = cluster.pods(
            ns, f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/component={component}"
        )
        running = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
        assert running, f"no running {component} pod"
        return running[0].metadata.name, running[0].status.pod_ip

    generator, generator_ip = pod_of("generator")
    consumer, consumer_ip = pod_of("consumer")
    aggregator, _ = pod_of("aggregator")
    redis_pod, _ = pod_of("redis")
    redis = cluster.core.read_namespaced_service(f"{rel.name}-redis", ns).spec.cluster_ip
    kafka = cluster.core.read_namespaced_service("kafka", KAFKA_NAMESPACE).spec.cluster_ip
    api_server = cluster.core.read_namespaced_service("kubernetes", "default").spec.cluster_ip

    def connect(namespace: str, pod: str, host: str, port: int) -> str:
        if pod == redis_pod:
            cmd = ["bash", "-c", BASH_PROBE, "probe", host, str(port), str(int(TIMEOUT))]
        else:
            cmd = ["python", "-c", PROBE, host, str(port), str(TIMEOUT)]
        out = cluster.kubectl("-n", namespace, "exec", pod, "--", *cmd, timeout=60, check=False)
        return out.stdout.strip() or f"exec failed: {out.stderr.strip()}"

    # (from namespace, from pod, to, port, what must happen, why)
    flows = [
        (ns, aggregator, redis, 6379, "open", "the aggregator keeps its counts in Redis"),
        (ns, generator, kafka, 9092, "open", "the generator produces to Kafka"),
        (ns, consumer, kafka, 9092, "open", "the consumer reads and writes Kafka"),
        (ns, "kafka-client", kafka, 9092, "open", "a pod labelled as a Kafka client"),
        (outsider, "outsider", kafka, 9092, "open", "control: Kafka answers a pod elsewhere"),
        (outsider, "outsider", api_server, 443, "open", "control: the API server answers"),
        (ns, generator, redis, 6379, "timeout", "only the aggregator may reach Redis"),
        (ns, consumer, redis, 6379, "timeout", "only the aggregator may reach Redis"),
        (ns, "kafka-client", redis, 6379, "timeout", "a Kafka client is no Redis client"),
        (outsider, "outsider", redis, 6379, "timeout", "no other namespace reaches Redis"),
        (outsider, "outsider", consumer_ip, 9102, "timeout", "metrics are Prometheus' only"),
        (ns, aggregator, generator_ip, 9101, "timeout", "no service reaches another's port"),
        (ns, "stranger", kafka, 9092, "timeout", "default deny: an unlabelled pod gets nothing"),
        (ns, generator, api_server, 443, "timeout", "the services never call the API server"),
        (ns, redis_pod, kafka, 9092, "timeout", "Redis connects nowhere"),
    ]
    results = [
        (src, dst, port, connect(namespace, src, dst, port), expected, why)
        for namespace, src, dst, port, expected, why in flows
    ]
    wrong = [r for r in results if r[3] != r[4]]
    table = "\n".join(
        f"  {s} -> {d}:{p}: {got} (want {want}: {why})" for s, d, p, got, want, why in results
    )
    assert not wrong, f"flows not as the policies say:\n{table}"

    # Prometheus (in namespace monitoring, labelled app.kubernetes.io/name=prometheus) may
    # scrape every service's metrics port, and the pipeline runs end to end under the policies.
    prom = Prometheus(cluster)
    try:

        def targets_up() -> list[str] | None:
            up = prom.query(f'up{{namespace="{ns}"}} == 1')
            jobs = sorted({r["metric"].get("service", "") for r in up})
            return jobs if len(jobs) == 3 else None

        jobs = wait_for("Prometheus scraping the three services", targets_up, 120, 2)
    finally:
        prom.close()
    assert jobs == sorted(f"{rel.name}-{c}" for c in ("aggregator", "consumer", "generator"))
    wait_for("counts in Redis", lambda: sum(rel.counts().values()) > 0, 180, 2)
