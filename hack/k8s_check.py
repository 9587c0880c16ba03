"""Offline verification of the loginpipe Kubernetes deployables (run it through hack/k8s-check.sh).

Steps, each printing one PASS/FAIL/SKIP line per target (details indented below a failure):

  lint      helm lint --strict, with the defaults and with each ci/*-values.yaml
  render    helm template of the same value sets into .cache/k8s-check/rendered/<set>.yaml
  validate  every rendered object against its schema, strictly (unknown fields and kinds without a
            schema fail): built-in kinds against Kubernetes' own schemas (bundled with the pinned
            kubernetes-validate package, converted for kubeconform), Strimzi / prometheus-operator /
            KEDA kinds against k8s/vendor/crd-schemas (made from the vendored CRDs by
            hack/crd_schemas.py); plus the API server's name and label syntax
            rules that schemas do not carry (DNS names, label keys and values, port names)
  checkov   checkov over the rendered manifests; the exceptions in hack/checkov.yaml (checks
            skipped, or waived for named objects) each carry a reason, and a waiver that no
            longer matches a failure fails
  promtool  the chart's PrometheusRule extracted to rules.yaml: promtool check rules, promtool test
            rules with the chart's tests/promtool/*_test.yaml, and every alert covered by a test
            case in which it fires
  devloop   skaffold.yaml against k8s/vendor/schemas/skaffold-v4beta14.json, k8s/kind-config.yaml
            (kind Cluster, kind.x-k8s.io/v1alpha4, node images pinned by digest); skipped while
            those files do not exist

Runs with the tools venv's Python (hack/tools.sh install): needs PyYAML and jsonschema.
Exit status: 0 when nothing failed, 1 when a check failed, 2 on a usage or set-up error.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("lint", "render", "validate", "checkov", "promtool", "devloop")
# Steps that read the rendered manifests: they render first when `render` was not asked for.
NEEDS_RENDER = {"validate", "checkov", "promtool"}
# API groups whose kinds the chart may gate on with .Capabilities.APIVersions.
API_VERSIONS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1", "kafka.strimzi.io/v1")
ONLINE_CRD_CATALOG = (
    "https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/"
    "{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
)
PROMTOOL_VALUES = "ci/hpa-monitoring"  # the value set whose alerts the promtool unit tests cover


class SetupError(Exception):
    """A tool or input the checks need is missing: exit 2."""


@dataclass
class Result:
    step: str
    target: str
    status: str  # PASS | FAIL | SKIP
    summary: str = ""
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Context:
    chart: Path
    out: Path
    vendor: Path
    release: str
    namespace: str
    kube_version: str
    extra_versions: list[str]
    online: bool
    online_timeout: float
    tools_bin: Path
    checkov_config: Path
    promtool_values: str
    write_promtool_rules: bool = False
    rendered: dict[str, Path] = field(default_factory=dict)  # value-set name -> rendered file
    results: list[Result] = field(default_factory=list)

    def tool(self, name: str) -> str:
        path = self.tools_bin / name
        if not path.exists():
            raise SetupError(f"{name} not found in {self.tools_bin}: run hack/tools.sh install")
        return str(path)


# ---- output -----------------------------------------------------------------------------------


def say(text: str, stream: Any = None) -> None:
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def report(ctx: Context, result: Result) -> Result:
    ctx.results.append(result)
    line = f"{result.status:<4}  {result.step:<8}  {result.target}"
    if result.summary:
        line += f": {result.summary}"
    say(line)
    for detail in result.details:
        say(f"      {detail}")
    return result


# Helm's own folders inside the work tree: no repositories or plugins from the user's home.
HELM_ENV = {
    "HELM_CACHE_HOME": str(ROOT / ".cache" / "helm"),
    "HELM_CONFIG_HOME": str(ROOT / ".cache" / "helm" / "config"),
    "HELM_DATA_HOME": str(ROOT / ".cache" / "helm" / "data"),
}


def run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)  # noqa: S603


def tail(text: str, lines: int = 40) -> list[str]:
    out = [line for line in text.strip().splitlines() if line.strip()]
    return out[-lines:]


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_versions_env() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        match = re.match(r"^([A-Z0-9_]+)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def obj_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


# ---- value sets -------------------------------------------------------------------------------


def value_sets(chart: Path) -> list[tuple[str, Path | None]]:
    """("defaults", None) and one ("ci/<name>", file) per ci/<name>-values.yaml, sorted."""
    sets: list[tuple[str, Path | None]] = [("defaults", None)]
    for path in sorted((chart / "ci").glob("*-values.yaml")):
        sets.append(("ci/" + path.name.removesuffix("-values.yaml"), path))
    return sets


def slug(name: str) -> str:
    """A value set's name as a file name: ci/keda -> ci-keda."""
    return name.replace("/", "-")


def values_args(values: Path | None) -> list[str]:
    return ["-f", str(values)] if values else []


# ---- lint -------------------------------------------------------------------------------------


