PY := .venv/bin/python
MODEL ?= resnet18

.PHONY: setup native run test check-install bench bench-search bench-approx fuzz lint
setup:
	@bash scripts/setup.sh

# Native parts (CMakeLists.txt), incremental: the C++ runner for the host and aarch64 and the oneDNN extension,
# built in build/native/{host,aarch64} and installed into backends/_native (the package data tsir loads).
native: setup
	@bash scripts/build_native.sh

# optimize MODEL, then time the result against ONNX Runtime and OpenVINO at their best on equal threads
run: native
	$(PY) -m tsir optimize $(MODEL) --out build --peers

test: native
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25 tests

# pip install of the committed HEAD into a fresh venv outside the checkout, then tsir optimize mlp (minutes)
check-install:
	@bash scripts/check_pip_install.sh

# tsir against ONNX Runtime, OpenVINO, torch.compile and TVM on suite and zoo models (bench/results/latest.*),
# then every GEMM-class op on each road (bench/results/ops.*). BENCH_ARGS go to the first: --quick for a smoke.
BENCH_ARGS ?=
bench: native
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.ops

fuzz: native
	$(PY) -m tsir.testing.fuzz --graphs 10000 --jobs $(shell nproc)

bench-search: native
	$(PY) -m bench.search $(MODELS)

# Approximate mode on the digits CNN and MiniLM against ONNX Runtime and OpenVINO int8 (same calibration data):
# bench/results/approx.json and approx/MODEL/pareto.png
bench-approx: native
	$(PY) -m bench.approx $(MODELS)

lint: setup
	$(PY) -m ruff check tsir rewrites backends tests bench
