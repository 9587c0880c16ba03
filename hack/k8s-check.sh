#!/usr/bin/env bash
# Offline verification of the Kubernetes deployables (CI entry point): helm lint, helm template,
# strict schema validation (Kubernetes' own schemas + k8s/vendor/crd-schemas, unknown kinds fail),
# checkov, promtool on the chart's alerts, skaffold/kind config checks. One PASS/FAIL/SKIP line
# per check, a closing verdict line, exit 1 if any check failed (2 on a set-up error).
#
# Usage: hack/k8s-check.sh [--steps lint,render,validate,checkov,promtool,devloop] [--report FILE]
#                          [--chart DIR] [--out DIR] [--help for all options]
#
# Installs the pinned tools first (hack/tools.sh install: a fraction of a second when cached).
# Environment:
#   K8S_CHECK_NO_INSTALL=1   do not run hack/tools.sh install (the tools must be there already)
#   K8S_CHECK_ONLINE=1       validate against the public schema catalogs instead of the vendored
#                            copies (kubeconform's default Kubernetes schemas + datreeio CRDs-catalog)
#   K8S_CHECK_ONLINE_TIMEOUT=S  give up on the online catalogs after S seconds (default 120)
# Output goes to .cache/k8s-check/ (rendered/<value set>.yaml, promtool/, checkov/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
  -h | --help | help)
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo
    ;;
esac

if [[ "${K8S_CHECK_NO_INSTALL:-0}" != 1 ]]; then
  "$ROOT/hack/tools.sh" install >&2
fi

TOOLS_PYTHON="$ROOT/.cache/tools/venv/bin/python"
if [[ ! -x "$TOOLS_PYTHON" ]]; then
  echo "k8s-check: ERROR: the tools venv is missing: run hack/tools.sh install" >&2
  exit 2
fi
exec "$TOOLS_PYTHON" "$ROOT/hack/k8s_check.py" "$@"
