"""Offline checks of the dev-loop files: Dockerfile, .dockerignore, skaffold.yaml, the kind config
and hack/kind.sh. No cluster, no Docker: these run everywhere, CI included (not marked e2e).

skaffold.yaml is validated against skaffold's own JSON schema for skaffold/v4beta14, vendored in
k8s/vendor/schemas (see k8s/vendor/sources.json); the kind config against a strict schema
written from kind's v1alpha4 Go types (kind itself rejects unknown fields).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require

try:
    import jsonschema
except ImportError:  # a dev dependency; CI must have it (require() fails there)
    jsonschema = None

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD_SCHEMA = ROOT / "k8s" / "vendor" / "schemas" / "skaffold-v4beta14.json"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
BASH = shutil.which("bash") or "/bin/bash"


# ---- helpers -------------------------------------------------------------------------------


def load_yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def validator(schema: dict[str, Any]) -> Any:
    require(jsonschema is not None, "jsonschema is not installed (a dev dependency): make venv")
    assert jsonschema is not None
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(schema: dict[str, Any], doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(schema).iter_errors(doc)
    ]


def skaffold_schema() -> dict[str, Any]:
    assert SKAFFOLD_SCHEMA.is_file(), f"skaffold's vendored schema is missing: {SKAFFOLD_SCHEMA}"
    schema: dict[str, Any] = json.loads(SKAFFOLD_SCHEMA.read_text())
    return schema


def pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def apply_patches(doc: Any, patches: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/remove/replace, as skaffold applies a profile's patches."""
    doc = copy.deepcopy(doc)
    for p in patches:
        *parents, last = pointer(p["path"])
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        op = p.get("op", "replace")
        if isinstance(target, list):
            i = len(target) if last == "-" else int(last)
            if op == "add":
                target.insert(i, copy.deepcopy(p["value"]))
            elif op == "remove":
                del target[i]
            elif op == "replace":
                target[i] = copy.deepcopy(p["value"])
            else:
                raise AssertionError(f"unsupported op {op}")
        else:
            if op in ("remove", "replace"):
                assert last in target, f"{p['path']}: no such key to {op}"
            if op == "remove":
                del target[last]
            elif op in ("add", "replace"):
                target[last] = copy.deepcopy(p["value"])
            else:
                raise AssertionError(f"unsupported op {op}")
    return doc


def skaffold_variants() -> dict[str, dict[str, Any]]:
    """The config as each profile makes it: {"default": ..., "hpa": ..., "minimal": ...}."""
    base = load_yaml("skaffold.yaml")
    variants = {"default": {k: v for k, v in base.items() if k != "profiles"}}
    for profile in base.get("profiles", []):
        variants[profile["name"]] = apply_patches(variants["default"], profile.get("patches", []))
    return variants


