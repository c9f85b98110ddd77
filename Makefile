# Floyo's everyday commands. `make run` and `make test` do all the set-up a fresh machine needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
export FLASK_APP := wsgi.py

# Where the full-mode test pass finds PostgreSQL and Redis. The database is dropped and recreated.
FLOYO_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/floyo_test
FLOYO_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run setup test test-embedded test-full check-migrations lint format worker scheduler migrate chromium bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate requirements.txt requirements-dev.txt agent/pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

## Run Floyo embedded: SQLite in instance/, jobs on an in-process worker thread.
run: setup migrate
	$(BIN)/flask run --host 127.0.0.1 --port $(PORT)

migrate: setup
	$(BIN)/flask db upgrade

## Browser tests drive Debian's Chromium; install it when missing (needs root, as in CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "chromium is missing: install it with 'sudo apt-get install chromium' or the browser tests are skipped"; fi; }

## The whole suite twice: embedded (SQLite, in-process queue), then full (PostgreSQL, Redis, rq workers).
test: setup chromium lint check-migrations test-embedded test-full

test-embedded: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-full: setup
	FLOYO_TEST_DATABASE_URL=$(FLOYO_TEST_DATABASE_URL) FLOYO_TEST_REDIS_URL=$(FLOYO_TEST_REDIS_URL) \
		$(BIN)/python -m pytest -q -p no:cacheprovider

## Fails when the models and the migrations have drifted apart.
check-migrations: setup
	rm -f $(CURDIR)/build/check.db
	mkdir -p $(CURDIR)/build
	DATABASE_URL=sqlite:///$(CURDIR)/build/check.db INSTANCE_PATH=$(CURDIR)/build $(BIN)/flask db upgrade
	DATABASE_URL=sqlite:///$(CURDIR)/build/check.db INSTANCE_PATH=$(CURDIR)/build $(BIN)/flask db check

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Full mode: a worker process for the queues (REDIS_URL and DATABASE_URL must be set).
worker: setup
	$(BIN)/rq worker -w app.queue.FloyoWorker --url $(REDIS_URL) default analysis

bench: setup
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.analysis
