"""The C test program kernels/tests/test_kernels.c (every variant vs the scalar reference),
built and run (a) on the host under AddressSanitizer + UBSan, (b) on x86-64 with the AVX-512
source compiled onto SIMDe's portable intrinsics (kernels/tests/avx512_emu.h), so the AVX-512
kernels are checked on CPUs without AVX-512 (like this project's CI machine), and (c)
cross-compiled for AArch64 and run under qemu-user, once with -cpu max (dotprod: the neondot
variant) and once with -cpu cortex-a53 (no dotprod: the plain neon variant).

These tests fail, never skip, when the toolchain is missing: CI installs gcc,
gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user and libsimde-dev.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDIR = os.path.join(ROOT, "kernels")
QEMU_LD = "/usr/aarch64-linux-gnu"


def need(tool):
    path = shutil.which(tool)
    assert path, f"{tool} is required for this test (install it; CI does)"
    return path


def make(target, build, **env):
    need("make")
    out = subprocess.run(["make", "-j2", "-C", KDIR, target, f"BUILD={build}"], capture_output=True,
                         text=True, env=dict(os.environ, **env), timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_c_variants_under_asan_ubsan(tmp_path):
    need("cc")
    out = make("test-asan", str(tmp_path))
    assert "PASSED" in out
    assert "runtime error" not in out


def test_avx512_source_on_emulated_intrinsics(tmp_path):
    """The AVX-512/VNNI kernels (q4_avx512.c) against the scalar reference on any x86-64 CPU:
    the same source, its _mm512_* intrinsics resolved to SIMDe's C implementations."""
    need("cc")
    assert os.path.exists("/usr/include/simde/x86/avx512.h"), \
        "SIMDe headers missing: install libsimde-dev"
    out = make("test-avx512-emu", str(tmp_path), OPT="-O1")
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert "avx512" in lines["available"].split()
    assert lines["selected"].strip() == "avx512"
    assert "PASSED" in out and "FAIL" not in out


@pytest.fixture(scope="module")
def aarch64_binary(tmp_path_factory):
    need("aarch64-linux-gnu-gcc")
    build = tmp_path_factory.mktemp("aarch64")
    make("cross", str(build))
    binary = os.path.join(build, "aarch64", "test_kernels")
    assert os.path.exists(binary)
    return binary


@pytest.mark.parametrize("cpu, selected, has_dot", [("max", "neondot", True),
                                                    ("cortex-a53", "neon", False)])
def test_aarch64_under_qemu(aarch64_binary, cpu, selected, has_dot):
    qemu = need("qemu-aarch64")
    assert os.path.isdir(QEMU_LD), f"{QEMU_LD} missing: install libc6-dev-arm64-cross"
    out = subprocess.run([qemu, "-L", QEMU_LD, "-cpu", cpu, aarch64_binary], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    available = lines["available"].split()
    assert lines["selected"] == selected
    assert ("neondot" in available) == has_dot and "neon" in available and "scalar" in available
    assert out.stdout.strip().endswith("PASSED")