def step_lint(ctx: Context) -> None:
    helm = ctx.tool("helm")
    for name, values in value_sets(ctx.chart):
        t0 = time.monotonic()
        proc = run(
            [
                helm,
                "lint",
                "--strict",
                "--kube-version",
                ctx.kube_version,
                str(ctx.chart),
                *values_args(values),
            ],
            env={**os.environ, **HELM_ENV},
        )
        output = proc.stdout + proc.stderr
        findings = [
            line.strip()
            for line in output.splitlines()
            if re.search(r"\[(ERROR|WARNING|INFO)\]", line) or line.startswith("Error")
        ]
        if proc.returncode == 0:
            report(
                ctx, Result("lint", name, "PASS", "; ".join(findings), [], time.monotonic() - t0)
            )
        else:
            report(
                ctx,
                Result(
                    "lint",
                    name,
                    "FAIL",
                    "helm lint --strict failed",
                    findings or tail(output),
                    time.monotonic() - t0,
                ),
            )


# ---- render -----------------------------------------------------------------------------------


def helm_template(
    ctx: Context, out: Path, extra: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    cmd = [
        ctx.tool("helm"),
        "template",
        ctx.release,
        str(ctx.chart),
        "--namespace",
        ctx.namespace,
        "--kube-version",
        ctx.kube_version,
    ]
    for api in API_VERSIONS:
        cmd += ["--api-versions", api]
    proc = run([*cmd, *extra], env={**os.environ, **HELM_ENV})
    if proc.returncode == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(proc.stdout)
    return proc


def step_render(ctx: Context) -> None:
    rendered_dir = ctx.out / "rendered"
    shutil.rmtree(rendered_dir, ignore_errors=True)
    rendered_dir.mkdir(parents=True)
    for name, values in value_sets(ctx.chart):
        t0 = time.monotonic()
        out = rendered_dir / f"{slug(name)}.yaml"
        proc = helm_template(ctx, out, values_args(values))
        if proc.returncode != 0:
            report(
                ctx,
                Result(
                    "render",
                    name,
                    "FAIL",
                    "helm template failed",
                    tail(proc.stderr),
                    time.monotonic() - t0,
                ),
            )
            continue
        try:
            docs = load_docs(out)
        except yaml.YAMLError as exc:
            report(
                ctx,
                Result(
                    "render",
                    name,
                    "FAIL",
                    "rendered output is not valid YAML",
                    str(exc).splitlines(),
                    time.monotonic() - t0,
                ),
            )
            continue
        if not docs:
            report(
                ctx,
                Result("render", name, "FAIL", "rendered no objects", [], time.monotonic() - t0),
            )
            continue
        ctx.rendered[name] = out
        kinds: dict[str, int] = {}
        for doc in docs:
            kinds[doc.get("kind", "?")] = kinds.get(doc.get("kind", "?"), 0) + 1
        summary = (
            f"{len(docs)} objects -> {rel(out)} ("
            + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            + ")"
        )
        report(ctx, Result("render", name, "PASS", summary, [], time.monotonic() - t0))


# ---- validate ---------------------------------------------------------------------------------


def k8s_schema_dir(ctx: Context, kube_version: str) -> Path:
    """Kubernetes' strict schemas for ctx.kube_version in kubeconform's layout, built once from
    the kubernetes-validate package (its files reference a shared _definitions.json by an
    absolute URL; here they point at it by a relative path, which kubeconform resolves on disk)."""
    kv_version = metadata.version("kubernetes-validate")
    version = "v" + kube_version.lstrip("v")
    dest_root = ctx.out / "schemas" / f"kubernetes-validate-{kv_version}"
    dest = dest_root / f"{version}-standalone-strict"
    stamp = dest / ".complete"
    if stamp.exists():
        return dest_root
    bundle = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    source = bundle.joinpath(f"{version}-local-strict")
    if not source.is_dir():
        available = sorted(p.name for p in bundle.iterdir() if p.name.endswith("-local-strict"))
        raise SetupError(
            f"kubernetes-validate {kv_version} has no schemas for Kubernetes {version} "
            f"(it has {', '.join(available)}): change K8S_VALIDATE_VERSION"
        )
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if not entry.name.endswith(".json") or entry.name == "all.json":
            continue
        schema = json.loads(entry.read_text())
        schema.pop("$id", None)
        text = json.dumps(schema)
        target = '"#' if entry.name == "_definitions.json" else '"_definitions.json#'
        text = text.replace('"/api/_definitions.json#', target)
        (dest / entry.name).write_text(text)
    stamp.write_text(kv_version)
    return dest_root


def object_meta_validator(schema_root: Path, kube_version: str) -> jsonschema.Validator:
    defs_file = schema_root / f"v{kube_version.lstrip('v')}-standalone-strict" / "_definitions.json"
    defs = json.loads(defs_file.read_text())["$defs"]
    schema = {"$defs": defs, "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema)


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Kinds whose names must be DNS-1035 / DNS-1123 labels rather than subdomains.
DNS1035_NAMED = {"Service"}
DNS1123_LABEL_NAMED = {"Namespace", "StatefulSet"}


def qualified_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} is not a DNS-1123 subdomain"
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return (
            f"name part {name!r} must be 1-63 alphanumerics, '-', '_' or '.', "
            "alphanumeric at both ends"
        )
    return None


def label_problems(where: str, labels: Any) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"{where}: not a map"]
    problems = []
    for key, value in labels.items():
        key_problem = qualified_key_problem(str(key))
        if key_problem:
            problems.append(f"{where}: key {key!r}: {key_problem}")
        if not isinstance(value, str):
            problems.append(f"{where}.{key}: value {value!r} must be a string")
        elif len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(
                f"{where}.{key}: value {value!r} is not a valid label value "
                "(at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends)"
            )
    return problems


