# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
# The main job's figures; override on the command line: make demo USERS=200 RUN_TIME=30s
USERS ?= 1000
SPAWN_RATE ?= 100
RUN_TIME ?= 60s
ROWS ?= 1000000
BIND ?= 127.0.0.1:8000
LOCUST_PROCESSES ?= 4
LOADTEST = $(PY) manage.py loadtest --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	--run-time $(RUN_TIME) --rows $(ROWS) --bind $(BIND)

.PHONY: help venv demo loadtest loadtest-lookups loadtest-distributed test lint format migrate clean

help:
	@echo "make demo      - the main job: assignment insert, 1M rows, Gunicorn + 1000-user Locust, reports/"
	@echo "make test      - set up, ruff check, ruff format --check, migrations check, pytest"
	@echo "make loadtest-lookups      - the swarm with the lookup-by-id task only"
	@echo "make loadtest-distributed  - the swarm from LOCUST_PROCESSES Locust processes"

# The venv is rebuilt whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(PY) manage.py migrate_all --verbosity 0

demo: migrate
	$(PY) manage.py insert_data
	$(LOADTEST)

loadtest: migrate
	$(LOADTEST)

loadtest-lookups: migrate
	$(LOADTEST) --tags user_id --reports reports/lookups

loadtest-distributed: migrate
	$(LOADTEST) --processes $(LOCUST_PROCESSES) --reports reports/distributed

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) manage.py makemigrations --check --dry-run --verbosity 0
	$(PY) -m pytest

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf var reports .pytest_cache .ruff_cache
