# One development virtualenv for the whole workspace, every package installed editable,
# third-party packages pinned by requirements.txt (hostless; regenerate with `make lock`).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := shared tools $(sort $(dir $(wildcard services/*/pyproject.toml)))
PYPROJECTS := $(wildcard */pyproject.toml services/*/pyproject.toml)
TEST_DIRS := shared tools $(sort $(patsubst %/,%,$(dir $(wildcard services/*/pyproject.toml)))) .
PYTEST_ARGS ?=

.PHONY: venv test cluster-test fuzz chaos bench lint fmt run docs lock clean help images test-containers

help:
	@echo "make run    start the whole system (gateway :8080) in the foreground"
	@echo "make test   run every package's tests against the local PostgreSQL/Redis/RabbitMQ"
	@echo "make cluster-test  the system on a 3-node RabbitMQ cluster of its own while nodes die"
	@echo "            (the busiest node SIGKILLed, then the majority lost; ~5 min)"
	@echo "make fuzz   fuzz every service's API from its OpenAPI (FUZZ_EXAMPLES=200 per operation)"
	@echo "make chaos  the whole system under load while processes, RabbitMQ and Redis fail"
	@echo "            (CHAOS_ORDERS=1000; restarts the machine's RabbitMQ and Redis: not in make test)"
	@echo "make bench  measure the performance goals side by side, one table (~10 min; not in make test)"
	@echo "make images           build every image the project owns (docker compose build + the SMTP sink)"
	@echo "make test-containers  the whole system from those images under docker compose: scale, kill, drain"
	@echo "                      (installs and afterwards removes its own engine; not in make test)"
	@echo "make lint   ruff check, ruff format --check, mypy --strict on the shared library"
	@echo "make fmt    format and auto-fix"
	@echo "make docs   regenerate docs/asyncapi.json from the event schemas and bindings"
	@echo "make lock   re-pin requirements.txt from requirements.in"

venv: $(STAMP)

$(STAMP): requirements.txt $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python -q -r requirements.txt $(addprefix -e ,$(PACKAGES))
	@touch $(STAMP)

test: $(STAMP)
	@failed=""; \
	for dir in $(TEST_DIRS); do \
		echo "=== tests: $$dir"; \
		(cd $$dir && $(CURDIR)/$(BIN)/pytest -q $(PYTEST_ARGS)) || failed="$$failed $$dir"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED in:$$failed"; exit 1; fi; \
	echo "all test suites passed"

# Three throwaway RabbitMQ nodes (own ports and data) joined into a cluster, the whole system
# on them under load, the busiest node SIGKILLed and later two nodes stopped: nothing lost.
cluster-test: $(STAMP)
	$(BIN)/python -m svctools.cluster_drill

# The long form of tests/fuzz (make test runs it with a few examples per operation).
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(BIN)/pytest -q tests/fuzz $(PYTEST_ARGS)

# Kills and restarts processes and the local RabbitMQ and Redis: a manual run, never in make test.
chaos: $(STAMP)
	$(BIN)/python -m svctools.chaos

# The images docker-compose.yml builds, plus the SMTP sink (tools/Dockerfile, target smtp-sink).
images:
	docker compose build
	docker build -q -f tools/Dockerfile --target smtp-sink -t smtp-sink:dev . >/dev/null
	@docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
		| grep -E '^(auth-service|users-service|orders-service|payments-gateway|notifications-service|provider-simulator|smtp-sink):dev' \
		| sort

# Installs, starts and afterwards removes its own container engine (tests/containers/engine.sh).
test-containers: $(STAMP)
	@tests/containers/engine.sh up && . .run/containers/env.sh \
		&& $(MAKE) --no-print-directory images \
		&& SHOP_CONTAINER_TESTS=1 $(BIN)/pytest -q -p no:servicekit -p no:cacheprovider \
			tests/containers $(PYTEST_ARGS); \
		status=$$?; tests/containers/engine.sh down; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict shared/src/servicekit

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

run: $(STAMP)
	$(BIN)/python -m svctools.launcher

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

docs: $(STAMP)
	$(BIN)/python -m svctools.asyncapi

lock:
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11 -q

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