def releases(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    rel: list[dict[str, Any]] = cfg["deploy"]["helm"]["releases"]
    return rel


def by_name(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in releases(cfg)}


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out = []
    for ins in logical:
        keyword, _, args = ins.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped per stage (each list starts with its FROM)."""
    result: list[list[tuple[str, str]]] = []
    for ins in dockerfile():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def from_images() -> list[str]:
    """Every FROM's image, with ARG defaults declared before the first FROM substituted."""
    args: dict[str, str] = {}
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v.strip().strip('"')
    images, names = [], set()
    for stage in stages():
        image, *alias = stage[0][1].split()
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image not in names:  # `FROM builder` builds on an earlier stage, not on an image
            images.append(image)
        if len(alias) == 2 and alias[0].upper() == "AS":
            names.add(alias[1])
    return images


# ---- skaffold.yaml -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "hpa", "minimal"])
def test_skaffold_config_and_each_profile_validate_against_the_v4beta14_schema(
    variant: str,
) -> None:
    schema = skaffold_schema()
    raw = load_yaml("skaffold.yaml")
    assert raw["apiVersion"] == "skaffold/v4beta14" and raw["kind"] == "Config"
    assert errors(schema, raw) == []
    assert errors(schema, skaffold_variants()[variant]) == []


def test_the_schema_check_rejects_an_unknown_field() -> None:
    """Guards the check above: the schema is strict, a typo in a release is an error."""
    cfg = load_yaml("skaffold.yaml")
    cfg["deploy"]["helm"]["releases"][0]["chartVersion"] = "1.2.0"
    assert any("chartVersion" in e for e in errors(skaffold_schema(), cfg))


def install_order(cfg: dict[str, Any]) -> list[str]:
    """The order skaffold's helm deployer installs releases in (concurrency 1).

    As skaffold's dependencygraph.go: a depth-first walk of the releases in the order listed,
    each release after the releases it `dependsOn`, then grouped by dependency level, in that
    order within a level.
    """
    graph = {r["name"]: list(r.get("dependsOn", [])) for r in releases(cfg)}
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name in graph, f"dependsOn names {name}, which is not a release"
        assert name not in path, f"dependency cycle through {name}"
        if name in order:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        order.append(name)

    for name in graph:
        visit(name)
    level: dict[str, int] = {}
    for name in order:
        level[name] = max((level[d] + 1 for d in graph[name]), default=0)
    return sorted(order, key=lambda n: level[n])  # stable: keeps the walk's order in a level


def delete_order(cfg: dict[str, Any]) -> list[str]:
    """`skaffold delete` (and Ctrl-C in `skaffold dev`) runs `helm delete` in the listed order."""
    return [r["name"] for r in releases(cfg)]


@pytest.mark.parametrize("variant", ["default", "hpa", "minimal"])
def test_releases_install_after_the_releases_they_depend_on(variant: str) -> None:
    cfg = skaffold_variants()[variant]
    assert cfg["deploy"]["helm"].get("concurrency", 1) == 1, "releases must install in order"
    order = install_order(cfg)
    assert len(order) == len(set(order)), order
    for i, name in enumerate(order):
        for dep in by_name(cfg)[name].get("dependsOn", []):
            assert dep in order[:i], f"{name} depends on {dep}, which is not installed before it"
    # The chart renders Strimzi resources, so Strimzi comes first in every variant.
    assert order[0] == "strimzi" and order[-1] == "loginpipe"
    assert "strimzi" in by_name(cfg)["loginpipe"]["dependsOn"]
    if "kube-prometheus-stack" in order:
        assert "kube-prometheus-stack" in by_name(cfg)["loginpipe"]["dependsOn"]


@pytest.mark.parametrize("variant", ["default", "hpa", "minimal"])
def test_releases_are_deleted_before_the_releases_they_depend_on(variant: str) -> None:
    # KEDA must outlive the ScaledObject (its finalizer), Strimzi the Kafka it tears down.
    cfg = skaffold_variants()[variant]
    order = delete_order(cfg)
    assert order[0] == "loginpipe", order
    for i, name in enumerate(order):
        for dep in by_name(cfg)[name].get("dependsOn", []):
            assert dep in order[i + 1 :], f"{name} depends on {dep}, which is deleted before it"
    if variant == "default":
        assert order.index("loginpipe") < order.index("keda")


def test_every_remote_chart_is_pinned_to_an_exact_version() -> None:
    seen = {}
    for cfg in skaffold_variants().values():
        for r in releases(cfg):
            if "remoteChart" in r:
                assert re.fullmatch(r"\d+\.\d+\.\d+", str(r.get("version", ""))), r["name"]
                if r["remoteChart"].startswith("oci://"):
                    assert "repo" not in r, r["name"]  # an OCI reference is the whole address
                else:
                    assert r["repo"].startswith("https://"), r["name"]
                seen[r["remoteChart"]] = (r.get("repo"), r["version"])
    assert seen == {
        "oci://quay.io/strimzi-helm/strimzi-kafka-operator": (None, "1.2.0"),
        "kube-prometheus-stack": ("https://prometheus-community.github.io/helm-charts", "88.6.5"),
        "prometheus-adapter": ("https://prometheus-community.github.io/helm-charts", "5.3.0"),
        "keda": ("https://kedacore.github.io/charts", "2.20.2"),
    }


def test_strimzi_watches_the_release_namespace() -> None:
    cfg = skaffold_variants()["default"]
    strimzi, app = by_name(cfg)["strimzi"], by_name(cfg)["loginpipe"]
    assert strimzi["overrides"]["watchNamespaces"] == [app["namespace"]]
    assert strimzi["namespace"] != app["namespace"]  # the chart fails if they are the same


def test_the_built_image_is_bound_to_the_chart_by_the_artifact_name() -> None:
    cfg = load_yaml("skaffold.yaml")
    artifacts = [a["image"] for a in cfg["build"]["artifacts"]]
    assert artifacts == ["loginpipe"]
    assert cfg["build"]["artifacts"][0]["docker"]["dockerfile"] == "Dockerfile"
    assert cfg["build"]["local"]["push"] is False
    templates = by_name(cfg)["loginpipe"]["setValueTemplates"]
    assert templates == {
        "image.repository": "{{.IMAGE_REPO_loginpipe}}",
        "image.tag": "{{.IMAGE_TAG_loginpipe}}@{{.IMAGE_DIGEST_loginpipe}}",
    }
    # Every IMAGE_* template names a built artifact ('-', '.', '/', ':' become '_').
    names = {re.sub(r"[-./:]", "_", a) for a in artifacts}
    for value in templates.values():
        for used in re.findall(r"\.IMAGE_[A-Z_]+?_([A-Za-z0-9_]+)\}\}", value):
            assert used in names, value


def test_every_chart_path_and_values_file_in_skaffold_exists() -> None:
    for cfg in skaffold_variants().values():
        for r in releases(cfg):
            if "chartPath" in r:
                assert (ROOT / r["chartPath"] / "Chart.yaml").is_file(), r["chartPath"]
            for f in r.get("valuesFiles", []):
                assert (ROOT / f).is_file(), f
    assert (ROOT / "Dockerfile").is_file()


def test_the_profiles_switch_autoscaling_and_monitoring_as_documented() -> None:
    v = skaffold_variants()
    default, hpa, minimal = (by_name(v[n]) for n in ("default", "hpa", "minimal"))
    # KEDA by default: it reads the lag from Kafka, no adapter or exporter in the scaling path.
    assert install_order(v["default"]) == ["strimzi", "kube-prometheus-stack", "keda", "loginpipe"]
    assert default["keda"]["namespace"] == "keda"
    assert default["loginpipe"]["setValues"]["autoscaling.mode"] == "keda"
    for part in ("operator", "metricServer"):
        values = default["keda"]["setValues"]
        assert values[f"prometheus.{part}.serviceMonitor.enabled"] == "true"
        assert (
            values[f"prometheus.{part}.serviceMonitor.additionalLabels.release"]
            == "kube-prometheus-stack"
        )
    for kind in ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard"):
        assert default["loginpipe"]["setValues"][f"metrics.{kind}.enabled"] == "true"

    assert install_order(v["hpa"]) == [
        "strimzi",
        "kube-prometheus-stack",
        "prometheus-adapter",
        "loginpipe",
    ]
    assert hpa["loginpipe"]["setValues"]["autoscaling.mode"] == "hpa"
    assert hpa["prometheus-adapter"]["setValues"]["prometheus.url"] == (
        "http://kube-prometheus-stack-prometheus.monitoring.svc"
    )

    assert install_order(v["minimal"]) == ["strimzi", "loginpipe"]
    values = minimal["loginpipe"]["setValues"]
    assert values["autoscaling.mode"] == "none"
    assert {k: v for k, v in values.items() if k.startswith("metrics.")} == {
        f"metrics.{kind}.enabled": "false"
        for kind in ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard")
    }
    # No port-forward to a monitoring stack that the minimal profile does not install.
    assert all(pf["namespace"] == "loginpipe" for pf in v["minimal"]["portForward"])


def test_port_forwards_reach_the_three_services_prometheus_and_grafana() -> None:
    forwards = {
        (pf["namespace"], pf["resourceName"]): (pf["port"], pf["localPort"])
        for pf in skaffold_variants()["default"]["portForward"]
    }
    assert forwards == {
        ("loginpipe", "loginpipe-generator"): (9101, 9101),
        ("loginpipe", "loginpipe-consumer"): (9102, 9102),
        ("loginpipe", "loginpipe-aggregator"): (9103, 9103),
        ("monitoring", "kube-prometheus-stack-prometheus"): (9090, 9090),
        ("monitoring", "kube-prometheus-stack-grafana"): (80, 3000),
    }


# ---- k8s/kind-config.yaml ------------------------------------------------------------------

# kind's v1alpha4 Cluster (sigs.k8s.io/kind/pkg/apis/config/v1alpha4/types.go), as a strict schema.
_STRINGS = {"type": "array", "items": {"type": "string"}}
_PATCH_6902 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "patch"],
    "properties": {k: {"type": "string"} for k in ("group", "version", "kind", "patch")},
}
KIND_V1ALPHA4 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "extraMounts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPath": {"type": "string"},
                                "hostPath": {"type": "string"},
                                "readOnly": {"type": "boolean"},
                                "selinuxRelabel": {"type": "boolean"},
                                "propagation": {
                                    "enum": ["None", "HostToContainer", "Bidirectional"]
                                },
                            },
                        },
                    },
                    "extraPortMappings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "containerPort": {"type": "integer"},
                                "hostPort": {"type": "integer"},
                                "listenAddress": {"type": "string"},
                                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            },
                        },
                    },
                    "gpus": {"type": "string"},
                    "kubeadmConfigPatches": _STRINGS,
                    "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
                },
            },
        },
        "networking": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ipFamily": {"enum": ["ipv4", "ipv6", "dual"]},
                "apiServerPort": {"type": "integer"},
                "apiServerAddress": {"type": "string"},
                "podSubnet": {"type": "string"},
                "serviceSubnet": {"type": "string"},
                "disableDefaultCNI": {"type": "boolean"},
                "kubeProxyMode": {"enum": ["iptables", "ipvs", "nftables", "none"]},
                "dnsSearch": _STRINGS,
            },
        },
        "featureGates": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "runtimeConfig": {"type": "object", "additionalProperties": {"type": "string"}},
        "kubeadmConfigPatches": _STRINGS,
        "kubeadmConfigPatchesJSON6902": {"type": "array", "items": _PATCH_6902},
        "containerdConfigPatches": _STRINGS,
        "containerdConfigPatchesJSON6902": _STRINGS,
    },
}


