#!/usr/bin/env bash
# One idempotent set-up step: Debian packages (only those missing), .venv with exact pins, tsir itself.
# Re-running it is cheap: a stamp keyed by the lock file and pyproject.toml skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user cmake ninja-build)
PYTHON=${PYTHON:-python3.11}

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=".venv/.tsir-setup-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
# scikit-build-core's editable install knows the package's files by name: a module added or removed since
# needs the (quick) editable install again
modules_stamp=".venv/.tsir-modules-$(find tsir rewrites backends bench -name '*.py' | sort | sha256sum | cut -c1-16)"
install_tsir() {  # editable, without the native parts (scripts/build_native.sh builds those into the checkout)
  .venv/bin/pip install -qq --no-deps --no-build-isolation -Ccmake.define.TSIR_BUILD_NATIVE=OFF -e .
}
if [ -f "$stamp" ]; then
  if [ ! -f "$modules_stamp" ]; then
    install_tsir
    rm -f .venv/.tsir-modules-*
    touch "$modules_stamp"
  fi
  bash scripts/fetch_aarch64_runtime.sh  # the aarch64 TVM runtime for the cross-built runner (idempotent)
  exit 0
fi
if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing pinned Python packages into .venv (first run takes a few minutes)"
.venv/bin/pip install -qq -r requirements.lock
install_tsir
rm -f .venv/.tsir-setup-* .venv/.tsir-modules-*
touch "$stamp" "$modules_stamp"
bash scripts/fetch_aarch64_runtime.sh
echo "setup: done"
