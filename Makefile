PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup run test bench lint
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m tsir optimize $(MODEL) --out build

test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

bench: setup
	$(PY) -m bench

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
