# The two commands of the README: `make demo` and `make test`. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test lint bench hapi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/trialscreen demo

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest

# A local HAPI FHIR JPA server (R4, empty, H2 in memory) on http://127.0.0.1:8091/fhir for the walkthrough;
# built once from Maven Central (scripts/build_hapi.sh, needs Java 17 + Maven). Ctrl-C stops it.
hapi:
	bash scripts/run_hapi.sh 8091

bench: setup
	for b in bench/[a-z]*.py; do $(PY) $$b || exit 1; done
