PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup run test bench bench-search lint
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m tsir $(MODEL) --out build

test: setup
	$(PY) -m pytest -q -n 2 tests

bench: setup
	$(PY) -m bench

bench-search: setup
	$(PY) -m bench.search $(MODELS)

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
