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

.PHONY: run test test-sqlite test-postgres lint install browser migrate seed scheduler prod-check bench clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## make test: set up, then the whole suite on SQLite and, when a server answers, on PostgreSQL
test: $(STAMP) browser lint test-sqlite test-postgres

test-sqlite: $(STAMP)
	env -u DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: $(STAMP)
	@if $(PY) scripts/pg_available.py "$(PG_ADMIN_URL)"; then \
		PG_ADMIN_URL="$(PG_ADMIN_URL)" $(PY) scripts/with_pg_database.py $(PY) -m pytest $(PYTEST_ARGS); \
	else \
		echo "PostgreSQL not reachable at $(PG_ADMIN_URL): the PostgreSQL pass is skipped"; \
	fi

prod-check: $(STAMP)
	$(FLASK) doctor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
