#!/usr/bin/env bash
# Build the Java binding on the host: libnano_jni.so (engine + kernels + tokenizer +
# JNI glue, one shared library exporting only JNI_OnLoad and Java_*) and the classes.
#
#   kernels/bindings/java/build.sh            -> kernels/bindings/java/build/
#       libnano_jni.so, nano.jar, classes/, test-classes/
#   CC=aarch64-linux-gnu-gcc NM=aarch64-linux-gnu-nm TARGET_ARCH=aarch64 OUT_DIR=... build.sh
#       cross-builds the library for ARM64 (the Java classes are the same everywhere)
#
# Needs a C compiler and a JDK (javac + the JNI headers): Debian `default-jdk`.
# ISA flags follow the file name, the same rule as setup.py and kernels/Makefile.
# For Android use CMakeLists.txt with the NDK (see README.md).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
OUT="${OUT_DIR:-$HERE/build}"
CC="${CC:-cc}"

if [ -z "${JAVA_HOME:-}" ]; then
    JAVAC="$(command -v javac || true)"
    [ -n "$JAVAC" ] || { echo "error: javac not found (install a JDK, e.g. Debian default-jdk)" >&2; exit 2; }
    JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVAC")")")"
fi
[ -f "$JAVA_HOME/include/jni.h" ] || { echo "error: no jni.h under $JAVA_HOME/include" >&2; exit 2; }

mkdir -p "$OUT/obj" "$OUT/classes" "$OUT/test-classes"
ARCH="${TARGET_ARCH:-$(uname -m)}"
NM="${NM:-nm}"
CFLAGS="-std=c11 -O2 -fPIC -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -fvisibility=hidden"
INC="-I$ROOT/kernels/include -I$ROOT/kernels/src -I$ROOT/kernels/engine -I$JAVA_HOME/include -I$JAVA_HOME/include/linux"

objs=()
for src in "$ROOT"/kernels/src/*.c "$ROOT"/kernels/engine/*.c "$HERE"/jni/nano_jni.c; do
    isa=""
    case "$src" in
        *_avx2.c)   [ "$ARCH" = x86_64 ] || continue; isa="-mavx2 -mfma -mf16c" ;;
        *_avx512.c) [ "$ARCH" = x86_64 ] || continue
                    isa="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c" ;;
        *_neon.c)   [ "$ARCH" = aarch64 ] || continue; isa="-march=armv8.2-a+dotprod+fp16" ;;
    esac
    obj="$OUT/obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$ROOT/kernels/include" "$ROOT/kernels/engine" "$ROOT/kernels/src" -name '*.h' -newer "$obj" 2>/dev/null | head -1)" ]; then
        # shellcheck disable=SC2086
        $CC $CFLAGS $isa $INC -c "$src" -o "$obj"
    fi
    objs+=("$obj")
done
$CC -shared -o "$OUT/libnano_jni.so.tmp" "${objs[@]}" -lm -pthread -Wl,--exclude-libs,ALL -Wl,--version-script="$HERE/jni/exports.map"
mv "$OUT/libnano_jni.so.tmp" "$OUT/libnano_jni.so"

# only JNI_OnLoad and Java_* may be exported
bad="$("$NM" -D --defined-only "$OUT/libnano_jni.so" | awk '{print $3}' | grep -v -E '^(JNI_OnLoad|Java_.*)$' || true)"
if [ -n "$bad" ]; then echo "error: libnano_jni.so exports more than JNI symbols:" >&2; echo "$bad" >&2; exit 1; fi

"$JAVA_HOME/bin/javac" -Xlint:all -Werror -d "$OUT/classes" "$HERE"/src/main/java/ai/nanoruntime/*.java
"$JAVA_HOME/bin/jar" --create --file "$OUT/nano.jar" -C "$OUT/classes" .
if [ -d "$HERE/src/test/java" ]; then
    "$JAVA_HOME/bin/javac" -Xlint:all -d "$OUT/test-classes" -cp "$OUT/classes" "$HERE"/src/test/java/ai/nanoruntime/*.java
fi
echo "built $OUT/libnano_jni.so and $OUT/nano.jar"
