"""Autoscaling on lag with KEDA, and Prometheus scraping, on the project's own Kubernetes.

`make cluster-up` runs KEDA 2.20.2 (operator and external metrics API server, built from its Go
module, served through the API server's aggregation layer) and prometheus-operator 0.93.1 with a
Prometheus 3.13.1 that selects monitors and rules by `release: kube-prometheus-stack`, as the
dev loop's kube-prometheus-stack would. One scenario, each step an assertion:

- the chart's ServiceMonitors make every loginpipe target `up == 1`, with the labels the rules
  and the dashboard use; the PrometheusRule is loaded; KEDA's own metrics are scraped;
- a backlog far above the lag threshold: KEDA's HPA raises the consumer's replicas (never above
  the input topic's partitions), the new pods join the group, the backlog drains, and after the
  (shortened) scale-down window the replicas come back to the minimum;
- the backlog alert, which rests on the services' own lag metric, fires during the backlog and
  resolves after it;
- nothing is lost or counted twice across the scaling: the Redis counts equal the generator's
  ground truth.

The timeline is written to .cache/cluster-test/autoscaling.json (the README quotes one run).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.cluster.conftest import (
    ROOT,
    Cluster,
    free_port,
    ground_truth,
    scraped_every_5s,
    tool,
    wait_for,
)
from tests.cluster.test_chart_on_cluster import Release

pytestmark = pytest.mark.cluster

SEED, COUNT, BAD_SHARE, START = 31, 600_000, 0.2, 1_764_000_000
# A CPU limit per consumer pod, as in production where the consumer is CPU-bound: one pod then
# routes a few thousand events a second, so a backlog outlasts the HPA's reaction and more pods
# really drain it faster (without it, one pod here keeps up with the generator).
CONSUMER_CPU = "200m"
PARTITIONS = 6
LAG_THRESHOLD = 5000
REPORT = ROOT / ".cache" / "cluster-test" / "autoscaling.json"


class Prometheus:
    """The cluster's Prometheus through `kubectl port-forward`, as the README tells users."""

    def __init__(self, cluster: Cluster) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                tool("kubectl"),
                *("-n", "monitoring", "port-forward", "svc/kube-prometheus-stack-prometheus"),
                f"{self.port}:9090",
            ],
            env=cluster.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("Prometheus through port-forward", lambda: self.get("/-/ready") is not None, 60)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # loopback: the port-forward
                body = resp.read()
        except OSError:
            return None
        return json.loads(body) if path.startswith("/api/") else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        out = self.get("/api/v1/query", query=expr)
        return list(out["data"]["result"]) if out else []

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def prometheus(cluster: Cluster) -> Iterator[Prometheus]:
    prom = Prometheus(cluster)
    yield prom
    prom.close()


@pytest.fixture
def scaling_release(cluster: Cluster, tmp_path: Path) -> Iterator[Release]:
    monitor = {"release": "kube-prometheus-stack"}
    rel = Release(
        cluster,
        tmp_path,
        "scale",
        generator={"enabled": False},
        consumer={"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": CONSUMER_CPU}}},
        autoscaling={
            "mode": "keda",
            "minReplicas": 1,
            "maxReplicas": PARTITIONS,
            "lagThreshold": LAG_THRESHOLD,
            "keda": {"pollingInterval": 5},
            # Shortened for the test (the default waits 300 s before scaling in).
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 20,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 10}],
                }
            },
        },
        metrics={
            **scraped_every_5s(),
            "prometheusRule": {
                "enabled": True,
                "additionalLabels": monitor,
                # Fires at the first evaluation above the threshold: with `for: 10s` it needed
                # two evaluations inside a backlog that the scaled-out consumers (cooperative
                # rebalances no longer stall them) can drain in about as long, and once missed.
                "alerts": {"consumerBacklog": {"threshold": 20_000, "for": "0s"}},
            },
        },
    )
    yield rel
    rel.delete()


def deployment_replicas(cluster: Cluster, rel: Release) -> int:
    dep = cluster.apps.read_namespaced_deployment(f"{rel.name}-consumer", rel.namespace)
    return int(dep.spec.replicas or 0)


def ready_consumers(cluster: Cluster, rel: Release) -> int:
    dep = cluster.apps.read_namespaced_deployment(f"{rel.name}-consumer", rel.namespace)
    return int(dep.status.ready_replicas or 0)


def backlog_alert(prom: Prometheus, namespace: str) -> str | None:
    """The state of LoginpipeConsumerBacklog for this release's consumer, if any."""
    out = prom.get("/api/v1/alerts") or {"data": {"alerts": []}}
    for alert in out["data"]["alerts"]:
        labels = alert["labels"]
        if (
            labels.get("alertname") == "LoginpipeConsumerBacklog"
            and labels.get("namespace") == namespace
            and labels.get("job", "").endswith("-consumer")
        ):
            return str(alert["state"])
    return None


