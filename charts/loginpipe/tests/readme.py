"""The chart README's parameter tables, generated from the `## @param` comments of values.yaml.

    python charts/loginpipe/tests/readme.py           # rewrite the tables in README.md
    python charts/loginpipe/tests/readme.py --check   # exit 1 if README.md is out of date

Also fails when a leaf key of values.yaml has no `## @param` line, or a `## @param` names a key
that values.yaml does not have: every value is documented, and only real ones.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
START, END = "<!-- parameters:start -->", "<!-- parameters:end -->"
SECTION = re.compile(r"^\s*## @section (.+)$")
PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")


def lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def leaves(node: Any, prefix: str = "") -> set[str]:
    """Keys whose value is a scalar, a list or an empty map (documented as one parameter)."""
    if isinstance(node, dict) and node:
        out: set[str] = set()
        for k, v in node.items():
            out |= leaves(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip(".")}


def render_default(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|") + "`"


def tables(text: str, values: dict[str, Any]) -> tuple[str, list[str]]:
    problems: list[str] = []
    documented: set[str] = set()
    out: list[str] = []
    for line in text.splitlines():
        if m := SECTION.match(line):
            out += ["", f"### {m.group(1)}", ""]
            out += ["| parameter | description | default |", "| --- | --- | --- |"]
        elif m := PARAM.match(line):
            key, desc = m.group(1), m.group(2).strip()
            try:
                default = lookup(values, key)
            except KeyError:
                problems.append(f"## @param {key}: no such key in values.yaml")
                continue
            documented.add(key)
            cell = desc.replace("|", "\\|")
            out.append(f"| `{key}` | {cell} | {render_default(default)} |")
    for key in sorted(leaves(values)):
        if not any(key == d or key.startswith(d + ".") for d in documented):
            problems.append(f"{key}: no ## @param line in values.yaml")
    return "\n".join(out).strip() + "\n", problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is current")
    args = parser.parse_args(argv)
    text = VALUES.read_text()
    generated, problems = tables(text, yaml.safe_load(text))
    for p in problems:
        sys.stderr.write(f"readme: {p}\n")
    readme = README.read_text()
    head, sep1, rest = readme.partition(START)
    _, sep2, tail = rest.partition(END)
    if not (sep1 and sep2):
        sys.stderr.write(f"readme: {README} lacks the {START} ... {END} markers\n")
        return 1
    updated = f"{head}{START}\n{generated}{END}{tail}"
    if args.check:
        if updated != readme:
            sys.stderr.write("readme: README.md parameters are out of date: run tests/readme.py\n")
            return 1
        return 1 if problems else 0
    README.write_text(updated)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
