#!/usr/bin/env bash
# Build the native runner for the host (build/native/host) and for aarch64 (build/native/aarch64), and the
# oneDNN extension, then install them into backends/_native, where tsir.backends finds its package data
# (tsir/backends/native_files.py; `pip install .` builds the host parts into the wheel instead).
# Incremental: each build directory is configured once, then CMake rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch_aarch64_runtime.sh
configure() {  # configure BUILD_DIR [CMAKE ARGS...] (a no-op when its cache is current; retried after a failure)
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
}
configure build/native/host
configure build/native/aarch64 -DCMAKE_TOOLCHAIN_FILE=backends/native/aarch64-toolchain.cmake \
  -DTSIR_TVM_LIBDIR=.deps/aarch64/lib
cmake --build build/native/host -j2 >/dev/null
cmake --build build/native/aarch64 -j2 >/dev/null
cmake --install build/native/host --prefix backends/_native >/dev/null
cmake --install build/native/aarch64 --prefix backends/_native >/dev/null
echo "native: backends/_native/host/{tsir_runner,lib/libtsir_dnnl.so}, backends/_native/aarch64/tsir_runner"
