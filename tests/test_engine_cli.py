"""`nano generate` / `nano eval ppl` / `nano bench` on the native backend (the default), and
their bad-input errors: one `error:` line, exit 2, no traceback. Runtime: about 40 s."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nano(*args, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "nano_runtime", *map(os.fsencode, args)],
                          capture_output=True, env=env, timeout=600, input=stdin)


def test_generate_json_native_default():
    r = nano("generate", "tiny-llama", "--prompt", "Hello there", "--max-tokens", "8", "--json",
             "--threads", "1")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert len(out["ids"]) == 8 and out["prompt_tokens"] > 0 and out["peak_rss_mb"] > 0
    assert out["stop_reason"] == "length"
    # same seed, same text; the torch backend still works
    r2 = nano("generate", "tiny-llama", "--prompt", "Hello there", "--max-tokens", "8", "--json",
              "--threads", "1")
    assert json.loads(r2.stdout)["ids"] == out["ids"]
    r3 = nano("generate", "tiny-llama", "--prompt", "Hello there", "--max-tokens", "4",
              "--backend", "torch", "--json")
    assert r3.returncode == 0, r3.stderr.decode()


@pytest.mark.parametrize("args,words", [
    (["--prompt", b"\xff\xfe bad"], "not valid UTF-8"),
    (["--prompt", "hi", "--max-tokens", "0"], "--max-tokens must be >= 1"),
    (["--prompt", "hi", "--max-tokens", "100000000"], "--max-tokens must be <="),
    (["--prompt", "hi", "--temperature", "-1"], "--temperature must be >= 0"),
    (["--prompt", "hi", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--prompt", "hi", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--prompt", "hi", "--threads", "100000"], "--threads must be between"),
    (["--prompt", "hi", "--threads", "-3"], "--threads must be between"),
    (["--prompt", "hi", "--threads", "0"], "--threads must be between 1 and"),
    (["--prompt", "hi", "--memory-budget", "1"], "needs"),
    (["--prompt", "word " * 400, "--ctx-size", "64"], "does not fit the context"),
])
def test_generate_bad_input(args, words):
    r = nano("generate", "tiny-llama", *args)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith("error: ") and words in err, err
    assert "Traceback" not in err


def test_bad_model_files(tmp_path):
    p = tmp_path / "bad.nano"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 100)
    r = nano("generate", str(p), "--prompt", "hi")
    err = r.stderr.decode()
    assert r.returncode == 2 and "malformed header" in err and "Traceback" not in err
    r = nano("chat", str(tmp_path / "missing.nano"), stdin=b"")
    assert r.returncode == 2 and "no such file" in r.stderr.decode()


def test_eval_ppl_native(tmp_path):
    from nano_runtime.data import english_text
    f = tmp_path / "t.txt"
    f.write_text(english_text("eval")[:3000])
    r = nano("eval", "ppl", "tiny-llama", "--text", str(f), "--ctx", "64", "--max-windows", "3",
             "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["tokens"] == 3 * 63 and out["ppl"] > 1


def test_bench_command():
    r = nano("bench", "tiny-llama", "--threads", "1", "--repeats", "1", "--decode-tokens", "4",
             "--prompt-lens", "16,32", "--json")
    assert r.returncode == 0, r.stderr.decode()
    run = json.loads(r.stdout)[0]["runs"][0]
    assert run["prefill16_tok_s"] > 0 and run["decode_tok_s"] > 0 and run["peak_rss_mb"] > 0
