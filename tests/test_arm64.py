"""ARM64: the whole native stack (kernels, engine, tokenizer, text API) cross-compiled
with aarch64-linux-gnu-gcc and run under qemu-aarch64, against the x86-64 build.

kernels/tests/arm64_build.sh builds kernels/tests/arm64_generate.c for both; each run
loads the same .nano file, tokenizes a prompt natively, writes the prompt's last
logits and greedy-generates through the streaming text API. Under `-cpu max` the
engine dispatches to the NEON-dotprod kernels, under `-cpu cortex-a53` to plain NEON
(one binary, both paths). Same prompt ids, same greedy tokens; logits within 2e-2 of their
scale with int8 activations (rounding-boundary flips) and within 1e-4 with fp32 ones.

Missing cross tools FAIL (CI installs qemu-user, gcc-aarch64-linux-gnu,
libc6-dev-arm64-cross). Runtime: ~40-70 s (the two builds dominate).
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from nano_runtime.engine import Engine, resolve_nano
from nano_runtime.loader import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU_LD = "/usr/aarch64-linux-gnu"
PROMPT = "Hello world, this is a test of 3 things: café 日本 🎉"
N_TOKENS = 24


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "cc"):
        assert shutil.which(tool), (f"{tool} is not installed (Debian: gcc-aarch64-linux-gnu "
                                    "libc6-dev-arm64-cross qemu-user)")
    assert os.path.isdir(QEMU_LD), f"{QEMU_LD} is missing (Debian: libc6-dev-arm64-cross)"
    out = str(tmp_path_factory.mktemp("arm64"))
    r = subprocess.run(["bash", os.path.join(ROOT, "kernels", "tests", "arm64_build.sh"), out],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def run(cmd, logits_path):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    got["logits"] = np.fromfile(logits_path, dtype=np.float32)
    return got


def run_host(builds, model, tmp_path, precise=False):
    lp = str(tmp_path / f"host{precise:d}.f32")
    return run([os.path.join(builds, "host", "arm64_generate"), model, PROMPT, str(N_TOKENS), lp]
               + (["precise"] if precise else []), lp)


def run_arm(builds, model, cpu, tmp_path, precise=False):
    lp = str(tmp_path / f"arm-{cpu}{precise:d}.f32")
    return run(["qemu-aarch64", "-L", QEMU_LD, "-cpu", cpu,
                os.path.join(builds, "aarch64", "arm64_generate"), model, PROMPT, str(N_TOKENS), lp]
               + (["precise"] if precise else []), lp)


@pytest.mark.parametrize("card", ["tiny-llama", "tiny-gemma3"])
def test_arm64_matches_x86(builds, card, tmp_path):
    model = resolve_nano(card, show_progress=False)
    host = run_host(builds, model, tmp_path)
    assert host["kernel"] in ("avx2", "avx512", "scalar")
    tok = load_tokenizer(card)
    assert [int(x) for x in host["prompt_ids"].split(",")] == tok.encode(PROMPT)
    with Engine(model, threads=2) as eng:  # the Python binding (its own tokenizer) agrees
        assert [int(x) for x in host["ids"].split(",")] == eng.generate(PROMPT, N_TOKENS).ids
    for cpu, kernel in (("max", "neondot"), ("cortex-a53", "neon")):
        arm = run_arm(builds, model, cpu, tmp_path)
        assert arm["kernel"] == kernel, arm["kernel"]
        assert arm["prompt_ids"] == host["prompt_ids"]
        assert arm["ids"] == host["ids"], (cpu, arm["ids"], host["ids"])
        assert int(arm["callbacks"]) == int(arm["generated"]) == N_TOKENS
        assert arm["text_hex"] == host["text_hex"]
        # int8 activations: the attention's summation order differs (AVX2 vs NEON/C), so an
        # activation can land on the other side of an int8 rounding boundary; one code step
        # moves a logit by ~1e-3..1e-2 of its scale. Same tokens and text is the contract.
        diff = float(np.abs(arm["logits"] - host["logits"]).max())
        assert diff <= 2e-2 * max(1.0, float(np.abs(host["logits"]).max())), (cpu, diff)
    # fp32 activations (precise): only summation order differs, so the logits agree tightly
    hp = run_host(builds, model, tmp_path, precise=True)
    for cpu in ("max", "cortex-a53"):
        ap = run_arm(builds, model, cpu, tmp_path, precise=True)
        assert ap["ids"] == hp["ids"], (cpu, ap["ids"], hp["ids"])
        diff = float(np.abs(ap["logits"] - hp["logits"]).max())
        assert diff <= 1e-4 * max(1.0, float(np.abs(hp["logits"]).max())), (cpu, diff)


def test_jni_library_cross_builds_for_arm64(tmp_path):
    """The Java binding's native library for an ARM64 phone: same build script, the
    NEON kernels in, only JNI_OnLoad/Java_* exported (what the NDK build produces)."""
    for tool in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-nm", "javac"):
        assert shutil.which(tool), f"{tool} is not installed"
    env = {**os.environ, "CC": "aarch64-linux-gnu-gcc", "NM": "aarch64-linux-gnu-nm",
           "TARGET_ARCH": "aarch64", "OUT_DIR": str(tmp_path)}
    r = subprocess.run(["bash", os.path.join(ROOT, "kernels", "bindings", "java", "build.sh")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    lib = str(tmp_path / "libnano_jni.so")
    dyn = subprocess.run(["aarch64-linux-gnu-nm", "-D", "--defined-only", lib], capture_output=True,
                         text=True, check=True).stdout.split()
    assert "JNI_OnLoad" in dyn and "Java_ai_nanoruntime_NanoSession_nativeGenerate" in dyn
    syms = subprocess.run(["aarch64-linux-gnu-nm", lib], capture_output=True, text=True,
                          check=True).stdout
    assert "neondot" in syms or "neon" in syms  # the NEON kernels are linked in
    head = open(lib, "rb").read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
