#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian machine for edgemerge: system packages, Python
# dependencies, and the package itself (C runtime + bindings built by CMake through setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake pkg-config       # C runtime
  libopenblas-dev                        # host BLAS for the fast kernels
  espeak-ng sox                          # spoken-word example data
  dataset-fashion-mnist                  # Fashion-MNIST (IDX files)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --upgrade-strategy only-if-needed -r requirements-dev.txt
# Build without isolation: the build requirements are in requirements-dev.txt, so repeated set-ups
# rebuild only the C runtime and bindings instead of downloading a fresh build environment.
"$PYTHON" -m pip install -q --no-build-isolation --no-deps .
"$PYTHON" -c "import edgemerge._runtime" || { echo "setup: the C runtime module did not build" >&2; exit 1; }
echo "setup: ok ($("$PYTHON" -m edgemerge.cli --version))"
