PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup run test lint
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m tsir $(MODEL) --out build

test: setup
	$(PY) -m pytest -q -n 2 tests

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
