# The two commands of the README. Each does its own set-up first (scripts/setup.sh is idempotent).
PY := $(if $(VIRTUAL_ENV),python,.venv/bin/python)

.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m orchestrator.cli.main run

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check orchestrator shared branches tests benchmarks
	$(PY) -m mypy
