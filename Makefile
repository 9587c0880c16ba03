# loginpipe developer commands. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}'

# ---- set-up -------------------------------------------------------------------------------
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the locked Python dependencies

.PHONY: deps-run
deps-run: venv ## what `make run` needs: Python deps, Kafka jars (Maven, cached), redis-server (apt)
	hack/kafka.sh fetch
	hack/redis.sh install

.PHONY: deps
deps: deps-run tools ## everything, also the chart check tools and the schema registry the tests use
	hack/registry.sh fetch

.PHONY: tools
tools: ## pinned Kubernetes check tools (helm, kubeconform, promtool, checkov) into .cache/
	hack/tools.sh install

.PHONY: lock
lock: ## re-resolve requirements*.lock from pyproject.toml (needs uv)
	uv pip compile pyproject.toml -o requirements.lock --generate-hashes --python-version 3.11 -q
	uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --generate-hashes --python-version 3.11 -q

# ---- local infrastructure -------------------------------------------------------------------
REGISTRY ?= 0
.PHONY: infra-up
infra-up: deps-run ## start Kafka (localhost:9092) and Redis (localhost:6379); REGISTRY=1: the schema registry too
	hack/kafka.sh start
	hack/redis.sh start
	@if [ "$(REGISTRY)" = 1 ]; then hack/registry.sh start; fi

.PHONY: infra-down
infra-down: ## stop the local schema registry, Kafka and Redis (data is kept under .cache/run)
	hack/registry.sh stop
	hack/kafka.sh stop
	hack/redis.sh stop

.PHONY: registry-up
registry-up: ## start the schema registry (Apicurio, localhost:8081, ccompat API) on the local Kafka
	$(MAKE) infra-up REGISTRY=1

# The compatibility gate's own subjects: the released formats, registered again and again (a
# no-op once there); today's are checked against exactly those versions (check --released).
GATE_PREFIX ?= loginpipe-released-
.PHONY: schemas-check
schemas-check: venv registry-up ## CI's gate: today's message formats BACKWARD-compatible with the released ones
	LOGINPIPE_SCHEMA_SUBJECT_PREFIX=$(GATE_PREFIX) $(VENV)/bin/loginpipe schemas register --released
	LOGINPIPE_SCHEMA_SUBJECT_PREFIX=$(GATE_PREFIX) $(VENV)/bin/loginpipe schemas check --released

.PHONY: infra-status
infra-status: ## say whether the local Kafka and Redis are running
	@hack/kafka.sh status && echo "kafka: running" || echo "kafka: stopped"
	@hack/redis.sh status && echo "redis: running" || echo "redis: stopped"

.PHONY: infra-reset
infra-reset: infra-down ## stop the infrastructure and delete its data
	rm -rf .cache/run/kafka-9092 .cache/run/redis-6379

.PHONY: topics
topics: infra-up ## create the three topics (6 partitions) if missing
	$(VENV)/bin/loginpipe topics --partitions 6

# ---- run ------------------------------------------------------------------------------------
RATE ?= 1000
METRICS_PORTS ?= 9101,9102,9103
.PHONY: run
run: infra-up ## the pipeline locally with live counts until Ctrl-C (RATE=events/s, METRICS_PORTS=G,C,A)
	$(VENV)/bin/loginpipe run --partitions 6 --rate $(RATE) --metrics-ports $(METRICS_PORTS)

.PHONY: counts
counts: venv ## print the login counts in the local Redis
	$(VENV)/bin/loginpipe counts

