"""Strict JSON schemas for kubeconform, made from the CRDs vendored in k8s/vendor.

    python hack/crd_schemas.py          write k8s/vendor/crd-schemas/ from k8s/vendor/crds/
    python hack/crd_schemas.py --check  exit 1 if the committed schemas are not what the CRDs
                                        give, or a vendored file's sha256 differs from
                                        k8s/vendor/sources.json
    python hack/crd_schemas.py --fetch  re-copy the Go-module sources (KEDA, prometheus-operator)
                                        from the Go module proxy at the versions in sources.json

Each served version of each CRD gives `<group>/<kind lowercased>_<version>.json` (kubeconform's
`{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json` layout). The conversion is what a
structural CRD means to the API server with strict field validation:

- every object schema that lists `properties` and neither allows unknown fields
  (`x-kubernetes-preserve-unknown-fields: true`) nor sets `additionalProperties` gets
  `additionalProperties: false` (an unknown field is an error); inside allOf/anyOf/oneOf/not,
  which only test values, nothing is added;
- `apiVersion` and `kind` are fixed to the CRD's group/version and kind; `metadata` is an object
  (the chart check holds it to ObjectMeta separately, as the API server does);
- `nullable: true` also admits null; `x-kubernetes-int-or-string: true` without a type admits an
  integer or a string.

Pure Python (PyYAML only), so it runs with the tools venv or the project venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "k8s" / "vendor"
SOURCES = VENDOR / "sources.json"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def strictify(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema node with the structural-schema rules made explicit."""
    if isinstance(schema, list):
        return [strictify(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: strictify(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = strictify(value)
        # allOf/anyOf/oneOf/not are value validations in a structural schema: their `properties`
        # only name fields to test, never the object's field set, so they are copied as they are.
        else:
            out[key] = value
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def schemas_of_crd(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`<group>/<kind>_<version>.json` -> strict schema, for every served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    out: dict[str, dict[str, Any]] = {}
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        openapi = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
        schema = strictify(openapi)
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        props["metadata"] = {"type": "object"}
        schema.setdefault("type", "object")
        schema["additionalProperties"] = False
        out[f"{group}/{kind.lower()}_{version['name']}.json"] = schema
    return out


def render_all() -> dict[str, str]:
    """Relative path under crd-schemas/ -> file text, from every vendored CRD."""
    files: dict[str, str] = {}
    for path in sorted((VENDOR / "crds").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schemas_of_crd(doc).items():
                if name in files:
                    raise SystemExit(f"crd_schemas: {name} comes from two CRDs (second: {path})")
                files[name] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_sources() -> list[dict[str, Any]]:
    return list(json.loads(SOURCES.read_text())["files"])


def check() -> list[str]:
    problems = []
    for entry in load_sources():
        path = VENDOR / entry["path"]
        if not path.exists():
            problems.append(f"{entry['path']}: listed in sources.json but missing")
        elif sha256(path) != entry["sha256"]:
            problems.append(
                f"{entry['path']}: sha256 {sha256(path)} differs from sources.json "
                f"({entry['sha256']}); re-vendor it or update the entry with its origin"
            )
    listed = {e["path"] for e in load_sources()}
    for path in sorted(VENDOR.rglob("*")):
        rel = str(path.relative_to(VENDOR))
        if path.is_file() and rel.startswith(("crds/", "schemas/")) and rel not in listed:
            problems.append(f"{rel}: vendored but not listed in sources.json")
    want = render_all()
    have_dir = VENDOR / "crd-schemas"
    have = {str(p.relative_to(have_dir)) for p in have_dir.rglob("*.json")}
    for name, text in want.items():
        path = have_dir / name
        if not path.exists():
            problems.append(f"crd-schemas/{name}: missing (run make crd-schemas)")
        elif path.read_text() != text:
            problems.append(f"crd-schemas/{name}: out of step with its CRD (run make crd-schemas)")
    for name in sorted(have - set(want)):
        problems.append(f"crd-schemas/{name}: no vendored CRD gives it (run make crd-schemas)")
    return problems


def write() -> int:
    out = VENDOR / "crd-schemas"
    if out.exists():
        shutil.rmtree(out)
    files = render_all()
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    say(f"crd_schemas: wrote {len(files)} schemas under {out.relative_to(ROOT)}")
    return 0


def fetch() -> int:
    """Copy each Go-module source again from the module proxy and record its sha256."""
    data = json.loads(SOURCES.read_text())
    for entry in data["files"]:
        module = entry.get("go_module")
        if not module:
            continue
        proc = subprocess.run(  # noqa: S603
            ["go", "mod", "download", "-json", module],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if proc.returncode != 0:
            say(f"crd_schemas: go mod download {module} failed:\n{proc.stdout}{proc.stderr}")
            return 1
        src = Path(json.loads(proc.stdout)["Dir"]) / entry["module_path"]
        dst = VENDOR / entry["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        entry["sha256"] = sha256(dst)
        say(f"crd_schemas: {entry['path']} <- {module} {entry['module_path']}")
    SOURCES.write_text(json.dumps(data, indent=2) + "\n")
    return write()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/crd_schemas.py", description=__doc__.split("\n\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify; write nothing")
    mode.add_argument("--fetch", action="store_true", help="re-copy Go-module sources, then write")
    args = parser.parse_args(argv)
    if args.fetch:
        return fetch()
    if args.check:
        problems = check()
        for problem in problems:
            say(f"crd_schemas: {problem}")
        if not problems:
            say("crd_schemas: vendored files match sources.json; schemas match their CRDs")
        return 1 if problems else 0
    return write()


if __name__ == "__main__":
    sys.exit(main())
