# Omni developer entry points. Everything installs itself into .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.omni-installed
PROTO_STAMP := gen/.stamp
CLIENT_WHEEL := dist/.omni-client.stamp
PROTOS := $(shell find protos tests/protos -name '*.proto' -not -path 'protos/.deps/*' 2>/dev/null)

.PHONY: help venv protos run test lint contracts typecheck pytest bench images clean

help:
	@echo "make run    - start the whole platform locally (Ctrl-C stops it)"
	@echo "make test   - lint, contract lint, type check, unit + integration tests, chart checks"
	@echo "make bench  - run the benchmarks, results in bench/results/latest.json"
	@echo "make protos - regenerate Python stubs into gen/ and the omni-client wheel into dist/ (git-ignored)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Code generation needs only grpcio-tools and the googleapis protos; the project itself is
# installed after the stubs exist so that the editable install maps the generated package.
$(PROTO_STAMP): $(BIN)/python $(PROTOS) libs/omni_runtime/devtools/protos.py
	$(BIN)/pip install --quiet "grpcio-tools>=1.66" "mypy-protobuf>=3.6" "googleapis-common-protos>=1.63" "buf-bin>=1.40"
	PYTHONPATH=libs $(PY) -m omni_runtime.devtools.protos generate
	@touch $@

$(STAMP): $(PROTO_STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# The omni-client wheel for channel backends: the stubs plus libs/omni_client (dist/, git-ignored).
$(CLIENT_WHEEL): $(PROTO_STAMP) $(wildcard libs/omni_client/*.py) libs/omni_runtime/devtools/client_wheel.py pyproject.toml
	PYTHONPATH=libs $(PY) -m omni_runtime.devtools.protos client-wheel
	@touch $@

venv: $(STAMP)

protos: $(PROTO_STAMP) $(CLIENT_WHEEL)

run: $(STAMP)
	$(BIN)/omni dev up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

contracts: $(STAMP)
	$(BIN)/omni protos lint
	$(BIN)/omni protos breaking

typecheck: $(STAMP)
	$(BIN)/mypy libs/omni_runtime libs/omni_client services/profile services/messaging services/preferences
	$(BIN)/mypy examples/*.py

pytest: $(STAMP)
	$(BIN)/pytest

test: lint contracts typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

# The shared runtime image first (deploy/docker/Dockerfile), then each service's thin image on it.
IMAGE_TAG ?= dev
images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine"; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f deploy/docker/Dockerfile -t omni-runtime:$(IMAGE_TAG) .
	for d in services/*/Dockerfile; do s=$$(basename $$(dirname $$d)); \
	  DOCKER_BUILDKIT=1 docker build -f $$d --build-arg OMNI_RUNTIME_IMAGE=omni-runtime:$(IMAGE_TAG) \
	    -t omni-$$s:$(IMAGE_TAG) . || exit 1; done

clean:
	rm -rf gen dist protos/.deps $(VENV) .pytest_cache .mypy_cache .ruff_cache
