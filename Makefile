# The README's two commands: `make demo` and `make test`. Only Python 3.11+ is needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Set up, migrate, start the demo fleet + Celery worker, beat and daphne; prints the URL and login last.
demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py vx11 demo

# Set up and run the whole test suite (SQLite by default; DATABASE_URL/REDIS_URL switch to PostgreSQL/Redis).
test: $(STAMP)
	$(PY) -m pytest

# ruff (format check + lint, rules in pyproject.toml) and mypy on the modules [tool.mypy] lists; CI runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/probe_round.py
	$(PY) bench/ws_fanout.py

clean:
	rm -rf $(VENV) var