def test_kind_config_is_a_valid_v1alpha4_cluster() -> None:
    cfg = load_yaml("k8s/kind-config.yaml")
    assert errors(KIND_V1ALPHA4, cfg) == []
    assert cfg["name"] == "loginpipe"
    assert [n.get("role", "control-plane") for n in cfg["nodes"]].count("control-plane") == 1
    typo = {**cfg, "node": cfg["nodes"]}
    assert errors(KIND_V1ALPHA4, typo), "the schema must reject unknown fields"


def test_every_kind_node_image_is_pinned_by_digest_to_kubernetes_1_30_or_newer() -> None:
    for node in load_yaml("k8s/kind-config.yaml")["nodes"]:
        image = node["image"]
        m = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image)
        assert m, f"not a digest-pinned kindest/node image: {image}"
        assert (int(m[1]), int(m[2])) >= (1, 30), f"{image}: the chart needs Kubernetes >= 1.30"


# ---- Dockerfile and .dockerignore ----------------------------------------------------------


def test_every_base_image_is_pinned_by_digest_and_both_stages_share_it() -> None:
    images = from_images()
    assert len(images) >= 2, images
    for image in images:
        assert DIGEST.search(image), f"FROM {image} is not pinned by digest"
        assert image.startswith("python:3.11-slim-bookworm@"), image
    assert len(set(images)) == 1, "builder and runtime must use the same base (venv symlinks)"
    labels = " ".join(rest for k, rest in stages()[-1] if k == "LABEL")
    assert images[0].split("@")[1] in labels, "the base.digest label must match the FROM digest"


