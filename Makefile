# Tollgate: `make run` (everything up on embedded defaults), `make test` and `make test-fast`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell sha1sum requirements.txt | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: run test test-fast bench lint format migrate worker web clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*; touch $@

run: $(STAMP)
	@mkdir -p "$${TOLLGATE_VAR_DIR:-var}/static"
	@$(PY) manage.py migrate --noinput -v0
	@if [ -z "$$DATABASE_URL" ]; then $(PY) manage.py seed_demo; fi
	@$(PY) manage.py run_stack

test: $(STAMP) lint
	$(VENV)/bin/pytest

# The edit-and-rerun loop: no lint, no Temporal server, no browser, no `make run` (tests marked
# integration, browser or timeskipping are left out; tests/conftest.py fails a test that starts
# the dev server or Chromium without its marker, and marks the time-skipping ones itself).
test-fast: $(STAMP)
	TOLLGATE_FAST_TESTS=1 $(VENV)/bin/pytest -m "not integration and not browser and not timeskipping" $(ARGS)

# Every benchmark, one after the other; QUICK=1 for small sizes (under 5 minutes). Writes BENCHMARKS.md.
bench: $(STAMP)
	$(PY) bench/run.py $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: $(STAMP)
	$(PY) manage.py migrate

worker: $(STAMP)
	$(PY) manage.py run_worker

web: $(STAMP)
	$(PY) -m daphne -b 127.0.0.1 -p $${PORT:-8000} config.asgi:application

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
