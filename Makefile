PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup native run test bench bench-search fuzz lint
setup:
	@bash scripts/setup.sh

# Native parts (CMakeLists.txt): the oneDNN extension backends/native/dnnl -> build/native/lib. Incremental.
native: setup
	@cmake -S . -B build/native -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build/native

run: native
	$(PY) -m tsir optimize $(MODEL) --out build

test: native
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

bench: native
	$(PY) -m bench

fuzz: native
	$(PY) -m tsir.testing.fuzz --graphs 10000

bench-search: native
	$(PY) -m bench.search $(MODELS)

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