def test_the_image_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    assert re.search(r"\bAS builder\b", all_stages[0][0][1], re.IGNORECASE)
    final = all_stages[-1]
    users = [rest for k, rest in final if k == "USER"]
    assert users, "the final stage sets no USER"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"USER {users[-1]} is not numeric uid:gid"
    assert int(users[-1].split(":")[0]) >= 10000


def test_the_entrypoint_is_exec_form_loginpipe_with_help_as_default() -> None:
    final = dict((k, rest) for k, rest in stages()[-1] if k in ("ENTRYPOINT", "CMD"))
    assert json.loads(final["ENTRYPOINT"]) == ["loginpipe"]
    assert json.loads(final["CMD"]) == ["--help"]


def test_dependencies_are_installed_from_the_hashed_lock_in_the_builder() -> None:
    builder = " ".join(rest for k, rest in stages()[0] if k == "RUN")
    assert "--require-hashes" in builder and "-r requirements.lock" in builder
    assert "--no-deps" in builder
    copies = " ".join(rest for k, rest in stages()[0] if k == "COPY")
    assert "requirements.lock" in copies and "services/" in copies


def test_the_final_stage_installs_nothing_and_compiles_nothing() -> None:
    final = stages()[-1]
    runs = " ".join(rest for k, rest in final if k == "RUN")
    for forbidden in (
        "pip install",
        "apt-get install",
        "apk add",
        "gcc",
        "build-essential",
        "make ",
    ):
        assert forbidden not in runs, f"final stage runs {forbidden!r}"
    copies = [rest for k, rest in final if k == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies
    env = " ".join(rest for k, rest in final if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert "/opt/venv/bin" in env


def test_the_image_carries_oci_labels() -> None:
    labels = " ".join(rest for k, rest in stages()[-1] if k == "LABEL")
    for key in (
        "title",
        "description",
        "version",
        "revision",
        "licenses",
        "base.name",
        "base.digest",
    ):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_dockerignore_keeps_vcs_caches_and_non_image_files_out_of_the_context() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for p in (".git", ".venv", ".cache", "tests", "charts", "k8s", "hack"):
        assert p in patterns, f".dockerignore does not exclude {p}"
    # What the Dockerfile copies must stay in the context.
    for needed in ("requirements.lock", "pyproject.toml", "README.md", "services"):
        assert needed not in patterns and f"/{needed}" not in patterns, needed
    assert not any(p.startswith("!") for p in patterns)


# ---- hack/kind.sh --------------------------------------------------------------------------


def run_kind_sh(
    tmp_path: Path, stubs: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """hack/kind.sh with a PATH of only the coreutils it needs plus the given stub commands."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname", "grep", "awk", "sed", "tail"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    for name, body in stubs.items():
        stub = bindir / name
        stub.write_text(f"#!{BASH}\n{body}\n")
        stub.chmod(0o755)
    return subprocess.run(
        [BASH, str(ROOT / "hack/kind.sh"), *args],
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kind_script_passes_bash_syntax_check() -> None:
    subprocess.run([BASH, "-n", str(ROOT / "hack/kind.sh")], check=True, timeout=30)


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_kind_script_names_each_missing_tool_with_an_install_hint(
    tmp_path: Path, command: str
) -> None:
    res = run_kind_sh(tmp_path, {}, command)
    assert res.returncode == 1, res
    assert "missing: docker -> install Docker" in res.stderr
    assert "missing: kind -> go install sigs.k8s.io/kind@v0.33.0" in res.stderr
    assert "ERROR: prerequisites missing: docker kind" in res.stderr


def test_kind_script_says_when_docker_is_installed_but_not_running(tmp_path: Path) -> None:
    stubs = {
        "docker": 'echo "Cannot connect to the Docker daemon at unix:///x.sock." >&2; exit 1',
        "kind": "exit 0",
        "kubectl": "exit 0",
        "helm": "exit 0",
        "skaffold": "exit 0",
    }
    res = run_kind_sh(tmp_path, stubs, "up")
    assert res.returncode == 1, res
    assert "daemon is not reachable" in res.stderr
    assert "Cannot connect to the Docker daemon" in res.stderr


def test_kind_script_rejects_an_unknown_command_with_usage(tmp_path: Path) -> None:
    res = run_kind_sh(tmp_path, {}, "frobnicate")
    assert res.returncode == 2
    assert "Usage: hack/kind.sh up|down|status|check" in res.stderr


def test_the_dev_namespace_enforces_pod_security_restricted_and_strimzi_complies() -> None:
    cfg = skaffold_variants()["default"]
    hook = " ".join(cfg["deploy"]["helm"]["hooks"]["before"][0]["host"]["command"])
    for script in (hook, (ROOT / "hack" / "kind.sh").read_text()):
        assert "pod-security.kubernetes.io/enforce" in script and "restricted" in script
    envs = by_name(cfg)["strimzi"]["overrides"]["extraEnvs"]
    assert {"name": "STRIMZI_POD_SECURITY_PROVIDER_CLASS", "value": "restricted"} in envs