# ---- checks ---------------------------------------------------------------------------------
.PHONY: lint
lint: venv ## ruff and mypy --strict on the code, shellcheck on the scripts (when installed)
	$(VENV)/bin/ruff check services tests bench hack
	$(VENV)/bin/ruff format --check services tests bench hack
	$(VENV)/bin/mypy
	MYPYPATH=services $(VENV)/bin/mypy --strict bench --exclude bench/peers
	$(VENV)/bin/hadolint Dockerfile
	$(PY) charts/loginpipe/tests/readme.py --check
	@if command -v shellcheck >/dev/null; then shellcheck -x hack/*.sh hack/local-cluster/*.sh .ci/run; else echo "shellcheck not installed: skipped"; fi

.PHONY: test-unit
test-unit: venv ## unit tests only (no broker needed)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: deps ## every test but the cluster's: unit, chart, integration on a real Kafka and Redis
	$(PY) -m pytest tests -m "not cluster" $(PYTEST_ARGS)

# ---- benchmark ------------------------------------------------------------------------------
BENCH_ARGS ?=
RUNS ?= 1
.PHONY: bench
bench: infra-up ## benchmark loginpipe beside its peers: table + .bench/latest.json (RUNS=3: median and range)
	$(PY) -m bench --runs $(RUNS) $(BENCH_ARGS)

BASE ?= HEAD
AB_ROUNDS ?= 6
.PHONY: bench-ab
bench-ab: infra-up ## this checkout beside BASE (default HEAD): throughput, CPU per event and at-least-once p99 at 10k/s, AB_ROUNDS interleaved rounds
	$(PY) -m bench.ab --base $(BASE) --rounds $(AB_ROUNDS) $(BENCH_ARGS)

.PHONY: bench-quick
bench-quick: infra-up ## the benchmark's quick mode (100,000 events, about 2 min; CI runs it)
	$(PY) -m bench --quick $(BENCH_ARGS)

# ---- Kubernetes ---------------------------------------------------------------------------
.PHONY: k8s-check
k8s-check: tools ## offline chart checks: lint, render, strict schemas, checkov, promtool, skaffold/kind
	hack/k8s-check.sh

.PHONY: crd-schemas
crd-schemas: venv ## regenerate k8s/vendor/crd-schemas from the vendored CRDs
	$(PY) hack/crd_schemas.py

.PHONY: crd-schemas-check
crd-schemas-check: venv ## verify the vendored files' sha256 and that the schemas match their CRDs
	$(PY) hack/crd_schemas.py --check

.PHONY: chart-acl
chart-acl: venv ## regenerate the chart's Redis ACL rules and Kafka ACLs (charts/loginpipe/files/*-acl*.json) from loginpipe.rights
	$(PY) -c 'import json; from loginpipe.rights import REDIS_COMMANDS, redis_acl_rules; print(json.dumps({r: redis_acl_rules(r, "{prefix}") for r in REDIS_COMMANDS}, indent=2))' > charts/loginpipe/files/redis-acl.json
	$(PY) -c 'import json; from loginpipe.rights import KAFKA_ROLES, REGISTRY_ROLE, strimzi_acls; print(json.dumps({r: strimzi_acls(r) for r in (*KAFKA_ROLES, REGISTRY_ROLE)}, indent=2))' > charts/loginpipe/files/kafka-acls.json

.PHONY: chart-readme
chart-readme: venv ## regenerate the chart README's parameter table from values.yaml
	$(PY) charts/loginpipe/tests/readme.py

.PHONY: kind-up
kind-up: ## create the kind cluster `loginpipe` (needs docker, kind, kubectl, helm, skaffold)
	hack/kind.sh up

.PHONY: kind-down
kind-down: ## delete the kind cluster
	hack/kind.sh down

.PHONY: dev
dev: ## skaffold dev on the kind cluster: build, install, port-forward, rebuild on change
	skaffold dev

.PHONY: test-e2e
test-e2e: venv ## end-to-end tests against the deployed release (skip without a cluster)
	$(PY) -m pytest tests/e2e -m e2e -rs

# ---- the project's own Kubernetes (hack/local-cluster) ------------------------------------------
.PHONY: cluster-up
cluster-up: venv tools ## a real single-node Kubernetes in its own network namespace, images from ./Dockerfile (root)
	hack/local-cluster/cluster.sh up

.PHONY: cluster-test
cluster-test: venv tools ## the chart on that cluster: dry runs, install, probes, exact counts, helm test/upgrade/uninstall
	$(PY) -m pytest tests/cluster -m cluster $(PYTEST_ARGS)

.PHONY: cluster-down
cluster-down: ## stop the local cluster, remove its namespace and state, restore the host
	hack/local-cluster/cluster.sh down

.PHONY: clean
clean: ## remove the virtualenv and caches (keeps downloaded jars in .cache)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