@pytest.mark.timeout(1200)
def test_keda_scales_the_consumer_on_lag_and_prometheus_sees_all_of_it(
    cluster: Cluster, scaling_release: Release, prometheus: Prometheus
) -> None:
    rel = scaling_release
    ns = rel.namespace
    rel.install()
    rel.wait_ready(3)  # consumer, aggregator, Redis

    # KEDA took the ScaledObject and made its HPA, capped at the input topic's partitions.
    def scaled_object_ready() -> bool:
        so = cluster.kubectl("-n", ns, "get", "scaledobject", f"{rel.name}-consumer", "-o", "json")
        conditions = json.loads(so.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for("the ScaledObject to be Ready", scaled_object_ready, 120, 2)
    hpa = cluster.kubectl("-n", ns, "get", "hpa", f"keda-hpa-{rel.name}-consumer", "-o", "json")
    assert json.loads(hpa.stdout)["spec"]["maxReplicas"] == PARTITIONS

    # Scraping: every loginpipe target up, with the labels the rules and dashboard use.
    def loginpipe_targets_up() -> list[dict[str, Any]] | None:
        up = prometheus.query(f'up{{namespace="{ns}"}}')
        jobs = {r["metric"].get("job") for r in up if r["value"][1] == "1"}
        want = {f"{rel.name}-consumer", f"{rel.name}-aggregator"}
        return up if want <= jobs and all(r["value"][1] == "1" for r in up) else None

    up = wait_for("every loginpipe target up == 1 in Prometheus", loginpipe_targets_up, 180, 2)
    for series in up:
        assert {"namespace", "job", "pod", "instance"} <= set(series["metric"]), series
    valid = wait_for(
        "loginpipe_ series with the rules' labels",
        lambda: prometheus.query(
            f'loginpipe_build_info{{namespace="{ns}", job="{rel.name}-consumer"}}'
        ),
        60,
        2,
    )
    assert valid[0]["metric"]["component"] == "consumer"  # the label survives scraping
    rules = wait_for(
        "the chart's PrometheusRule to be loaded",
        lambda: [
            r["name"]
            for g in (prometheus.get("/api/v1/rules") or {"data": {"groups": []}})["data"]["groups"]
            if g["name"] == "loginpipe.alerts" and g["file"].find(ns) >= 0
            for r in g["rules"]
        ],
        120,
        2,
    )
    assert "LoginpipeConsumerBacklog" in rules and "LoginpipeTargetDown" in rules, rules
    keda = wait_for(
        "KEDA's own metrics in Prometheus",
        lambda: [r for r in prometheus.query('up{namespace="keda"}') if r["value"][1] == "1"],
        120,
        2,
    )
    assert {r["metric"]["job"] for r in keda} >= {"keda-operator", "keda-metrics-apiserver"}, keda
    targets = prometheus.get("/api/v1/targets")
    assert any(t["labels"].get("namespace") == ns for t in targets["data"]["activeTargets"])

    # The backlog: COUNT events as fast as the generator can write them.
    truth = ground_truth(COUNT, SEED, BAD_SHARE, START)
    gen = rel.pod_spec(
        "backlog",
        [
            "generate",
            *(f"--count={COUNT}", "--rate=0", f"--seed={SEED}"),
            *(f"--bad-share={BAD_SHARE}", f"--start-time={START}", "--summary"),
        ],
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(gen))
    t0 = time.monotonic()
    timeline: list[tuple[float, int, int, int]] = []  # seconds, replicas, ready, counted
    fired: list[float] = []

    def sample() -> tuple[int, int]:
        replicas, counted = deployment_replicas(cluster, rel), sum(rel.counts().values())
        timeline.append(
            (round(time.monotonic() - t0, 1), replicas, ready_consumers(cluster, rel), counted)
        )
        if not fired and backlog_alert(prometheus, ns) == "firing":
            fired.append(round(time.monotonic() - t0, 1))
        return replicas, counted

    first_scale_up = wait_for(
        "KEDA's HPA to add consumers", lambda: (sample()[0] > 1) and time.monotonic() - t0, 300, 1
    )
    drained = wait_for(
        "the backlog to be counted",
        lambda: sample()[1] == truth.valid and time.monotonic() - t0,
        600,
        1,
    )
    peak = max(r for _, r, _, _ in timeline)
    peak_ready = max(r for _, _, r, _ in timeline)
    assert 1 < peak <= PARTITIONS, timeline
    assert peak_ready > 1, "the added consumers never became ready"
    assert fired, "the backlog alert never fired during the backlog"
    scaled_down = wait_for(
        "the consumers to scale back to the minimum",
        lambda: sample()[0] == 1 and time.monotonic() - t0,
        300,
        2,
    )
    wait_for(
        "the backlog alert to resolve",
        lambda: backlog_alert(prometheus, ns) in (None, "inactive"),
        180,
        2,
    )

    # Exactly once across the scaling: the counts equal the generator's ground truth.
    summary = orjson.loads(cluster.logs(ns, "backlog").strip().splitlines()[-1])
    assert summary["delivered"] == COUNT and summary["failed"] == 0
    assert rel.counts() == dict(truth.valid_by_device)

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "events": COUNT,
                "lag_threshold_per_pod": LAG_THRESHOLD,
                "seconds_to_first_scale_up": first_scale_up,
                "highest_replicas": peak,
                "seconds_to_drain": drained,
                "seconds_to_scale_down": scaled_down,
                "seconds_to_backlog_alert": fired[0],
                "timeline": timeline,
            },
            indent=1,
        )
    )
