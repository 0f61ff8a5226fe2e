# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint format migrate clean

help:
	@echo "make demo   - set up, migrate every database, run the assignment insert"
	@echo "make test   - set up, ruff check, ruff format --check, pytest"

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
