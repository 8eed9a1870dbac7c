#!/usr/bin/env bash
# Fetch libtvm_runtime.so and libtvm_ffi.so for aarch64 Linux from the apache-tvm / apache-tvm-ffi wheels
# pinned in requirements.lock, into .deps/aarch64/lib (what the aarch64 runner links and a board needs).
# Idempotent: a stamp keyed by the pinned versions skips the download when the libraries are there.
set -euo pipefail
cd "$(dirname "$0")/.."

tvm_version=$(grep -E '^apache-tvm==' requirements.lock | cut -d= -f3)
ffi_version=$(grep -E '^apache-tvm-ffi==' requirements.lock | cut -d= -f3)
dest=.deps/aarch64
stamp="$dest/.fetched-tvm-$tvm_version-ffi-$ffi_version"
[ -f "$stamp" ] && [ -f "$dest/lib/libtvm_runtime.so" ] && [ -f "$dest/lib/libtvm_ffi.so" ] && exit 0

echo "setup: downloading the aarch64 wheels of apache-tvm==$tvm_version and apache-tvm-ffi==$ffi_version"
wheels="$dest/wheels"
mkdir -p "$wheels"
# manylinux_2_28 admits the older manylinux tags as well; the wheels are built for glibc 2.24-2.28.
.venv/bin/pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 \
  -d "$wheels" "apache-tvm==$tvm_version" "apache-tvm-ffi==$ffi_version"
staging=$(mktemp -d "$dest/.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
extract() {  # extract WHEEL MEMBER into $staging (a wheel is a zip file)
  .venv/bin/python -c 'import shutil, sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1]) as whl, whl.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$1" "$2" "$staging/$(basename "$2")"
  chmod 755 "$staging/$(basename "$2")"
}
extract "$(ls "$wheels"/apache_tvm-"$tvm_version"-*aarch64*.whl)" tvm/lib/libtvm_runtime.so
extract "$(ls "$wheels"/apache_tvm_ffi-"$ffi_version"-*aarch64*.whl)" tvm_ffi/lib/libtvm_ffi.so
rm -rf "$dest/lib" "$dest"/.fetched-*
chmod 755 "$staging"
mv "$staging" "$dest/lib"
trap - EXIT
touch "$stamp"
