# echoswarm — the two commands: `make demo` (the main job) and `make test` (the suite).
# Both create/reuse .venv and install the pinned requirements themselves.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck protos sysdeps clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## The main job: a local S000 comparison (servers + Locust master + workers) and its report.
demo: $(STAMP)
	$(PY) -m echoswarm demo

## The test suite: system packages, lint, types, proto drift, then pytest.
test: $(STAMP) sysdeps lint typecheck
	$(PY) -m protos.generate --check
	$(PY) -m pytest -q
	$(PY) -m pytest -q --inproc

## The load generator's own benchmarks (figures, not tests): bench/README.md.
bench: $(STAMP)
	$(PY) -m bench

sysdeps:
	bash scripts/sysdeps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

protos: $(STAMP)
	$(PY) -m protos.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
