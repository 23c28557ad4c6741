#!/usr/bin/env bash
# Build kernels/tests/arm64_generate.c with the whole native stack (kernels, engine,
# tokenizer, text API) twice: for the host (x86-64: scalar/AVX2/AVX-512 files) and
# cross-compiled for ARM64 with aarch64-linux-gnu-gcc (scalar + NEON/dotprod files).
#
#   kernels/tests/arm64_build.sh OUT_DIR   -> OUT_DIR/host/arm64_generate, OUT_DIR/aarch64/arm64_generate
#
# Run the ARM64 binary with: qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max OUT_DIR/aarch64/arm64_generate ...
# (-cpu max has dotprod; -cpu cortex-a53 does not: both dispatch paths of one binary).
# ISA flags follow the file name, the same rule as setup.py and kernels/Makefile.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${1:?usage: arm64_build.sh OUT_DIR}"
CROSS_CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
HOST_CC="${CC:-cc}"
CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -I$ROOT/kernels/include -I$ROOT/kernels/src -I$ROOT/kernels/engine"

build() { # build CC ARCH DIR
    local cc="$1" arch="$2" dir="$3" objs=() pids=() isa src obj pid
    mkdir -p "$dir"
    for src in "$ROOT"/kernels/src/*.c "$ROOT"/kernels/engine/*.c "$HERE/arm64_generate.c"; do
        isa=""
        case "$src" in
            *_avx2.c)   [ "$arch" = x86_64 ] || continue; isa="-mavx2 -mfma -mf16c" ;;
            *_avx512.c) [ "$arch" = x86_64 ] || continue
                        isa="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c" ;;
            *_neon.c)   [ "$arch" = aarch64 ] || continue; isa="-march=armv8.2-a+dotprod+fp16" ;;
        esac
        obj="$dir/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
        # shellcheck disable=SC2086
        "$cc" $CFLAGS $isa -c "$src" -o "$obj" &
        pids+=($!)
        objs+=("$obj")
    done
    for pid in "${pids[@]}"; do wait "$pid"; done  # a failed compile fails the build
    "$cc" -o "$dir/arm64_generate" "${objs[@]}" -lm -pthread
}

command -v "$CROSS_CC" >/dev/null || { echo "error: $CROSS_CC not found (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2; exit 2; }
build "$HOST_CC" "$(uname -m)" "$OUT/host"
build "$CROSS_CC" aarch64 "$OUT/aarch64"
file "$OUT/aarch64/arm64_generate" 2>/dev/null || true
