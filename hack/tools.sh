#!/usr/bin/env bash
# Pinned tools for the offline Kubernetes checks (hack/k8s-check.sh), cached under .cache/.
#
# Usage: hack/tools.sh install|path|versions|lock
#
#   install   make every tool available at its pinned version (hack/versions.env); idempotent,
#             a few seconds when everything is cached:
#               helm, kubeconform  the ones on PATH if they are the pinned versions, else
#                                  `go install` into ~/.cache/loginpipe/go-bin/<name>-<version>
#                                  (Go module proxy; Go's own caches under $HOME), so a fresh
#                                  clone on the same machine reuses the build
#               promtool           Debian's `prometheus` package (apt-get; its system service is
#                                  never left running or enabled)
#               checkov, kubernetes-validate, jsonschema, PyYAML
#                                  own venv .cache/tools/venv (not the project's .venv), from the
#                                  hashed lock hack/tools-requirements.txt (--require-hashes)
#             and links the chosen binaries into .cache/tools/bin.
#   path      print the directory to put first on PATH (.cache/tools/bin), e.g.
#               PATH="$(hack/tools.sh path):$PATH"
#   versions  print each tool's pinned and found version; exit 1 if one is missing or off-pin
#   lock      regenerate hack/tools-requirements.txt from the pins (needs uv)
#
# Environment (defaults):
#   TOOLS_PYTHON=python3     interpreter the tools venv is created with (>= 3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$ROOT/hack/lib/apt.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$ROOT/hack/versions.env"

CACHE="$ROOT/.cache"
TOOLS_BIN="$CACHE/tools/bin"
VENV="$CACHE/tools/venv"
VENV_STAMP="$VENV/.installed"
LOCK="$ROOT/hack/tools-requirements.txt"
# Long builds live outside the checkout, keyed by version: a new clone reuses them.
HOME_CACHE="${LOGINPIPE_HOME_CACHE:-$HOME/.cache/loginpipe}"
GO_BIN="$HOME_CACHE/go-bin"
TOOLS_PYTHON="${TOOLS_PYTHON:-python3}"

say() { echo "tools: $*"; }
die() { echo "tools: ERROR: $*" >&2; exit 1; }

# ---- versions of what is found ----------------------------------------------------------------

