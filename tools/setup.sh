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
  chromium                               # headless rendering of `edgemerge report` (tests/measure/test_report.py)
)

# --- boards: cross compilers, qemu-user and ARM OpenBLAS -------------------------------------------
# What `edgemerge build --board` and tests/deploy/test_boards.py need (the union of the `debian_packages` of
# every boards/*.toml; tests/deploy/test_boards.py checks that each one is listed here). Packages with an
# `:arch` suffix come from a foreign dpkg architecture, added below before the update.
APT_PACKAGES+=(
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu            # rpi4/rpi5/jetson-nano/imx8m (aarch64)
  gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf        # rpi3-armhf (armv7 NEON/VFPv4, hard float)
  qemu-user-static                                       # runs the cross-built em_run and C tests
  libc6:arm64 libc6:armhf                                # what qemu's -L / loads (boards/*.toml [qemu])
  libopenblas-dev:arm64 libopenblas-dev:armhf            # static libopenblas.a for the ARM boards
)

# --- flash: the system OpenSSH client, and the server tests/deploy/test_flash.py starts on 127.0.0.1 ------------
# `edgemerge flash --to ssh://...` runs `ssh`; the tests run their own sshd (own port, keys and config) as
# a stand-in device. Installing openssh-server does not need its system service: the tests never use it.
APT_PACKAGES+=(
  openssh-client openssh-server
)

# --- robustness: libFuzzer (clang + its runtime), symbolized sanitizer reports, valgrind --------------
# What `make test-robustness` needs (runtime_c/fuzz/README.md): the libFuzzer target is built with clang
# (libclang-rt-dev pulls the compiler-rt of Debian's default clang, 14 on bookworm), llvm gives
# llvm-symbolizer for readable ASan/UBSan stacks, valgrind runs memcheck on em_run.
APT_PACKAGES+=(
  clang libclang-rt-dev llvm valgrind
)

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need_update=0
for pkg in "${APT_PACKAGES[@]}"; do
  case "$pkg" in
    *:*) arch="${pkg##*:}"
         if [ "$arch" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
           echo "setup: adding dpkg architecture $arch"
           $SUDO dpkg --add-architecture "$arch"
           need_update=1
         fi ;;
  esac
done

# dpkg -s refuses a bare name installed for several architectures (libopenblas-dev once :arm64 is
# there too): then ask for the native one.
is_installed() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  case "$1" in *:*) return 1 ;; esac
  dpkg -s "$1:$(dpkg --print-architecture)" >/dev/null 2>&1
}
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ] || [ "$need_update" -eq 1 ]; then
  # A mirror in mid-sync can fail one index (seen here: bookworm-security armhf); the install below
  # still fails loudly if a package it needs is really missing.
  $SUDO apt-get update -qq || echo "setup: warning: apt-get update reported errors; installing from the lists it has" >&2
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --upgrade-strategy only-if-needed -r requirements-dev.txt
# Build without isolation: the build requirements are in requirements-dev.txt, so repeated set-ups
# rebuild only the C runtime and bindings instead of downloading a fresh build environment.
# [all]: the merge stack, the TFLite peers, the plots and ONNX (onnx + onnxruntime; setup.py's extras; requirements-dev.txt already holds
# them, so this installs nothing new unless the two lists drift apart).
"$PYTHON" -m pip install -q --no-build-isolation --upgrade-strategy only-if-needed ".[all]"
"$PYTHON" -c "import edgemerge._runtime" || { echo "setup: the C runtime module did not build" >&2; exit 1; }
echo "setup: ok ($("$PYTHON" -m edgemerge.cli --version))"
