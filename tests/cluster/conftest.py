"""The project's own Kubernetes (hack/local-cluster, `make cluster-up`), for the cluster tests.

The tests marked ``cluster`` install the chart with images built from this repository's
Dockerfile into that cluster. Without it they skip with the reason; under CI=true, where
`.ci/run` brings the cluster up first, a missing cluster fails them. `make test` leaves them
out; `make cluster-test` runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from loginpipe.events import GroundTruth, generate
from tests.conftest import require, wait_for

__all__ = ["wait_for"]  # the tests import it from here too

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loginpipe"
STATE = Path(os.environ.get("LOCAL_CLUSTER_STATE", ROOT / ".cache" / "local-cluster"))
KUBECONFIG = STATE / "kubeconfig"
HOME_CACHE = Path(os.environ.get("LOGINPIPE_HOME_CACHE", Path.home() / ".cache" / "loginpipe"))
KAFKA_NAMESPACE = "kafka"
KAFKA_BOOTSTRAP = f"kafka.{KAFKA_NAMESPACE}.svc.cluster.local:9092"
HOW = "run `make cluster-up` first"


def versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def tool(name: str) -> str:
    """The pinned kubectl (built with the cluster) or helm (hack/tools.sh)."""
    if name == "kubectl":
        path = (
            HOME_CACHE / "cluster" / "bin" / f"kubernetes-v{versions()['LOCAL_K8S_VERSION']}" / name
        )
    else:
        path = ROOT / ".cache" / "tools" / "bin" / name
    found = str(path) if path.exists() else shutil.which(name)
    require(found is not None, f"{name} is not installed: {HOW}")
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ground_truth(count: int, seed: int, bad_share: float, start_time: int) -> GroundTruth:
    """What `loginpipe generate` with these arguments produces: counts per device, by reason."""
    truth = GroundTruth()
    for ev in generate(count, seed=seed, bad_share=bad_share, start_time=start_time):
        truth.add(ev)
    return truth


def app_image() -> str:
    """The loginpipe image `make cluster-up` built from ./Dockerfile (its content-keyed tag)."""
    key_file = HOME_CACHE / "cluster" / "images" / "loginpipe.key"
    require(key_file.exists(), f"the loginpipe image was not built: {HOW}")
    return f"localhost/loginpipe:{key_file.read_text().strip()}"


@dataclass
class Cluster:
    api: client.ApiClient
    kubeconfig: Path
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    batch: client.BatchV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(ROOT / ".cache" / "helm"),
            "HELM_CONFIG_HOME": str(ROOT / ".cache" / "helm" / "config"),
            "HELM_DATA_HOME": str(ROOT / ".cache" / "helm" / "data"),
        }

    def run(
        self, *cmd: str, input: str | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        exe = tool(cmd[0])
        proc = subprocess.run(
            [exe, *cmd[1:]],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check:
            assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kw)

    def namespace(self, prefix: str, restricted: bool = True) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if restricted else {}
        if restricted:
            labels["pod-security.kubernetes.io/enforce-version"] = "latest"
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name, grace_period_seconds=0)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def recycle_volumes(self, namespace: str) -> None:
        """Make the pre-made volumes a deleted namespace's claims held available again.

        The local cluster has no provisioner: its volumes are `Retain`ed, so a claim deleted
        with its namespace leaves its volume `Released` for good. Emptied and unbound here, it
        serves the next test (repeated runs on one cluster would otherwise run out).
        """

        def gone() -> bool:
            try:
                self.core.read_namespace(namespace)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_for(f"namespace {namespace} to be deleted", gone, 180, 1)
        for pv in self.core.list_persistent_volume().items:
            ref = pv.spec.claim_ref
            if pv.status.phase != "Released" or ref is None or ref.namespace != namespace:
                continue
            folder = Path(pv.spec.host_path.path)
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            self.core.patch_persistent_volume(
                pv.metadata.name, [{"op": "remove", "path": "/spec/claimRef"}]
            )

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def logs(self, namespace: str, pod: str) -> str:
        return str(self.core.read_namespaced_pod_log(pod, namespace))

    def explain(self, namespace: str) -> str:
        """What is wrong in a namespace, for failure messages: pods, their states and events."""
        out = self.kubectl("-n", namespace, "get", "pods,events", "-o", "wide", check=False)
        return out.stdout + out.stderr


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    require(KUBECONFIG.exists(), f"no local cluster (no {KUBECONFIG}): {HOW}")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=cfg)
    api = client.ApiClient(cfg)
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:  # the API server is not there
        require(False, f"the local cluster does not answer ({exc}): {HOW}")
    yield Cluster(api, KUBECONFIG)
    api.close()


def values_file(tmp: Path, values: dict[str, Any]) -> str:
    path = tmp / f"values-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(values))
    return str(path)


def local_values(namespace: str, **overrides: Any) -> dict[str, Any]:
    """The chart on the local cluster: the images built here, the Kafka of `cluster-up`."""
    repo, _, tag = app_image().partition(":")
    values: dict[str, Any] = {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "kafka": {"mode": "external", "external": {"bootstrap": KAFKA_BOOTSTRAP}},
        "redis": {
            "internal": {
                "image": {
                    "repository": "localhost/loginpipe-redis",
                    "tag": f"7-{versions()['LOCAL_DEBIAN_SUITE']}",
                    "digest": "",
                    "pullPolicy": "Never",
                }
            }
        },
        # Each release its own topics and groups on the shared broker.
        "topics": {
            "input": {"name": f"user-login-{namespace}"},
            "processed": {"name": f"user-login-processed-{namespace}"},
            "errors": {"name": f"user-login-errors-{namespace}"},
            "replayed": {"name": f"user-login-replayed-{namespace}"},
        },
        "replay": {"transactionalId": f"loginpipe-replay-{namespace}"},
        "consumer": {"group": f"loginpipe-consumer-{namespace}"},
        "aggregator": {"group": f"loginpipe-aggregator-{namespace}"},
        # The NetworkPolicies (on by default) point the services at the broker's namespace.
        "networkPolicy": {
            "kafka": {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": KAFKA_NAMESPACE}
                        }
                    }
                ]
            }
        },
    }
    return deep_merge(values, overrides)


# A pod of ours that passes Pod Security `restricted`: its pod and container security contexts.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def scraped_every_5s() -> dict[str, Any]:
    """`metrics` values: ServiceMonitors that the cluster's Prometheus selects, every 5 s."""
    return {
        "serviceMonitor": {
            "enabled": True,
            "interval": "5s",
            "scrapeTimeout": "4s",
            "additionalLabels": {"release": "kube-prometheus-stack"},
        }
    }


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
