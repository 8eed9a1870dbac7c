#!/usr/bin/env bash
# Packaging check: the committed HEAD, cloned and pip-installed into a fresh venv outside the checkout (pinned
# dependencies from requirements.lock, then `pip install CLONE`, which builds the native parts), runs
# `tsir optimize mlp`, loads the oneDNN extension and starts `tsir bench --help` from the installed package.
# Usage: scripts/check_pip_install.sh [WORKDIR]   (default: a new temporary folder, removed on success)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3.11}
work=${1:-$(mktemp -d /tmp/tsir-pip-check.XXXXXX)}
git clone -q --no-checkout "$repo" "$work/clone"
git -C "$work/clone" checkout -q "$(git -C "$repo" rev-parse HEAD)"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q -r "$work/clone/requirements.lock"
"$work/venv/bin/pip" install -q "$work/clone"
cd "$work"  # not the checkout: everything comes from the installed package
"$work/venv/bin/tsir" optimize mlp --budget 5s --out "$work/out" >/dev/null
"$work/venv/bin/tsir" bench --help >/dev/null  # the bench harness imports from the installed package
"$work/venv/bin/python" - "$work/out/report.json" <<'PY'
import json, sys
from tsir.backends import dnnl, native_files
report = json.load(open(sys.argv[1]))
assert report["verification"]["status"] == "verified", report["verification"]
assert "site-packages" in str(dnnl.load()) and native_files.runner("host").is_file()
print(f"pip install check: ok (tsir optimize mlp, verified; native parts in {native_files.NATIVE_DIR})")
PY
[ $# -ge 1 ] || rm -rf "$work"
