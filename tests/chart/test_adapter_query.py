"""The prometheus-adapter query behind the consumer HPA, run by promtool on series as Kafka
Exporter writes them: one count per partition while two exporter pods overlap, and a partition
without a committed offset (-1) counted as its whole log, never as 0.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_VALUES = ROOT / "k8s" / "prometheus-adapter-values.yaml"
LOCAL_PROMTOOL = ROOT / ".cache" / "tools" / "bin" / "promtool"
SELECTOR = 'namespace="loginpipe",consumergroup="loginpipe-consumer",topic="user-login"'
EXPECTED_LABELS = 'consumergroup="loginpipe-consumer",topic="user-login"'


def promtool() -> str:
    found = str(LOCAL_PROMTOOL) if LOCAL_PROMTOOL.exists() else shutil.which("promtool")
    require(found is not None, "promtool is not installed: run `make tools`")
    assert found is not None
    return found


def adapter_query() -> str:
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"][0]
    query: str = rule["metricsQuery"]
    # What prometheus-adapter substitutes for an HPA in namespace loginpipe selecting the group.
    return query.replace("<<.Series>>", "kafka_consumergroup_lag").replace(
        "<<.LabelMatchers>>", SELECTOR
    )


def exporter(pod: str, partition: int, lag: int, current: int, oldest: int) -> list[dict[str, Any]]:
    base = f'namespace="loginpipe",pod="{pod}",topic="user-login",partition="{partition}"'
    group = 'consumergroup="loginpipe-consumer"'
    return [
        {"series": f"kafka_consumergroup_lag{{{base},{group}}}", "values": f"{lag}x10"},
        {"series": f"kafka_topic_partition_current_offset{{{base}}}", "values": f"{current}x10"},
        {"series": f"kafka_topic_partition_oldest_offset{{{base}}}", "values": f"{oldest}x10"},
    ]


def run_case(tmp_path: Path, series: list[dict[str, Any]], expected: float) -> None:
    rules = {
        "groups": [{"name": "adapter", "rules": [{"record": "hpa_lag", "expr": adapter_query()}]}]
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "hpa_lag",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": f"hpa_lag{{{EXPECTED_LABELS}}}",
                                "value": expected,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    out = subprocess.run(
        [promtool(), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_lag_is_summed_over_partitions(tmp_path: Path) -> None:
    series = exporter("exp-a", 0, 100, 1000, 0) + exporter("exp-a", 1, 50, 1000, 0)
    run_case(tmp_path, series, 150)


def test_two_exporter_pods_in_a_rollout_do_not_double_the_lag(tmp_path: Path) -> None:
    series = []
    for pod in ("exp-old", "exp-new"):
        series += exporter(pod, 0, 100, 1000, 0) + exporter(pod, 1, 50, 1000, 0)
    run_case(tmp_path, series, 150)


def test_a_partition_without_committed_offset_counts_as_its_whole_log(tmp_path: Path) -> None:
    # Partition 1 was never committed: the consumers will read it from the oldest offset.
    series = exporter("exp-a", 0, 100, 1000, 0) + exporter("exp-a", 1, -1, 700, 200)
    run_case(tmp_path, series, 100 + 500)


def test_a_transient_negative_lag_counts_as_zero(tmp_path: Path) -> None:
    series = exporter("exp-a", 0, 100, 1000, 0) + exporter("exp-a", 1, -3, 1000, 0)
    run_case(tmp_path, series, 100)
