PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup native run test bench lint
setup:
	@bash scripts/setup.sh

# The C++ runner for the host and aarch64 (build/native/{host,aarch64}/tsir_runner).
native: setup
	@bash scripts/build_native.sh

run: setup
	$(PY) -m tsir $(MODEL) --out build

test: setup native
	$(PY) -m pytest -q -n 2 tests

bench: setup
	$(PY) -m bench

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
