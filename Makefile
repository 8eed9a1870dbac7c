PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup run test bench lint fuzz
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m tsir $(MODEL) --out build

test: setup
	$(PY) -m pytest -q -n 2 tests

bench: setup
	$(PY) -m bench

fuzz: setup
	$(PY) -m tsir.testing.fuzz --graphs 10000

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