# Module version a Go binary was built from (go install leaves helm's own `version` at "v3.x"
# without the release ldflags, so the module version is the reliable one), else empty.
go_mod_version() { # BIN MODULE
  command -v go >/dev/null 2>&1 || return 0
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

helm_version() { # BIN -> vX.Y.Z or empty
  local v
  v="$(go_mod_version "$1" helm.sh/helm/v3)"
  [[ -n "$v" ]] || v="$("$1" version --template '{{.Version}}' 2>/dev/null || true)"
  echo "$v"
}

kubeconform_version() { # BIN -> vX.Y.Z or empty
  local v
  v="$(go_mod_version "$1" github.com/yannh/kubeconform)"
  [[ -n "$v" ]] || v="$("$1" -v 2>/dev/null || true)"
  echo "$v"
}

prometheus_deb_version() { dpkg-query -W -f '${Version}' prometheus 2>/dev/null || true; }

venv_key() {
  echo "python=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)"
  cksum <"$LOCK"
}

# ---- install ----------------------------------------------------------------------------------

# Candidates for a Go tool: the version-keyed build cache first (what a previous install built), then PATH.
find_go_tool() { # NAME WANT VERSION_FN -> path or empty
  local name="$1" want="$2" fn="$3" bin
  for bin in "$GO_BIN/$name-$want/$name" "$(command -v "$name" 2>/dev/null || true)"; do
    [[ -n "$bin" && -x "$bin" ]] || continue
    if [[ "$("$fn" "$bin")" == "$want" ]]; then echo "$bin"; return 0; fi
  done
}

install_go_tool() { # NAME WANT VERSION_FN PACKAGE
  local name="$1" want="$2" fn="$3" pkg="$4" bin
  bin="$(find_go_tool "$name" "$want" "$fn")"
  if [[ -z "$bin" ]]; then
    command -v go >/dev/null 2>&1 ||
      die "$name $want not found and no Go toolchain to build it: install Go >= 1.24 or put $name $want on PATH."
    say "building $name $want with go install (a few minutes, cached in $GO_BIN) ..."
    mkdir -p "$GO_BIN/$name-$want"
    GOBIN="$GO_BIN/$name-$want" GOFLAGS=-modcacherw \
      go install "$pkg@$want"
    bin="$GO_BIN/$name-$want/$name"
    [[ "$("$fn" "$bin")" == "$want" ]] || die "built $bin but it reports '$("$fn" "$bin")', not $want."
  fi
  ln -sfn "$bin" "$TOOLS_BIN/$name"
}

install_promtool() {
  local have
  have="$(prometheus_deb_version)"
  if [[ -z "$have" ]] || ! command -v promtool >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 ||
      die "promtool not found and no apt-get: install Prometheus' promtool ${PROMETHEUS_DEB_VERSION%%+*} and put it on PATH."
    [[ $(id -u) -eq 0 ]] || die "promtool not found: run as root or: sudo apt-get install -y prometheus"

    say "installing promtool (Debian package prometheus=$PROMETHEUS_DEB_VERSION) with apt-get ..."
    # Only promtool is wanted: the package must not start (or enable) a Prometheus server.
    # If a point release replaced the pinned version on the mirror, take the distribution's
    # (`versions` reports the difference).
    apt_install_no_start prometheus "prometheus=$PROMETHEUS_DEB_VERSION" prometheus
    have="$(prometheus_deb_version)"
    say "installed prometheus $have (promtool; the prometheus service left stopped and disabled)"
  fi
  [[ "$have" == "$PROMETHEUS_DEB_VERSION" ]] ||
    say "WARNING: prometheus package $have installed, pinned $PROMETHEUS_DEB_VERSION (hack/versions.env)"
  ln -sfn "$(command -v promtool)" "$TOOLS_BIN/promtool"
}

check_lock_pins() {
  if ! grep -qxF "checkov==$CHECKOV_VERSION \\" "$LOCK" ||
    ! grep -qxF "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION \\" "$LOCK"; then
    die "$LOCK does not match hack/versions.env (checkov $CHECKOV_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION): run hack/tools.sh lock"
  fi
}

install_venv() {
  check_lock_pins
  if [[ -x "$VENV/bin/python" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$(venv_key)" ]]; then
    :
  else
    command -v "$TOOLS_PYTHON" >/dev/null 2>&1 || die "$TOOLS_PYTHON not found (set TOOLS_PYTHON)."
    say "creating $VENV (checkov $CHECKOV_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION) ..."
    rm -rf "$VENV"
    "$TOOLS_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"
    venv_key >"$VENV_STAMP"
  fi
  local t
  for t in checkov kubernetes-validate; do ln -sfn "$VENV/bin/$t" "$TOOLS_BIN/$t"; done
}

cmd_install() {
  local t0=$SECONDS
  mkdir -p "$TOOLS_BIN"
  # One install at a time (parallel make targets, a test run next to a manual one).
  exec 9>"$CACHE/tools/.lock"
  flock 9
  install_go_tool helm "v$HELM_VERSION" helm_version helm.sh/helm/v3/cmd/helm
  install_go_tool kubeconform "v$KUBECONFORM_VERSION" kubeconform_version \
    github.com/yannh/kubeconform/cmd/kubeconform
  install_promtool
  install_venv
  say "ready in $((SECONDS - t0))s: PATH=\"$TOOLS_BIN:\$PATH\""
}

# ---- versions ---------------------------------------------------------------------------------

cmd_versions() {
  local ok=0 found
  row() { # TOOL PINNED FOUND
    local mark=ok
    if [[ -z "$3" ]]; then mark=MISSING; ok=1
    elif [[ "$3" != "$2" && "$1" == promtool* && "${3%%+*}" == "${2%%+*}" ]]; then
      mark="ok (same upstream version, other Debian revision)"
    elif [[ "$3" != "$2" ]]; then mark=OFF-PIN; ok=1; fi
    printf "%-22s pinned %-21s found %-21s %s\n" "$1" "$2" "${3:-(none)}" "$mark"
  }
  found=""; [[ -x "$TOOLS_BIN/helm" ]] && found="$(helm_version "$TOOLS_BIN/helm")"
  row helm "v$HELM_VERSION" "$found"
  found=""; [[ -x "$TOOLS_BIN/kubeconform" ]] && found="$(kubeconform_version "$TOOLS_BIN/kubeconform")"
  row kubeconform "v$KUBECONFORM_VERSION" "$found"
  found=""; [[ -x "$TOOLS_BIN/promtool" ]] && found="$(prometheus_deb_version)"
  row "promtool (prometheus)" "$PROMETHEUS_DEB_VERSION" "$found"
  pyver() {
    [[ -x "$VENV/bin/python" ]] || return 0
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" \
      2>/dev/null || true
  }
  found=""; [[ -x "$TOOLS_BIN/checkov" ]] && found="$(pyver checkov)"
  row checkov "$CHECKOV_VERSION" "$found"
  found=""; [[ -x "$TOOLS_BIN/kubernetes-validate" ]] && found="$(pyver kubernetes-validate)"
  row kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" "$found"
  if [[ -x "$TOOLS_BIN/promtool" ]]; then
    echo "($("$TOOLS_BIN/promtool" --version 2>&1 | head -n 1))"
  fi
  return "$ok"
}

# ---- lock -------------------------------------------------------------------------------------

cmd_lock() {
  command -v uv >/dev/null 2>&1 || die "uv not found (pip install uv)."
  printf '%s\n' "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    jsonschema pyyaml |
    uv pip compile - --generate-hashes --python-version 3.11 --no-header -q -o "$LOCK.tmp"
  {
    echo "# Hashed lock of the Kubernetes-check tools venv (.cache/tools/venv), installed by"
    echo "# hack/tools.sh install with --require-hashes. Generated by \`hack/tools.sh lock\` (uv) from"
    echo "# the pins in hack/versions.env: checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION jsonschema pyyaml"
    cat "$LOCK.tmp"
  } >"$LOCK"
  rm -f "$LOCK.tmp"
  say "wrote ${LOCK#"$ROOT"/} ($(grep -c '^[a-zA-Z]' "$LOCK") packages)"
}

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  install) cmd_install ;;
  path) echo "$TOOLS_BIN" ;;
  versions) cmd_versions ;;
  lock) cmd_lock ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
