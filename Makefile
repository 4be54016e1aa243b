# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := FLASK_APP=pharmacy.entry $(VENV)/bin/flask
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PG_ADMIN_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: screenshots run test test-sqlite test-postgres lint install browser migrate seed scheduler prod-check bench fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

migrate: $(STAMP)
	$(FLASK) db upgrade

seed: migrate
	$(FLASK) seed

## make run: set up, migrate, load the demo data and serve http://127.0.0.1:5000 with the scheduler beside it
run: seed
	$(FLASK) serve-dev --host $(HOST) --port $(PORT)

scheduler: migrate
	$(FLASK) scheduler

browser: $(STAMP)
	@scripts/ensure_chromium.sh

## make lint: ruff, and the architecture's import contracts (pyproject.toml [tool.importlinter], docs/architecture.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## make test: set up, then the whole suite on SQLite and, when a server answers, on PostgreSQL — side by side
## (scripts/both_passes.py: one process each, so two cores finish both in the time of the longer)
## Each pass runs in TEST_WORKERS processes (pytest-xdist): a browser test waiting on chromium leaves its core to the
## other pass's workers, and neither pass ends with a core idle. TEST_WORKERS=0 runs each pass in one process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS)
test: $(STAMP) browser lint
	$(PY) scripts/both_passes.py $(PY) "$(PG_ADMIN_URL)" $(XDIST) $(PYTEST_ARGS)

test-sqlite: $(STAMP)
	env -u DATABASE_URL $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-postgres: $(STAMP)
	@if $(PY) scripts/pg_available.py "$(PG_ADMIN_URL)"; then \
		PG_ADMIN_URL="$(PG_ADMIN_URL)" $(PY) scripts/with_pg_database.py $(PY) -m pytest $(XDIST) $(PYTEST_ARGS); \
	else \
		echo "PostgreSQL not reachable at $(PG_ADMIN_URL): the PostgreSQL pass is skipped"; \
	fi

## make screenshots: the browser tests, saving a picture of every state they check in artifacts/screenshots/ (look at them)
screenshots: $(STAMP) browser
	env -u DATABASE_URL SCREENSHOTS=1 $(PY) -m pytest tests/browser tests/web/test_billing_views.py::test_revenue_chart_in_a_real_browser $(PYTEST_ARGS)

## make fuzz: the wide random search (not part of make test): every API operation, every check, many examples,
## fresh random draws each run, on SQLite and on PostgreSQL. Add what it finds to tests/web/test_fuzz_regressions.py.
FUZZ_EXAMPLES ?= 400
FUZZ_ENV := HYPOTHESIS_PROFILE=fuzz SCHEMATHESIS_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMATHESIS_CHECKS=all
# A wide search of one test takes longer than make test's 300 s per test.
FUZZ_TIMEOUT := --timeout 3600
FUZZ_TESTS := tests/web/test_api_fuzz.py tests/web/test_fuzz_regressions.py tests/unit tests/web/test_ncpdp_endpoint.py \
	tests/web/test_fhir_api.py tests/web/test_billing_api.py tests/web/test_workflow_api.py
fuzz: $(STAMP)
	env -u DATABASE_URL $(FUZZ_ENV) $(PY) -m pytest -p no:cacheprovider $(FUZZ_TIMEOUT) $(FUZZ_TESTS) $(PYTEST_ARGS)
	@if $(PY) scripts/pg_available.py "$(PG_ADMIN_URL)"; then \
		PG_ADMIN_URL="$(PG_ADMIN_URL)" $(FUZZ_ENV) $(PY) scripts/with_pg_database.py $(PY) -m pytest -p no:cacheprovider \
			$(FUZZ_TIMEOUT) $(FUZZ_TESTS) $(PYTEST_ARGS); \
	fi

prod-check: $(STAMP)
	$(FLASK) doctor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
