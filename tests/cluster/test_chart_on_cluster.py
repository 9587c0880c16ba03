"""The chart on a real Kubernetes (the project's own, `make cluster-up`): real images built from
./Dockerfile, real admission, real probes, the pipeline counting exactly.

What differs from kind + Strimzi: Kafka is one KRaft pod of the cluster's add-ons
(hack/local-cluster/addons.yaml) and the chart runs in kafka.mode=external against it, since
Strimzi's operator and images cannot be had here; its Strimzi objects are only checked by the API
server (the vendored CRDs are installed). Redis runs Debian's redis-server 7.0 instead of the
official 8.4 image.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kubernetes import client

from tests.cluster.conftest import (
    CHART,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Cluster,
    app_image,
    free_port,
    ground_truth,
    local_values,
    tool,
    values_file,
    versions,
    wait_for,
)

pytestmark = pytest.mark.cluster

READY_TIMEOUT = 300
SEED, COUNT, BAD_SHARE, START, RATE = 23, 20_000, 0.2, 1_764_000_000, 500


def api_versions() -> list[str]:
    return [
        arg
        for api in ("monitoring.coreos.com/v1", "keda.sh/v1alpha1", "kafka.strimzi.io/v1")
        for arg in ("--api-versions", api)
    ]


# ---- server-side dry run ------------------------------------------------------------------------


def dry_run(cluster: Cluster, namespace: str, manifests: str) -> Any:
    """`kubectl apply --dry-run=server --validate=strict`: admission and schemas, nothing stored."""
    return cluster.kubectl(
        *("apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-"),
        input=manifests,
        check=False,
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "values", ["default", *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]
)
def test_the_api_server_accepts_every_rendered_object(cluster: Cluster, values: str) -> None:
    """Admission, strict field validation and the CRDs' structural schemas, server-side."""
    ns = cluster.namespace("dryrun")
    try:
        args = [] if values == "default" else ["--values", str(CHART / "ci" / values)]
        kube = versions()["LOCAL_K8S_VERSION"]
        rendered = cluster.helm(
            "template",
            "loginpipe",
            str(CHART),
            "--namespace",
            ns,
            "--kube-version",
            kube,
            *api_versions(),
            *args,
        ).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = sorted({d["kind"] for d in docs})
        # A Pod is admitted only if its ServiceAccount exists, and a dry run creates nothing:
        # create the chart's ServiceAccount for real first (the helm test Pod uses it).
        accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
        if accounts:
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(accounts))
        out = dry_run(cluster, ns, rendered)
        assert out.returncode == 0, f"{values}: {out.stderr}"
        accepted = out.stdout.count("(server dry run)")
        assert accepted == len(docs), out.stdout
        assert "Deployment" in kinds
    finally:
        cluster.delete_namespace(ns)


def test_the_dry_run_rejects_an_unknown_field_of_a_custom_resource(cluster: Cluster) -> None:
    ns = cluster.namespace("dryrun")
    try:
        topic = {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": {"name": "t", "labels": {"strimzi.io/cluster": "x"}},
            "spec": {"partitions": 1, "replicas": 1, "replicationFactor": 3},
        }
        out = dry_run(cluster, ns, yaml.safe_dump(topic))
        assert out.returncode != 0 and "replicationFactor" in out.stderr, out.stdout + out.stderr
    finally:
        cluster.delete_namespace(ns)


# ---- an installed release -----------------------------------------------------------------------


