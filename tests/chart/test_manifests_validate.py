"""The chart passes the offline Kubernetes checks of hack/k8s-check.sh, and those checks catch
what they are meant to catch.

The first group runs hack/k8s-check.sh once per session on charts/loginpipe (helm lint, helm
template of the defaults and every ci/*-values.yaml, strict schema validation, checkov, promtool,
skaffold and kind configs) and turns each step into a test. The second group runs the same
script on small broken charts made in a temporary folder, so a checker that silently lets
everything through fails too. The tools are the pinned ones of hack/tools.sh: missing ones skip
these tests locally and fail them under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loginpipe"
CHECK = ROOT / "hack" / "k8s-check.sh"
TOOLS = ROOT / "hack" / "tools.sh"


def run_check(*args: str, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = out / "report.json"
    proc = subprocess.run(
        [str(CHECK), "--out", str(out), "--report", str(report), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "K8S_CHECK_NO_INSTALL": "1"},
    )
    assert report.exists(), f"hack/k8s-check.sh wrote no report:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(report.read_text())
    assert data["error"] is None, f"hack/k8s-check.sh could not run: {data['error']}"
    return proc, data


def results(report: dict[str, Any], step: str) -> list[dict[str, Any]]:
    found = [r for r in report["results"] if r["step"] == step]
    assert found, f"hack/k8s-check.sh reported nothing for step {step}"
    return found


def explain(failed: list[dict[str, Any]]) -> str:
    lines = []
    for r in failed:
        lines.append(f"{r['status']} {r['step']} {r['target']}: {r['summary']}")
        lines += [f"    {d}" for d in r["details"]]
    return "\n".join(lines)


def assert_passed(report: dict[str, Any], step: str) -> list[dict[str, Any]]:
    found = results(report, step)
    failed = [r for r in found if r["status"] == "FAIL"]
    if failed:
        pytest.fail(f"hack/k8s-check.sh step {step} failed:\n{explain(failed)}", pytrace=False)
    return found


def details(report: dict[str, Any], step: str) -> str:
    return "\n".join(d for r in results(report, step) for d in r["details"])


@pytest.fixture(scope="session")
def tools() -> None:
    proc = subprocess.run([str(TOOLS), "versions"], capture_output=True, text=True, timeout=60)
    require(
        proc.returncode == 0,
        "the Kubernetes check tools are missing or off-pin (run `hack/tools.sh install`):\n"
        + proc.stdout,
    )


@pytest.fixture(scope="session")
def chart_report(tools: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assert (CHART / "Chart.yaml").exists(), f"{CHART}/Chart.yaml is missing"
    _, report = run_check(out=tmp_path_factory.mktemp("k8s-check"))
    return report


# ---- the chart --------------------------------------------------------------------------------


def test_chart_lints_strictly_with_the_defaults_and_every_ci_values_file(chart_report):
    found = assert_passed(chart_report, "lint")
    ci_files = sorted((CHART / "ci").glob("*-values.yaml"))
    assert len(found) == 1 + len(ci_files)


def test_chart_renders_with_the_defaults_and_every_ci_values_file(chart_report):
    found = assert_passed(chart_report, "render")
    ci_files = sorted((CHART / "ci").glob("*-values.yaml"))
    assert {r["target"] for r in found} >= {"defaults"} | {
        "ci/" + p.name.removesuffix("-values.yaml") for p in ci_files
    }


def test_every_rendered_object_is_valid_against_its_kubernetes_or_crd_schema(chart_report):
    assert_passed(chart_report, "validate")


def test_checkov_finds_nothing_beyond_the_exceptions_justified_in_hack_checkov_yaml(chart_report):
    assert_passed(chart_report, "checkov")


def test_the_alerts_pass_promtool_check_rules_and_the_chart_promtool_unit_tests(chart_report):
    found = assert_passed(chart_report, "promtool")
    assert any(r["target"].startswith("test rules") for r in found)


def test_every_alert_has_a_promtool_test_case_in_which_it_fires(chart_report):
    coverage = [r for r in results(chart_report, "promtool") if r["target"] == "alert coverage"]
    assert coverage, "no alert coverage check ran"
    if coverage[0]["status"] != "PASS":
        pytest.fail(explain(coverage), pytrace=False)


def test_skaffold_config_matches_its_schema_and_kind_config_pins_its_node_images(chart_report):
    found = assert_passed(chart_report, "devloop")
    skipped = [r for r in found if r["status"] == "SKIP"]
    if skipped:
        pytest.skip("; ".join(f"{r['target']}: {r['summary']}" for r in skipped))


# ---- the checker itself, on small broken charts ---------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def make_chart(root: Path, extra_templates: dict[str, str]) -> Path:
    chart = root / "chart"
    write(
        chart / "Chart.yaml",
        """
        apiVersion: v2
        name: fixture
        version: 0.1.0
        appVersion: "0.1.0"
        kubeVersion: ">=1.30.0-0"
        icon: https://example.com/icon.png
        """,
    )
    write(chart / "values.yaml", "replicas: 1\n")
    write(
        chart / "templates" / "configmap.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}-config
        data:
          key: value
        """,
    )
    for name, text in extra_templates.items():
        write(chart / "templates" / name, text)
    return chart


