"""The repository carries every third-party file its checks need, each traceable and in step.

k8s/vendor holds the CRDs (Strimzi, prometheus-operator, KEDA), skaffold's schema and the strict
schemas generated from the CRDs. These tests hold the vendored files to their recorded sha256,
the generated schemas to their CRDs, the conversion to what the API server means by a structural
schema, and the project to never reading a folder beside the checkout.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "k8s" / "vendor"


def load_crd_schemas() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crd_schemas", ROOT / "hack" / "crd_schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crd_schemas = load_crd_schemas()


def test_vendored_files_match_their_recorded_hashes_and_schemas_match_their_crds() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "crd_schemas.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_vendored_file_names_its_origin_version_and_licence() -> None:
    entries = json.loads((VENDOR / "sources.json").read_text())["files"]
    assert entries
    for entry in entries:
        for key in ("path", "project", "version", "licence", "origin", "sha256"):
            assert entry.get(key), f"{entry.get('path')}: no {key} in sources.json"
        if "go_module" in entry:
            assert "@v" in entry["go_module"] and entry["module_path"]


@pytest.mark.parametrize(
    ("group", "kind", "version"),
    [
        ("kafka.strimzi.io", "Kafka", "v1"),
        ("kafka.strimzi.io", "KafkaNodePool", "v1"),
        ("kafka.strimzi.io", "KafkaTopic", "v1"),
        ("kafka.strimzi.io", "KafkaUser", "v1"),
        ("monitoring.coreos.com", "ServiceMonitor", "v1"),
        ("monitoring.coreos.com", "PodMonitor", "v1"),
        ("monitoring.coreos.com", "PrometheusRule", "v1"),
        ("keda.sh", "ScaledObject", "v1alpha1"),
        ("keda.sh", "TriggerAuthentication", "v1alpha1"),
    ],
)
def test_each_kind_the_chart_renders_has_a_strict_schema(
    group: str, kind: str, version: str
) -> None:
    path = VENDOR / "crd-schemas" / group / f"{kind.lower()}_{version}.json"
    assert path.is_file(), f"no vendored schema for {group}/{version} {kind}"
    schema = json.loads(path.read_text())
    assert schema["additionalProperties"] is False
    assert schema["properties"]["kind"]["enum"] == [kind]
    assert schema["properties"]["apiVersion"]["enum"] == [f"{group}/{version}"]


def crd(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def widget_validator(spec_schema: dict[str, Any]) -> jsonschema.Validator:
    schemas = crd_schemas.schemas_of_crd(
        crd({"type": "object", "properties": {"spec": spec_schema}})
    )
    assert list(schemas) == ["example.com/widget_v1.json"]
    return jsonschema.Draft7Validator(schemas["example.com/widget_v1.json"])


def widget(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }


def test_an_unknown_field_is_an_error_unless_the_crd_preserves_unknown_fields() -> None:
    validator = widget_validator(
        {
            "type": "object",
            "properties": {
                "size": {"type": "integer"},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    )
    assert not list(validator.iter_errors(widget({"size": 1, "config": {"any": "thing"}})))
    errors = [e.message for e in validator.iter_errors(widget({"size": 1, "colour": "red"}))]
    assert any("colour" in m for m in errors), errors


def test_one_of_branches_only_test_values_and_never_close_the_object() -> None:
    # Strimzi's env entries: {name, value} or {name, valueFrom}, told apart by oneOf branches that
    # list one property each. A closed branch would reject every real entry.
    validator = widget_validator(
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            "oneOf": [{"properties": {"value": {}}, "required": ["value"]}],
        }
    )
    assert not list(validator.iter_errors(widget({"name": "A", "value": "b"})))


def test_nullable_admits_null_and_int_or_string_admits_both() -> None:
    validator = widget_validator(
        {
            "type": "object",
            "properties": {
                "note": {"type": "string", "nullable": True},
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    )
    assert not list(validator.iter_errors(widget({"note": None, "port": 80})))
    assert not list(validator.iter_errors(widget({"note": "x", "port": "http"})))
    assert list(validator.iter_errors(widget({"port": 1.5})))


def test_a_wrong_api_version_or_kind_is_an_error() -> None:
    validator = widget_validator({"type": "object"})
    assert list(validator.iter_errors({**widget({}), "apiVersion": "example.com/v2"}))
    assert list(validator.iter_errors({**widget({}), "kind": "Gadget"}))


def tracked_files() -> list[Path]:
    proc = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    return [ROOT / name for name in proc.stdout.split("\0") if name]


def test_nothing_the_project_runs_reads_a_folder_beside_the_checkout() -> None:
    beside = re.compile(r"\.\./shared\b|K8S_CHECK_SHARED|parents?(\[\d\])?\s*/\s*[\"']shared[\"']")
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in tracked_files()
        if path.is_file() and path != Path(__file__).resolve()
        for match in beside.finditer(path.read_text(errors="replace"))
    ]
    assert not offenders, offenders
