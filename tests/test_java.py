"""The Java/JNI binding (kernels/bindings/java) on the host JVM.

build.sh compiles libnano_jni.so (engine + kernels + native tokenizer + JNI glue,
exporting only JNI_OnLoad/Java_*) and the classes; the checks run in a real JVM
(ai.nanoruntime.NanoJniCheck) under -Xcheck:jni, which prints "WARNING: JNI local
refs: N, exceeds capacity" as soon as a native frame holds more local references
than it planned (checked: dropping the DeleteLocalRef in the callback path makes
it warn after 33 callbacks), so "no WARNING after 10,000 callbacks in one native
call" means no local-reference growth.

Needs javac/java (Debian default-jdk) and a C compiler: missing tools FAIL.
Runtime: ~60-90 s on 2 idle cores (build ~15 s, SmolLM2 32+ tokens twice,
10,000 tiny-model tokens ~30 s).
"""
import json
import os
import shutil
import struct
import subprocess

import pytest

from nano_runtime.engine import Engine, resolve_nano
from nano_runtime.loader import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAVA_DIR = os.path.join(ROOT, "kernels", "bindings", "java")
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def jbuild(tmp_path_factory):
    for tool in ("javac", "java", "cc", "nm"):
        assert shutil.which(tool), f"{tool} is not installed (CI installs default-jdk, gcc, binutils)"
    out = str(tmp_path_factory.mktemp("javabuild"))
    r = subprocess.run(["bash", os.path.join(JAVA_DIR, "build.sh")], capture_output=True, text=True,
                       env={**os.environ, "OUT_DIR": out}, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def run_java(jbuild, *args, timeout=600):
    cp = os.pathsep.join([os.path.join(jbuild, "classes"), os.path.join(jbuild, "test-classes")])
    cmd = ["java", "-Xcheck:jni", f"-Dnano.jni.path={os.path.join(jbuild, 'libnano_jni.so')}",
           "-cp", cp, "ai.nanoruntime.NanoJniCheck", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "WARNING" not in out, out  # -Xcheck:jni found a JNI misuse / local-ref growth
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def ids_of(s):
    return [int(x) for x in s.split(",")] if s else []


def with_max_seq_len(src, dst, n):
    """A copy of a .nano file whose config allows n positions (weights unchanged)."""
    with open(src, "rb") as f:
        hl = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(hl))
        data = f.read()
    meta = header["__metadata__"]
    cfg = json.loads(meta["nano.config"])
    cfg["max_seq_len"] = n
    meta["nano.config"] = json.dumps(cfg)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((hl - len(raw)) % 64)  # keep the data start's 64-byte alignment
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)
    return dst


@pytest.fixture(scope="module")
def smol():
    return resolve_nano("smollm2-135m-instruct", show_progress=False)


@pytest.fixture(scope="module")
def tiny_long(tmp_path_factory):
    src = resolve_nano("tiny-llama", show_progress=False)
    return with_max_seq_len(src, str(tmp_path_factory.mktemp("tiny") / "tiny-long.nano"), 10240)


def test_only_jni_symbols_exported(jbuild):
    out = subprocess.run(["nm", "-D", "--defined-only", os.path.join(jbuild, "libnano_jni.so")],
                         capture_output=True, text=True, check=True).stdout
    names = [ln.split()[-1] for ln in out.splitlines() if ln.strip()]
    assert "JNI_OnLoad" in names
    assert all(n == "JNI_OnLoad" or n.startswith("Java_ai_nanoruntime_") for n in names), names


def test_stream_matches_python_greedy(jbuild, smol):
    n = 32
    with Engine(smol, threads=1) as eng:
        want = eng.generate(PROMPT, max_tokens=n)
    got = run_java(jbuild, "stream", smol, PROMPT, str(n))
    tok = load_tokenizer("smollm2-135m-instruct")
    assert ids_of(got["prompt_ids"]) == tok.encode(PROMPT)
    ids = ids_of(got["ids"])
    assert len(ids) >= 16   # a real continuation (it may end on a stop token before n)
    assert ids == want.ids
    assert got["stop"] == ("length" if len(ids) == n else "stop")
    assert int(got["callbacks"]) == int(got["generated"]) == len(ids)
    assert ids_of(got["callback_ids"]) == ids
    streamed = bytes.fromhex(got["text_hex"]).decode("utf-8")  # whole characters, valid UTF-8
    assert streamed == bytes.fromhex(got["detok_hex"]).decode("utf-8") == tok.decode(ids)


def test_ten_thousand_callbacks_in_one_call(jbuild, tiny_long):
    got = run_java(jbuild, "callbacks", tiny_long, "10000")
    assert got["callbacks"] == got["generated"] == "10000"
    assert got["stop"] == "length"
    assert got["cancelled"] == "cancelled after=100"            # cancel() from another thread
    assert got["stopped_after"] == "3 reason=callback"          # returning false stops
    assert got["callback_exception"] == "from callback"         # a Java exception propagates


def test_chat_turns_match_python(jbuild, tiny_long):
    tok = load_tokenizer("smollm2-135m-instruct")
    got = run_java(jbuild, "chat", tiny_long, "24", "Hello there! ¿Qué tal? 👋")
    msgs = [{"role": "user", "content": "Hello there! ¿Qué tal? 👋"}]
    with Engine(tiny_long, threads=1) as eng:
        want, _, _ = eng.generate_ids(tok.encode_chat(msgs), max_tokens=24, stop_ids=tok.stop_ids)
    assert ids_of(got["turn1_ids"]) == want
    # turn 2 closes the reply and adds one user turn (+ the last reply token if it was pending)
    turn2 = tok.encode("<|im_end|>\n<|im_start|>user\nAnd again?<|im_end|>\n<|im_start|>assistant\n",
                       add_bos=False, special=True)
    pending = 1 if len(want) == 24 else 0
    assert int(got["turn2_prompt"]) == len(turn2) + pending


def test_errors_are_java_exceptions(jbuild, tiny_long, tmp_path):
    corrupt = tmp_path / "corrupt.nano"
    with open(tiny_long, "rb") as f:
        corrupt.write_bytes(f.read(5000))  # truncated
    got = run_java(jbuild, "errors", tiny_long, str(corrupt))
    for key in ("bad_path", "corrupt", "closed_session", "closed_model", "closed_by_model",
                "new_session_closed", "bad_max_tokens", "context_full"):
        assert got[key].startswith("ok "), (key, got[key])
    assert "status=2" in got["bad_path"] and "status=3" in got["corrupt"]
    assert got["alive"] == "yes"
    garbage = tmp_path / "garbage.nano"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64)
    assert run_java(jbuild, "errors", tiny_long, str(garbage))["corrupt"].startswith("ok ")