def test_validation_fails_an_unknown_field_an_unknown_kind_and_a_custom_resource_off_its_crd(
    tools, tmp_path
):
    chart = make_chart(
        tmp_path,
        {
            "bad.yaml": """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: web
            spec:
              selector:
                matchLabels: {app: web}
              template:
                metadata:
                  labels: {app: web}
                spec:
                  containers:
                    - name: web
                      image: example.com/web:1
                      imagePullPolicy: Always
                      bogusField: true
            ---
            apiVersion: example.com/v1
            kind: Widget
            metadata:
              name: w
            ---
            apiVersion: kafka.strimzi.io/v1
            kind: KafkaTopic
            metadata:
              name: t
              labels: {strimzi.io/cluster: k}
            spec:
              partitions: 1
              replicas: 1
              partitionz: 3
            """
        },
    )
    proc, report = run_check("--chart", str(chart), "--steps", "validate", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout
    found = details(report, "validate")
    assert "additional properties 'bogusField' not allowed" in found
    assert "Widget/w (example.com/v1): could not find schema for Widget" in found
    assert "additional properties 'partitionz' not allowed" in found
    assert "ConfigMap" not in found


def test_validation_fails_names_labels_and_port_names_the_api_server_would_refuse(tools, tmp_path):
    chart = make_chart(
        tmp_path,
        {
            "bad.yaml": """
            apiVersion: v1
            kind: Service
            metadata:
              name: 9-starts-with-a-digit
              labels:
                app.kubernetes.io/version: "1.0+build.1"
            spec:
              selector: {app: web}
              ports:
                - name: http
                  port: 80
            ---
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
            spec:
              containers:
                - name: web
                  image: example.com/web:1
                  ports:
                    - name: http-metrics-endpoint
                      containerPort: 9100
            """
        },
    )
    proc, report = run_check("--chart", str(chart), "--steps", "validate", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout
    found = details(report, "validate")
    assert "'9-starts-with-a-digit': a Service name must be a DNS-1035 label" in found
    assert "value '1.0+build.1' is not a valid label value" in found
    assert "'http-metrics-endpoint' is not an IANA service name" in found


def test_validation_fails_a_field_that_the_oldest_supported_kubernetes_lacks(tools, tmp_path):
    # Pod-level resources (spec.resources) arrived in Kubernetes 1.32; the chart supports 1.30.
    chart = make_chart(
        tmp_path,
        {
            "pod.yaml": """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
            spec:
              resources:
                limits: {memory: 1Gi}
              containers:
                - name: web
                  image: example.com/web:1
            """
        },
    )
    proc, report = run_check(
        "--chart",
        str(chart),
        "--steps",
        "validate",
        "--kube-version",
        "1.33.0",
        "--extra-versions",
        "1.30.0",
        out=tmp_path / "out",
    )
    assert proc.returncode == 1, proc.stdout
    assert "additional properties 'resources' not allowed [Kubernetes 1.30.0]" in details(
        report, "validate"
    )


def test_alert_coverage_fails_for_an_alert_without_a_firing_test_case(tools, tmp_path):
    chart = make_chart(
        tmp_path,
        {
            "rules.yaml": """
            apiVersion: monitoring.coreos.com/v1
            kind: PrometheusRule
            metadata:
              name: fixture
            spec:
              groups:
                - name: fixture
                  rules:
                    - alert: Tested
                      expr: up == 0
                      for: 1m
                    - alert: Untested
                      expr: vector(1) > 2
            """
        },
    )
    write(
        chart / "tests" / "promtool" / "alerts_test.yaml",
        """
        rule_files: [rules.yaml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'up{job="a", instance="b"}'
                values: '0x5'
            alert_rule_test:
              - eval_time: 3m
                alertname: Tested
                exp_alerts:
                  - exp_labels: {job: a, instance: b}
              - eval_time: 3m
                alertname: Untested
                exp_alerts: []
        """,
    )
    proc, report = run_check("--chart", str(chart), "--steps", "promtool", out=tmp_path / "out")
    assert proc.returncode == 1, proc.stdout
    by_target = {r["target"]: r for r in results(report, "promtool")}
    assert by_target["check rules (defaults)"]["status"] == "PASS"
    assert by_target["test rules (alerts_test.yaml, rules of defaults)"]["status"] == "PASS"
    assert by_target["alert coverage"]["status"] == "FAIL"
    assert by_target["alert coverage"]["details"] == [
        "alert Untested has no test case in which it fires (only empty exp_alerts)"
    ]


def test_checkov_exceptions_need_a_reason_and_a_waiver_must_still_match_a_failure(tools, tmp_path):
    chart = make_chart(
        tmp_path,
        {
            "pod.yaml": """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
            spec:
              containers:
                - name: web
                  image: example.com/web:1
            """
        },
    )
    config = tmp_path / "checkov.yaml"
    write(
        config,
        """
        skip:
          CKV_K8S_21: ""
        waive:
          CKV_K8S_43:
            reason: The fixture's image has no digest, on purpose.
            objects: [Pod/web, Pod/gone]
        """,
    )
    proc, report = run_check(
        "--chart",
        str(chart),
        "--steps",
        "checkov",
        "--checkov-config",
        str(config),
        # under a hidden folder, like the default .cache/k8s-check: checkov must still read it
        out=tmp_path / ".cache" / "out",
    )
    assert proc.returncode == 1, proc.stdout
    found = details(report, "checkov")
    assert "skip CKV_K8S_21: needs a reason" in found
    assert "waive CKV_K8S_43: Pod/gone matched no failure" in found
    assert "Pod/web: CKV_K8S_43" not in found, "the waiver for Pod/web was not applied"
    assert "Pod/web: CKV_K8S_20" in found, "an unwaived failure was not reported"
