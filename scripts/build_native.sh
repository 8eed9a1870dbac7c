#!/usr/bin/env bash
# Build the native runner for the host (build/native/host) and for aarch64 (build/native/aarch64).
# Incremental: CMake rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch_aarch64_runtime.sh
cmake -S . -B build/native/host -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/native/host -j2 >/dev/null
cmake -S . -B build/native/aarch64 -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE=backends/native/aarch64-toolchain.cmake -DTSIR_TVM_LIBDIR=.deps/aarch64/lib >/dev/null
cmake --build build/native/aarch64 -j2 >/dev/null
echo "native: build/native/host/tsir_runner, build/native/aarch64/tsir_runner"