class Release:
    def __init__(self, cluster: Cluster, tmp: Path, prefix: str, **overrides: Any) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.namespace = cluster.namespace(prefix)
        self.name = "loginpipe"
        self.values = local_values(self.namespace, **overrides)

    @property
    def topics(self) -> dict[str, str]:
        return {k: v["name"] for k, v in self.values["topics"].items()}

    def install(self) -> None:
        self.create_topics()
        self._helm("install")

    def upgrade(self) -> None:
        self._helm("upgrade")

    def _helm(self, verb: str) -> None:
        values = values_file(self.tmp, self.values)
        self.cluster.helm(
            verb, self.name, str(CHART), "-n", self.namespace, "-f", values, timeout=600
        )

    def pod_spec(self, name: str, args: list[str], with_config: bool = True) -> dict[str, Any]:
        """A one-off pod of the loginpipe image with the release's settings, restricted."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                # A Kafka client by the chart's NetworkPolicies (DNS and the brokers).
                "labels": {f"{self.name}-kafka-client": "true"},
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": RESTRICTED_POD,
                "containers": [
                    {
                        "name": "loginpipe",
                        "image": app_image(),
                        "imagePullPolicy": "Never",
                        "args": args,
                        "envFrom": [{"configMapRef": {"name": f"{self.name}-config"}}]
                        if with_config
                        else [],
                        "env": [
                            {
                                "name": "LOGINPIPE_KAFKA_BOOTSTRAP",
                                "value": self.values["kafka"]["external"]["bootstrap"],
                            },
                            {"name": "LOGINPIPE_TOPIC_INPUT", "value": self.topics["input"]},
                            {
                                "name": "LOGINPIPE_TOPIC_PROCESSED",
                                "value": self.topics["processed"],
                            },
                            {"name": "LOGINPIPE_TOPIC_ERRORS", "value": self.topics["errors"]},
                            {"name": "LOGINPIPE_TOPIC_REPLAYED", "value": self.topics["replayed"]},
                            {"name": "LOGINPIPE_METRICS_PORT", "value": "0"},
                        ],
                        "securityContext": RESTRICTED_CONTAINER,
                    }
                ],
            },
        }

    def run_pod(self, name: str, args: list[str], with_config: bool = True) -> str:
        """Run a one-off pod to completion; its log."""
        spec = self.pod_spec(name, args, with_config)
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(spec))

        def done() -> str | None:
            pod = self.cluster.core.read_namespaced_pod(name, self.namespace)
            return pod.status.phase if pod.status.phase in ("Succeeded", "Failed") else None

        phase = wait_for(f"pod {name} to finish", done, 300)
        log = self.cluster.logs(self.namespace, name)
        assert phase == "Succeeded", f"{name}: {phase}\n{log[-3000:]}"
        return log

    def create_topics(self) -> None:
        # kafka.mode=external: the topics are the operator's to create, as on any existing Kafka.
        self.run_pod("topics", ["topics", "--partitions", "6", "--replication", "1"], False)

    def ready_pods(self) -> list[str]:
        pods = self.cluster.pods(self.namespace, f"app.kubernetes.io/instance={self.name}")
        running = [
            p for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
        ]
        ready = [
            p.metadata.name
            for p in running
            if all(c.ready for c in (p.status.container_statuses or []))
        ]
        return ready if len(ready) == len(running) and running else []

    def wait_ready(self, expected: int) -> list[str]:
        def check() -> list[str] | None:
            ready = self.ready_pods()
            return ready if len(ready) == expected else None

        try:
            return wait_for(f"{expected} Ready pods in {self.namespace}", check, READY_TIMEOUT, 2)
        except BaseException:
            print(self.cluster.explain(self.namespace))  # shown on failure
            raise

    def counts(self) -> dict[str, int]:
        out = self.cluster.kubectl(
            "-n",
            self.namespace,
            "exec",
            f"deploy/{self.name}-aggregator",
            "--",
            "loginpipe",
            "counts",
            "--json",
            check=False,
        )
        return orjson.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}

    def redis_password(self) -> str:
        secret = self.cluster.core.read_namespaced_secret(f"{self.name}-redis", self.namespace)
        return base64.b64decode(secret.data["redis-password"]).decode()

    def delete(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait", check=False)
        self.cluster.delete_namespace(self.namespace)
        self.cluster.recycle_volumes(self.namespace)


@pytest.fixture
def release(cluster: Cluster, tmp_path: Path) -> Iterator[Any]:
    made: list[Release] = []

    def make(prefix: str, **overrides: Any) -> Release:
        rel = Release(cluster, tmp_path, prefix, **overrides)
        made.append(rel)
        return rel

    yield make
    for rel in made:
        rel.delete()


def http_get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # loopback: the port-forward
            return bytes(resp.read())
    except OSError:
        return None


@pytest.mark.timeout(1500)
def test_the_chart_runs_restricted_serves_metrics_passes_helm_test_and_upgrades_keeping_redis(
    cluster: Cluster, release: Any
) -> None:
    rel = release("lp", generator={"rate": 200})
    rel.install()
    rel.wait_ready(4)  # generator, consumer, aggregator, redis: every probe passes
    components = sorted(
        p.metadata.labels["app.kubernetes.io/component"]
        for p in cluster.pods(rel.namespace, f"app.kubernetes.io/instance={rel.name}")
    )
    assert components == ["aggregator", "consumer", "generator", "redis"], components
    ns = cluster.core.read_namespace(rel.namespace)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_for("counts in Redis", lambda: sum(rel.counts().values()) > 0, 180, 2)

    # kubectl port-forward to the consumer's metrics port, as the README tells users.
    port = free_port()
    forward = subprocess.Popen(
        [
            tool("kubectl"),
            "-n",
            rel.namespace,
            "port-forward",
            f"svc/{rel.name}-consumer",
            f"{port}:9102",
        ],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = wait_for(
            "the consumer's /metrics through port-forward",
            lambda: http_get(f"http://127.0.0.1:{port}/metrics"),
            60,
        )
        text = body.decode()
        assert 'loginpipe_build_info{component="consumer"' in text
        assert re.search(r"^loginpipe_events_valid_total\{", text, re.M), text[:2000]
    finally:
        forward.terminate()
        forward.wait(10)
        if forward.stdout is not None:
            forward.stdout.close()

    # helm test: one valid and one invalid event routed end to end.
    out = cluster.helm(
        "test", rel.name, "-n", rel.namespace, "--logs", "--timeout", "5m", timeout=400
    )
    assert re.search(r"Phase:\s+Succeeded", out.stdout), out.stdout
    assert "POD LOGS: loginpipe-routing-test" in out.stdout, out.stdout

    # A replay run started from its suspended CronJob, as the README says: it reads the errors
    # (today's rules wrote them, so none is valid now) and routes none.
    ns_args = ("-n", rel.namespace)
    cluster.kubectl(*ns_args, "create", "job", f"--from=cronjob/{rel.name}-replay", "replay-1")
    cluster.kubectl(
        *ns_args, "wait", "--for=condition=Complete", "job/replay-1", "--timeout=180s", timeout=200
    )
    log = cluster.kubectl(*ns_args, "logs", "job/replay-1").stdout
    [line] = [x for x in log.splitlines() if x.startswith("{") and '"replayed"' in x]
    report = json.loads(line)
    assert report["read"] > 0 and report["replayed"] == 0, report
    assert report["still_invalid"] + report["not_replayable"] == report["read"], report
    cluster.kubectl(*ns_args, "delete", "job", "replay-1", "--cascade=foreground", "--wait")

    # helm upgrade keeps Redis' data and password; Redis restarted on purpose keeps them too.
    before_counts, before_password = rel.counts(), rel.redis_password()
    redis_pod = f"{rel.name}-redis-0"
    uid = cluster.core.read_namespaced_pod(redis_pod, rel.namespace).metadata.uid
    rel.values["generator"]["rate"] = 100
    rel.upgrade()
    assert rel.redis_password() == before_password
    cluster.core.delete_namespaced_pod(redis_pod, rel.namespace)
    wait_for(
        "a new Redis pod",
        lambda: (
            (p := cluster.core.read_namespaced_pod(redis_pod, rel.namespace)).metadata.uid != uid
            and all(c.ready for c in (p.status.container_statuses or [{}]) if hasattr(c, "ready"))
        ),
        READY_TIMEOUT,
        2,
    )
    rel.wait_ready(4)
    after = wait_for("counts after the upgrade", rel.counts, 120, 2)
    for device, n in before_counts.items():
        assert after.get(device, 0) >= n, (before_counts, after)
    assert rel.redis_password() == before_password

    # helm uninstall removes everything but what the README says it keeps: Redis' claim.
    cluster.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", timeout=300)

    def left() -> list[str]:
        return cluster.kubectl(
            *("-n", rel.namespace, "get", "all,configmap,secret,serviceaccount,pdb,pvc"),
            *("-l", f"app.kubernetes.io/instance={rel.name}", "-o", "name"),
        ).stdout.split()

    # Helm never removes hook resources: the last `helm test` pod stays until deleted.
    kept = [f"persistentvolumeclaim/data-{rel.name}-redis-0", f"pod/{rel.name}-routing-test"]
    wait_for("the pods to be gone after the uninstall", lambda: sorted(left()) == kept, 120, 2)


@pytest.mark.timeout(1500)
def test_counts_are_exact_with_a_consumer_and_the_aggregator_killed_mid_stream(
    cluster: Cluster, release: Any
) -> None:
    rel = release("exact", generator={"enabled": False}, consumer={"replicaCount": 2})
    rel.install()
    rel.wait_ready(4)  # two consumers, the aggregator, Redis
    truth = ground_truth(COUNT, SEED, BAD_SHARE, START)

    gen = rel.pod_spec(
        "generator-run",
        [
            "generate",
            f"--count={COUNT}",
            f"--rate={RATE}",
            f"--seed={SEED}",
            f"--bad-share={BAD_SHARE}",
            f"--start-time={START}",
            "--summary",
        ],
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(gen))
    # Mid-stream: once a quarter of the events are counted, kill a consumer and the aggregator.
    wait_for(
        "a quarter of the events counted",
        lambda: sum(rel.counts().values()) > truth.valid // 4,
        180,
        0.5,
    )
    killed = []
    for component in ("consumer", "aggregator"):
        pod = rel.cluster.pods(
            rel.namespace,
            f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/component={component}",
        )[0]
        cluster.core.delete_namespaced_pod(pod.metadata.name, rel.namespace, grace_period_seconds=0)
        killed.append(pod.metadata.name)
    assert sum(rel.counts().values() or [0]) < truth.valid, "the kills came after the stream ended"

    def generator_done() -> str | None:
        pod = cluster.core.read_namespaced_pod("generator-run", rel.namespace)
        return pod.status.phase if pod.status.phase in ("Succeeded", "Failed") else None

    assert wait_for("the generator to finish", generator_done, 300) == "Succeeded"
    summary = orjson.loads(cluster.logs(rel.namespace, "generator-run").strip().splitlines()[-1])
    assert summary["delivered"] == COUNT and summary["failed"] == 0
    assert summary["valid_by_device"] == dict(truth.valid_by_device)

    final = wait_for(
        "Redis counts to equal the generator's ground truth",
        lambda: (c := rel.counts()) == dict(truth.valid_by_device) and c,
        300,
        2,
    )
    assert final == dict(truth.valid_by_device)
    # The killed pods were replaced, not restarted in place.
    for name in killed:
        with pytest.raises(client.ApiException):
            cluster.core.read_namespaced_pod(name, rel.namespace)