def pod_spec_of(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return ".spec", spec
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return ".spec.template.spec", (spec.get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return ".spec.jobTemplate.spec.template.spec", (job.get("template") or {}).get("spec") or {}
    return None


def semantic_problems(obj: dict[str, Any]) -> list[str]:
    """Syntax rules the API server enforces beyond the OpenAPI schema."""
    problems: list[str] = []
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.append(".metadata.name is missing")
    elif kind in DNS1035_NAMED and (len(name) > 63 or not DNS1035_LABEL.match(name)):
        problems.append(
            f".metadata.name {name!r}: a {kind} name must be a DNS-1035 label "
            "(at most 63 lower-case alphanumerics or '-', starting with a letter)"
        )
    elif kind in DNS1123_LABEL_NAMED and (len(name) > 63 or not DNS1123_LABEL.match(name)):
        problems.append(
            f".metadata.name {name!r}: a {kind} name must be a DNS-1123 label "
            "(at most 63 lower-case alphanumerics or '-')"
        )
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        problems.append(f".metadata.name {name!r} is not a DNS-1123 subdomain")
    problems += label_problems(".metadata.labels", meta.get("labels"))
    for key in meta.get("annotations") or {}:
        key_problem = qualified_key_problem(str(key))
        if key_problem:
            problems.append(f".metadata.annotations: key {key!r}: {key_problem}")
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if isinstance(selector, dict):
        labels = (
            selector.get("matchLabels")
            if "matchLabels" in selector
            else (selector if kind in {"Service", "ReplicationController"} else None)
        )
        problems += label_problems(".spec.selector", labels)
    template = spec.get("template")
    if isinstance(template, dict):
        problems += label_problems(
            ".spec.template.metadata.labels", (template.get("metadata") or {}).get("labels")
        )
    pod = pod_spec_of(obj)
    if pod:
        where, pod_spec = pod
        for group in ("initContainers", "containers"):
            for i, container in enumerate(pod_spec.get(group) or []):
                cname = container.get("name", "")
                if len(cname) > 63 or not DNS1123_LABEL.match(cname):
                    problems.append(f"{where}.{group}[{i}].name {cname!r} is not a DNS-1123 label")
                for j, port in enumerate(container.get("ports") or []):
                    pname = port.get("name")
                    if pname is not None and (
                        len(pname) > 15
                        or not IANA_SVC_NAME.match(pname)
                        or "--" in pname
                        or not re.search("[a-z]", pname)
                    ):
                        problems.append(
                            f"{where}.{group}[{i}].ports[{j}].name {pname!r} is not an IANA "
                            "service name (at most 15 lower-case alphanumerics or '-', with a "
                            "letter, no '--')"
                        )
    if kind == "Service":
        for i, port in enumerate(spec.get("ports") or []):
            pname = port.get("name")
            if pname is not None and (len(pname) > 63 or not DNS1123_LABEL.match(pname)):
                problems.append(f".spec.ports[{i}].name {pname!r} is not a DNS-1123 label")
    return problems


def clean_kubeconform_msg(msg: str) -> str:
    # "problem validating schema. Check JSON formatting: jsonschema validation failed with
    #  'file:///...#' - at '/spec/...': ..." -> "at '/spec/...': ..."
    return re.sub(
        r"^problem validating schema\. Check JSON formatting: jsonschema validation "
        r"failed with '[^']*' - ",
        "",
        msg,
    )


def step_validate(ctx: Context) -> None:
    if not ctx.rendered:
        report(ctx, Result("validate", "all", "FAIL", "nothing rendered to validate"))
        return
    t0 = time.monotonic()
    crd_dir = ctx.vendor / "crd-schemas"
    if not ctx.online and not crd_dir.is_dir():
        raise SetupError(f"{crd_dir} not found (make crd-schemas writes it from the vendored CRDs)")
    versions = [ctx.kube_version, *(v for v in ctx.extra_versions if v != ctx.kube_version)]
    # problems[file][message] -> the Kubernetes versions it shows up for
    problems: dict[str, dict[str, list[str]]] = {str(p): {} for p in ctx.rendered.values()}
    valid: dict[str, int] = {}
    seen: dict[str, int] = {}
    meta_validator = None
    for version in versions:
        if ctx.online:
            locations = ["default", ONLINE_CRD_CATALOG]
        else:
            schema_root = k8s_schema_dir(ctx, version)
            if version == ctx.kube_version:
                meta_validator = object_meta_validator(schema_root, version)
            locations = [
                str(schema_root) + "/{{.NormalizedKubernetesVersion}}-standalone{{.StrictSuffix}}/"
                "{{.ResourceKind}}{{.KindSuffix}}.json",
                str(crd_dir) + "/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json",
            ]
        cmd = [
            ctx.tool("kubeconform"),
            "-strict",
            "-summary",
            "-verbose",
            "-output",
            "json",
            "-kubernetes-version",
            version.lstrip("v"),
        ]
        for location in locations:
            cmd += ["-schema-location", location]
        timeout = None
        if ctx.online:  # keep what was downloaded for the next run
            (ctx.out / "schema-cache").mkdir(parents=True, exist_ok=True)
            cmd += ["-cache", str(ctx.out / "schema-cache")]
            timeout = ctx.online_timeout
            say(
                f"      validate: fetching schemas for Kubernetes {version} from kubeconform's "
                f"default catalog and {ONLINE_CRD_CATALOG.split('{{')[0]} "
                f"(gives up after {timeout:.0f} s; K8S_CHECK_ONLINE_TIMEOUT)"
            )
        try:
            proc = run([*cmd, *map(str, ctx.rendered.values())], timeout=timeout)
            resources_out = json.loads(proc.stdout).get("resources") or []
        except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            timed_out = isinstance(exc, subprocess.TimeoutExpired)
            summary = (
                f"the online schema catalogs did not answer within {timeout or 0:.0f} s "
                "(unset K8S_CHECK_ONLINE to use the vendored schemas)"
                if timed_out
                else "kubeconform failed"
            )
            details = [] if timed_out else tail(proc.stdout + proc.stderr)
            report(ctx, Result("validate", f"all (Kubernetes {version})", "FAIL", summary, details))
            return
        for res in resources_out:
            file = res.get("filename", "")
            if version == ctx.kube_version:
                seen[file] = seen.get(file, 0) + 1
            label = (
                f"{res.get('kind') or '?'}/{res.get('name') or '?'} ({res.get('version') or '?'})"
            )
            if res.get("status") == "statusValid":
                if version == ctx.kube_version:
                    valid[file] = valid.get(file, 0) + 1
                continue
            if res.get("status") == "statusSkipped":
                msg = "skipped by kubeconform"
            else:
                msg = clean_kubeconform_msg(res.get("msg", ""))
                if "could not find schema" in msg:
                    msg += (
                        " (unknown kind or apiVersion: no Kubernetes or vendored CRD schema for it)"
                    )
            problems.setdefault(file, {}).setdefault(f"{label}: {msg}", []).append(version)
    custom_groups = {p.name for p in crd_dir.iterdir() if p.is_dir()} if crd_dir.is_dir() else set()
    elapsed = (time.monotonic() - t0) / max(len(ctx.rendered), 1)
    for name, path in ctx.rendered.items():
        t1 = time.monotonic()
        details = [
            msg if len(vs) == len(versions) else f"{msg} [Kubernetes {', '.join(vs)}]"
            for msg, vs in problems.get(str(path), {}).items()
        ]
        docs = load_docs(path)
        for obj in docs:
            found = semantic_problems(obj)
            group = str(obj.get("apiVersion", "")).rpartition("/")[0]
            if meta_validator is not None and group in custom_groups:
                # CRD schemas leave metadata open; hold it to ObjectMeta like the API server does.
                for err in meta_validator.iter_errors(obj.get("metadata") or {}):
                    where = "".join(f".{p}" for p in err.absolute_path)
                    found.append(f".metadata{where}: {err.message}")
            details += [f"{obj_name(obj)}: {p}" for p in found]
        if seen.get(str(path), 0) != len(docs):
            details.append(
                f"kubeconform saw {seen.get(str(path), 0)} objects, the YAML has {len(docs)}"
            )
        where = "online catalogs" if ctx.online else "Kubernetes + vendored CRD schemas"
        summary = (
            f"{len(docs)} objects valid for Kubernetes {', '.join(versions)} ({where})"
            if not details
            else f"{len(details)} problem(s) in {len(docs)} objects"
        )
        report(
            ctx,
            Result(
                "validate",
                name,
                "FAIL" if details else "PASS",
                summary,
                details,
                elapsed + time.monotonic() - t1,
            ),
        )


# ---- checkov ----------------------------------------------------------------------------------


SKIP_WAIVE = ("skip", "waive")


@dataclass
class CheckovPolicy:
    skip: dict[str, str]  # check id -> reason; the check is not run
    waive: dict[str, tuple[str, list[str]]]  # check id -> (reason, Kind/name patterns)
    problems: list[str]


def load_checkov_policy(path: Path) -> CheckovPolicy:
    """hack/checkov.yaml: `skip: {ID: reason}` and `waive: {ID: {reason, objects: [Kind/name]}}`,
    every reason a non-empty sentence."""
    doc = yaml.safe_load(path.read_text()) or {}
    problems = [f"unknown key {k!r} (expected skip, waive)" for k in doc if k not in SKIP_WAIVE]
    skip: dict[str, str] = {}
    for check, reason in (doc.get("skip") or {}).items():
        if not isinstance(reason, str) or len(reason.strip()) < 10:
            problems.append(f"skip {check}: needs a reason (a sentence saying why)")
        skip[str(check)] = str(reason or "")
    waive: dict[str, tuple[str, list[str]]] = {}
    for check, entry in (doc.get("waive") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        reason, objects = entry.get("reason"), entry.get("objects")
        if not isinstance(reason, str) or len(reason.strip()) < 10:
            problems.append(f"waive {check}: needs a reason (a sentence saying why)")
        if not isinstance(objects, list) or not objects:
            problems.append(f"waive {check}: needs objects, a list of Kind/name (patterns)")
            objects = []
        if check in skip:
            problems.append(f"{check} is both skipped and waived")
        waive[str(check)] = (str(reason or ""), [str(o) for o in objects])
    return CheckovPolicy(skip, waive, problems)


def checkov_object(resource: str) -> str:
    """checkov's resource id ("Kind.namespace.name", graph checks add ".<labels...>" to Pods)
    as Kind/name."""
    match = re.match(r"^Pod\.[^.]+\.([^.]+)\.", resource)
    if match:
        return f"Pod/{match.group(1)}"
    parts = resource.split(".", 2)
    return f"{parts[0]}/{parts[2]}" if len(parts) == 3 else resource


def step_checkov(ctx: Context) -> None:
    if not ctx.rendered:
        report(ctx, Result("checkov", "all", "FAIL", "nothing rendered to scan"))
        return
    t0 = time.monotonic()
    if not ctx.checkov_config.exists():
        raise SetupError(f"{ctx.checkov_config} not found")
    policy = load_checkov_policy(ctx.checkov_config)
    if policy.problems:
        report(
            ctx,
            Result(
                "checkov",
                rel(ctx.checkov_config),
                "FAIL",
                "exceptions without a reason or malformed",
                policy.problems,
            ),
        )
    scan_dir = ctx.out / "checkov" / "input"
    shutil.rmtree(scan_dir.parent, ignore_errors=True)
    scan_dir.mkdir(parents=True)
    for name, path in ctx.rendered.items():
        shutil.copy(path, scan_dir / f"{slug(name)}.yaml")
    result_dir = ctx.out / "checkov" / "results"
    cmd = [
        ctx.tool("checkov"),
        "--framework",
        "kubernetes",
        # "-d ." from inside the folder: checkov silently ignores files under a hidden folder
        # (such as .cache/) when given their full path.
        "-d",
        ".",
        # no calls to the vendor's platform (offline; no guideline links)
        "--skip-download",
        "-o",
        "json",
        "--output-file-path",
        str(result_dir),
    ]
    if policy.skip:
        cmd += ["--skip-check", ",".join(sorted(policy.skip))]
    proc = run(cmd, cwd=scan_dir, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    result_file = result_dir / "results_json.json"
    if proc.returncode not in (0, 1) or not result_file.exists():
        report(
            ctx,
            Result(
                "checkov",
                "all",
                "FAIL",
                f"checkov exited {proc.returncode}",
                tail(proc.stdout + proc.stderr),
            ),
        )
        return
    data = json.loads(result_file.read_text())
    passed: dict[str, int] = {}
    failed: dict[str, int] = {}
    waived: dict[str, int] = {}
    # "Kind/name: CHECK 'title'" -> the value sets (file slugs) it fails in, and where
    findings: dict[str, dict[str, str]] = {}
    used: set[tuple[str, str]] = set()
    for rep in data if isinstance(data, list) else [data]:
        results = rep.get("results") or {}
        for check in results.get("passed_checks") or []:
            key = Path(check.get("file_path", "")).stem
            passed[key] = passed.get(key, 0) + 1
        for check in results.get("failed_checks") or []:
            key = Path(check.get("file_path", "")).stem
            check_id = str(check.get("check_id"))
            obj = checkov_object(str(check.get("resource", "")))
            patterns = policy.waive.get(check_id, ("", []))[1]
            hit = next((p for p in patterns if fnmatch.fnmatchcase(obj, p)), None)
            if hit is not None:
                used.add((check_id, hit))
                waived[key] = waived.get(key, 0) + 1
                continue
            failed[key] = failed.get(key, 0) + 1
            lines = "-".join(map(str, check.get("file_line_range") or []))
            finding = f"{obj}: {check_id} {check.get('check_name')!r}"
            findings.setdefault(finding, {})[key] = f"{rel(ctx.out)}/rendered/{key}.yaml:{lines}"
    per_target = (time.monotonic() - t0) / max(len(ctx.rendered), 1)
    for name in ctx.rendered:
        key = slug(name)
        summary = (
            f"{passed.get(key, 0)} passed, {waived.get(key, 0)} waived, "
            f"{len(policy.skip)} checks skipped ({rel(ctx.checkov_config)})"
        )
        if failed.get(key):
            summary = f"{failed[key]} failed (listed below), " + summary
        scanned = passed.get(key, 0) + failed.get(key, 0) + waived.get(key, 0)
        if not scanned:
            summary = "checkov checked nothing in it (did it read the file?)"
        report(
            ctx,
            Result(
                "checkov",
                name,
                "FAIL" if failed.get(key) or not scanned else "PASS",
                summary,
                [],
                per_target,
            ),
        )
    if findings:
        names = {slug(n): n for n in ctx.rendered}
        details = []
        for finding, where in sorted(findings.items()):
            first = next(iter(where.values()))
            if len(where) == len(ctx.rendered):
                details.append(f"{finding} (every value set; {first})")
            else:
                sets = ", ".join(names.get(k, k) for k in where)
                details.append(f"{finding} ({sets}; {first})")
        report(
            ctx,
            Result(
                "checkov",
                "findings",
                "FAIL",
                f"{len(findings)} distinct failures: fix them, or waive them with a reason in "
                f"{rel(ctx.checkov_config)}",
                details,
            ),
        )
    stale = [
        f"waive {check_id}: {pattern} matched no failure (fixed? remove it)"
        for check_id, (_, patterns) in policy.waive.items()
        for pattern in patterns
        if (check_id, pattern) not in used
    ]
    if stale:
        report(
            ctx,
            Result(
                "checkov",
                rel(ctx.checkov_config),
                "FAIL",
                "waivers that no longer match a failure",
                stale,
            ),
        )


# ---- promtool ---------------------------------------------------------------------------------


def prometheus_rules(path: Path) -> list[dict[str, Any]]:
    return [
        doc
        for doc in load_docs(path)
        if doc.get("kind") == "PrometheusRule"
        and str(doc.get("apiVersion", "")).startswith("monitoring.coreos.com/")
    ]


def alerts_of(groups: Iterable[dict[str, Any]]) -> list[str]:
    return [
        rule["alert"]
        for group in groups
        for rule in group.get("rules") or []
        if isinstance(rule, dict) and "alert" in rule
    ]


def tested_alerts(test_doc: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Alert names with an alert_rule_test case, and those with a case expecting them to fire."""
    any_case, firing = set(), set()
    for test in test_doc.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            name = case.get("alertname")
            if name:
                any_case.add(name)
                if case.get("exp_alerts"):
                    firing.add(name)
    return any_case, firing


def check_committed_rules(
    ctx: Context, committed: Path, groups: list[Any], rules_text: str, chosen: str
) -> None:
    """A rules file kept beside the chart's promtool tests must equal the extracted rules
    (--write-promtool-rules rewrites it)."""
    target = f"committed {rel(committed)}"
    if ctx.write_promtool_rules:
        header = (
            "# Generated: the groups of the chart's PrometheusRule, rendered with release "
            f"{ctx.release}, namespace\n# {ctx.namespace} and the value set {chosen} "
            "(hack/k8s-check.sh --write-promtool-rules). Do not edit.\n"
        )
        if committed.exists():
            lines = committed.read_text().splitlines(keepends=True)
            kept = "".join(
                line
                for line in lines[
                    : next(
                        (i for i, line in enumerate(lines) if not line.startswith("#")), len(lines)
                    )
                ]
            )
            header = kept or header
        committed.write_text(header + rules_text)
        report(ctx, Result("promtool", target, "PASS", "rewritten from the rendered chart"))
        return
    try:
        same = (yaml.safe_load(committed.read_text()) or {}).get("groups") == groups
    except yaml.YAMLError:
        same = False
    report(
        ctx,
        Result(
            "promtool",
            target,
            "PASS" if same else "FAIL",
            f"matches the rules rendered with {chosen}"
            if same
            else f"differs from the rules rendered with {chosen}: regenerate it with "
            "hack/k8s-check.sh --steps promtool --write-promtool-rules",
        ),
    )


def step_promtool(ctx: Context) -> None:
    t0 = time.monotonic()
    promtool = ctx.tool("promtool")
    tests_dir = ctx.chart / "tests" / "promtool"
    test_files = sorted(tests_dir.glob("*_test.yaml")) if tests_dir.is_dir() else []

    # Which rendered set's rules the unit tests run against: the chosen ci value set, else the
    # first set that renders a PrometheusRule, else the defaults with the rule switched on.
    chosen = None
    if ctx.promtool_values in ctx.rendered and prometheus_rules(ctx.rendered[ctx.promtool_values]):
        chosen = ctx.promtool_values
    else:
        chosen = next((n for n, p in ctx.rendered.items() if prometheus_rules(p)), None)
    if chosen is None:
        out = ctx.out / "rendered-extra" / "prometheusrule.yaml"
        proc = helm_template(ctx, out, ["--set", "metrics.prometheusRule.enabled=true"])
        if proc.returncode != 0:
            report(
                ctx,
                Result(
                    "promtool",
                    "render",
                    "FAIL",
                    "helm template --set metrics.prometheusRule.enabled=true failed",
                    tail(proc.stderr),
                ),
            )
            return
        ctx.rendered.setdefault("prometheusrule", out)
        chosen = "prometheusrule"
    rules_objs = prometheus_rules(ctx.rendered[chosen])
    if not rules_objs:
        report(
            ctx,
            Result(
                "promtool",
                chosen,
                "FAIL",
                "no PrometheusRule rendered, not even with metrics.prometheusRule.enabled=true",
            ),
        )
        return

    work = ctx.out / "promtool"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    groups = [g for obj in rules_objs for g in (obj.get("spec") or {}).get("groups") or []]
    rules_file = work / "rules.yaml"
    rules_text = yaml.safe_dump({"groups": groups}, sort_keys=False, width=100)
    rules_file.write_text(rules_text)

    # promtool check rules on every rendered set's rules (they can differ by values).
    for name, path in ctx.rendered.items():
        objs = prometheus_rules(path)
        if not objs:
            continue
        target = work / f"check-{slug(name)}.yaml"
        target.write_text(
            yaml.safe_dump(
                {"groups": [g for o in objs for g in (o.get("spec") or {}).get("groups") or []]},
                sort_keys=False,
            )
        )
        proc = run([promtool, "check", "rules", str(target)])
        found = ", ".join(
            f"{len(alerts_of((o.get('spec') or {}).get('groups') or []))} alerts in "
            f"PrometheusRule/{(o.get('metadata') or {}).get('name')}"
            for o in objs
        )
        report(
            ctx,
            Result(
                "promtool",
                f"check rules ({name})",
                "PASS" if proc.returncode == 0 else "FAIL",
                found if proc.returncode == 0 else "promtool check rules failed",
                [] if proc.returncode == 0 else tail(proc.stdout + proc.stderr),
            ),
        )

    if not test_files:
        report(
            ctx,
            Result(
                "promtool",
                "test rules",
                "FAIL",
                f"no promtool unit tests in {rel(tests_dir)} (*_test.yaml)",
            ),
        )
        return
    alerts = alerts_of(groups)
    all_cases: set[str] = set()
    all_firing: set[str] = set()
    for test_file in test_files:
        t1 = time.monotonic()
        test_doc = yaml.safe_load(test_file.read_text()) or {}
        copy = work / test_file.name
        # rule_files resolve relative to the test file: each one names the extracted rules.
        rule_files = test_doc.get("rule_files") or []
        for rule_file in rule_files:
            dest = (work / rule_file).resolve()
            if not dest.is_relative_to(work.resolve()):
                report(
                    ctx,
                    Result(
                        "promtool",
                        f"test rules ({test_file.name})",
                        "FAIL",
                        f"rule_files entry {rule_file!r} points outside the test folder",
                    ),
                )
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest != rules_file.resolve():
                shutil.copy(rules_file, dest)
            committed = tests_dir / rule_file
            if committed.exists() or ctx.write_promtool_rules:
                check_committed_rules(ctx, committed, groups, rules_text, chosen)
        shutil.copy(test_file, copy)
        proc = run([promtool, "test", "rules", copy.name], cwd=work)
        cases, firing = tested_alerts(test_doc)
        all_cases |= cases
        all_firing |= firing
        ok = proc.returncode == 0
        report(
            ctx,
            Result(
                "promtool",
                f"test rules ({test_file.name}, rules of {chosen})",
                "PASS" if ok else "FAIL",
                f"{len(test_doc.get('tests') or [])} tests" if ok else "promtool test rules failed",
                [] if ok else tail(proc.stdout + proc.stderr, 60),
                time.monotonic() - t1,
            ),
        )

    details = []
    for alert in sorted(set(alerts)):
        if alert not in all_cases:
            details.append(f"alert {alert} has no alert_rule_test case")
        elif alert not in all_firing:
            details.append(
                f"alert {alert} has no test case in which it fires (only empty exp_alerts)"
            )
    for alert in sorted(all_cases - set(alerts)):
        details.append(
            f"tests name alert {alert}, which the rules do not define (renamed or a typo?)"
        )
    report(
        ctx,
        Result(
            "promtool",
            "alert coverage",
            "FAIL" if details else "PASS",
            f"{len(set(alerts))} alerts, each with a firing test case"
            if not details
            else "alerts without a firing test case",
            details,
            time.monotonic() - t0,
        ),
    )


# ---- devloop ----------------------------------------------------------------------------------

DIGEST_IMAGE = re.compile(r"^[^@\s]+:[^@\s/]+@sha256:[0-9a-f]{64}$")


def step_devloop(ctx: Context) -> None:
    skaffold = ROOT / "skaffold.yaml"
    schema_file = ctx.vendor / "schemas" / "skaffold-v4beta14.json"
    if not skaffold.exists():
        report(
            ctx, Result("devloop", "skaffold.yaml", "SKIP", "skaffold.yaml does not exist (yet)")
        )
    elif not schema_file.exists():
        raise SetupError(f"{schema_file} not found (it is vendored in the repository)")
    else:
        schema = json.loads(schema_file.read_text())
        validator_cls = jsonschema.validators.validator_for(schema)
        validator = validator_cls(schema)
        details = []
        try:
            docs = [d for d in yaml.safe_load_all(skaffold.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            docs, details = [], [f"not valid YAML: {exc}"]
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("apiVersion") != "skaffold/v4beta14":
                details.append(
                    f"document {i}: apiVersion must be skaffold/v4beta14, "
                    f"got {doc.get('apiVersion') if isinstance(doc, dict) else doc!r}"
                )
                continue
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                where = "/".join(map(str, err.absolute_path)) or "(root)"
                details.append(f"document {i}: {where}: {err.message[:300]}")
        report(
            ctx,
            Result(
                "devloop",
                "skaffold.yaml",
                "FAIL" if details else "PASS",
                f"{len(docs)} config(s) valid against {schema_file.name}"
                if not details
                else f"does not match {schema_file.name}",
                details,
            ),
        )

    kind_config = ROOT / "k8s" / "kind-config.yaml"
    if not kind_config.exists():
        report(ctx, Result("devloop", "k8s/kind-config.yaml", "SKIP", "does not exist (yet)"))
        return
    details = []
    try:
        doc = yaml.safe_load(kind_config.read_text()) or {}
    except yaml.YAMLError as exc:
        doc, details = {}, [f"not valid YAML: {exc}"]
    if doc.get("kind") != "Cluster":
        details.append(f"kind must be Cluster, got {doc.get('kind')!r}")
    if doc.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        details.append(f"apiVersion must be kind.x-k8s.io/v1alpha4, got {doc.get('apiVersion')!r}")
    nodes = doc.get("nodes") or []
    if not nodes:
        details.append("nodes: none listed, so kind would use its default node image (not pinned)")
    for i, node in enumerate(nodes):
        image = (node or {}).get("image")
        if not image or not DIGEST_IMAGE.match(str(image)):
            details.append(
                f"nodes[{i}].image {image!r} is not pinned by digest "
                "(kindest/node:vX.Y.Z@sha256:<64 hex>)"
            )
    report(
        ctx,
        Result(
            "devloop",
            "k8s/kind-config.yaml",
            "FAIL" if details else "PASS",
            f"{len(nodes)} node(s), images pinned by digest"
            if not details
            else "not a pinned kind Cluster config",
            details,
        ),
    )


# ---- main -------------------------------------------------------------------------------------

STEP_FUNCS: dict[str, Callable[[Context], None]] = {
    "lint": step_lint,
    "render": step_render,
    "validate": step_validate,
    "checkov": step_checkov,
    "promtool": step_promtool,
    "devloop": step_devloop,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    versions = load_versions_env()
    parser = argparse.ArgumentParser(
        prog="hack/k8s-check.sh",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n\n")[1:3]),
    )
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated steps (default: all): {','.join(STEPS)}",
    )
    parser.add_argument("--chart", type=Path, default=ROOT / "charts" / "loginpipe")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / ".cache" / "k8s-check",
        help="work folder (rendered manifests, schemas, promtool files)",
    )
    parser.add_argument(
        "--vendor",
        type=Path,
        default=ROOT / "k8s" / "vendor",
        help="the vendored folder with crd-schemas/ and schemas/ (see its README.md)",
    )
    parser.add_argument("--release", default="loginpipe")
    parser.add_argument("--namespace", default="loginpipe")
    parser.add_argument(
        "--kube-version",
        default=versions.get("K8S_VALIDATE_VERSION", "1.33.0"),
        help="Kubernetes version to render for and validate against",
    )
    parser.add_argument(
        "--extra-versions",
        default=versions.get("K8S_VALIDATE_EXTRA_VERSIONS", ""),
        help="more Kubernetes versions to validate against (space-separated)",
    )
    parser.add_argument("--checkov-config", type=Path, default=ROOT / "hack" / "checkov.yaml")
    parser.add_argument(
        "--promtool-values",
        default=PROMTOOL_VALUES,
        help="ci value set whose rules the promtool unit tests run against",
    )
    parser.add_argument("--tools-bin", type=Path, default=ROOT / ".cache" / "tools" / "bin")
    parser.add_argument(
        "--write-promtool-rules",
        action="store_true",
        help="rewrite the chart's committed tests/promtool/rules.yaml from the rendered rules",
    )
    parser.add_argument("--report", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ctx = Context(
        chart=args.chart.resolve(),
        out=args.out.resolve(),
        vendor=args.vendor.resolve(),
        release=args.release,
        namespace=args.namespace,
        kube_version=args.kube_version,
        extra_versions=args.extra_versions.replace(",", " ").split(),
        online=os.environ.get("K8S_CHECK_ONLINE", "") == "1",
        online_timeout=float(os.environ.get("K8S_CHECK_ONLINE_TIMEOUT", "120")),
        tools_bin=args.tools_bin,
        checkov_config=args.checkov_config.resolve(),
        write_promtool_rules=args.write_promtool_rules,
        promtool_values=args.promtool_values,
    )
    needs_render = any(s in NEEDS_RENDER for s in args.steps)
    steps = [s for s in STEPS if s in args.steps or (s == "render" and needs_render)]
    t0 = time.monotonic()
    error = None
    try:
        if any(s != "devloop" for s in steps) and not (ctx.chart / "Chart.yaml").exists():
            raise SetupError(f"{ctx.chart}/Chart.yaml not found")
        ctx.out.mkdir(parents=True, exist_ok=True)
        for step in steps:
            STEP_FUNCS[step](ctx)
    except SetupError as exc:
        error = str(exc)
        say(f"ERROR {error}", sys.stderr)
    counts = {s: sum(r.status == s for r in ctx.results) for s in ("PASS", "FAIL", "SKIP")}
    verdict = "FAILED" if counts["FAIL"] or error else "OK"
    say(
        f"k8s-check: {verdict} ({counts['PASS']} checks passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {time.monotonic() - t0:.1f}s)"
    )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(
            json.dumps(
                {
                    "ok": verdict == "OK",
                    "error": error,
                    "steps": steps,
                    "results": [asdict(r) for r in ctx.results],
                },
                indent=2,
            )
        )
    if error:
        return 2
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
