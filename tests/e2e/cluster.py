"""Access to the dev cluster for the e2e tests: the API clients, and the few operations the
tests need (poll with a deadline, exec into a pod, HTTP GET through a port-forward).

Everything goes through the Kubernetes API with the `kubernetes` client: no kubectl, no local
ports, so the tests run the same from a laptop or from a pod in the cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

T = TypeVar("T")

SERVICES = ("generator", "consumer", "aggregator")
METRICS_PORTS = {"generator": 9101, "consumer": 9102, "aggregator": 9103}


@dataclass(frozen=True)
class Cluster:
    """The API clients and the names of the deployed release."""

    api: client.ApiClient
    namespace: str
    release: str
    context: str

    @property
    def fullname(self) -> str:
        # The chart's standard fullname helper: the release name if it contains the chart name.
        return self.release if "loginpipe" in self.release else f"{self.release}-loginpipe"

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def autoscaling(self) -> client.AutoscalingV2Api:
        return client.AutoscalingV2Api(self.api)

    def deployment_name(self, service: str) -> str:
        return f"{self.fullname}-{service}"


def wait_for(
    what: str,
    probe: Callable[[], tuple[T | None, str]],
    timeout: float,
    every: float = 2.0,
) -> T:
    """Poll ``probe`` until it returns a value; fail after ``timeout`` seconds.

    ``probe`` returns ``(value, state)``: a value (anything but None) ends the wait, ``state``
    describes what was seen, for the failure message. API errors count as "not yet".
    """
    deadline = time.monotonic() + timeout
    state = "never polled"
    while True:
        try:
            value, state = probe()
        except ApiException as exc:
            value, state = None, f"API error {exc.status}: {exc.reason}"
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}; last seen: {state}")
        time.sleep(every)  # the poll interval, not a synchronisation


def selector(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def ready_pods(cluster: Cluster, deployment: str) -> list[client.V1Pod]:
    """Running, Ready pods of a Deployment (found through its own selector), oldest first."""
    dep = cluster.apps.read_namespaced_deployment(deployment, cluster.namespace)
    pods = cluster.core.list_namespaced_pod(
        cluster.namespace, label_selector=selector(dep.spec.selector.match_labels)
    ).items
    ready = [
        p
        for p in pods
        if p.status.phase == "Running"
        and p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return sorted(ready, key=lambda p: p.metadata.creation_timestamp)


def one_ready_pod(cluster: Cluster, service: str, timeout: float = 300) -> client.V1Pod:
    name = cluster.deployment_name(service)

    def probe() -> tuple[client.V1Pod | None, str]:
        pods = ready_pods(cluster, name)
        return (pods[0] if pods else None), f"{len(pods)} ready pod(s) of {name}"

    return wait_for(f"a ready pod of {name}", probe, timeout)


def exec_in_pod(
    cluster: Cluster, pod: client.V1Pod, command: list[str], timeout: float = 120
) -> tuple[int, str, str]:
    """Run ``command`` in the pod's first container; (exit code, stdout, stderr)."""
    ws = stream(
        cluster.core.connect_get_namespaced_pod_exec,
        pod.metadata.name,
        cluster.namespace,
        container=pod.spec.containers[0].name,
        command=command,
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    out: list[str] = []
    err: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while ws.is_open():
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"{' '.join(command)} did not finish in {timeout:g}s in {pod.metadata.name}"
                )
            ws.update(timeout=1)
            if ws.peek_stdout():
                out.append(ws.read_stdout())
            if ws.peek_stderr():
                err.append(ws.read_stderr())
        rc = ws.returncode
    finally:
        ws.close()
    return (rc if rc is not None else -1), "".join(out), "".join(err)


def http_get(cluster: Cluster, pod: client.V1Pod, port: int, path: str, timeout: float = 30) -> str:
    """GET ``path`` from the pod's ``port`` through an API-server port-forward; the body."""
    pf = portforward(
        cluster.core.connect_get_namespaced_pod_portforward,
        pod.metadata.name,
        cluster.namespace,
        ports=str(port),
    )
    sock = pf.socket(port)
    try:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    finally:
        sock.close()
        pf.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    assert " 200 " in f"{status} ", (
        f"GET {path} on {pod.metadata.name}:{port}: {status or pf.error(port)}"
    )
    return body.decode()


def counts(cluster: Cluster) -> dict[str, int]:
    """The login counts in Redis, read by `loginpipe counts --json` in an aggregator pod."""
    pod = one_ready_pod(cluster, "aggregator")
    rc, out, err = exec_in_pod(cluster, pod, ["loginpipe", "counts", "--json"], timeout=60)
    assert rc == 0, f"loginpipe counts failed ({rc}): {err.strip()}"
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def condition(obj: Mapping[str, Any], kind: str) -> str | None:
    """Status of the condition ``kind`` in a custom object's status (None if absent)."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return None
