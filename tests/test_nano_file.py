"""The .nano writer and reader: round trips, streaming, atomicity, and refusing bad files.

Runs in ~40 s (tiny configs; the real SmolLM2 GGUF for the exact-import checks)."""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from nano_runtime.config import ModelConfig
from nano_runtime.errors import ModelFormatError, NanoError
from nano_runtime.formats import nano_file as nf
from nano_runtime.quant.pipeline import make_recipe, quantize_model, rtn_stream
from nano_runtime.quant.sources import open_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("nano") / "tiny.nano")
    quantize_model("tiny-llama", out, show_progress=False)
    return out


def test_write_read_round_trip(tmp_path):
    """Every tensor the writer was given comes back bit for bit, with config/recipe/tokenizer."""
    src = open_source("tiny-gemma3")
    cfg = src.config
    recipe = make_recipe(cfg, "rtn", 64, True, "q8", None)
    given = dict(rtn_stream(src, recipe))
    out = str(tmp_path / "g.nano")
    nf.write_nano(out, cfg, iter(list(given.items())[::-1]), src.tokenizer, recipe)  # any order
    f = nf.open_nano(out)
    assert f.config.to_dict() == dict(cfg.to_dict(), extra=f.config.extra)
    assert f.recipe["group_size"] == 64 and f.recipe["symmetric"] is True
    assert f.recipe["bits_per_weight"] == pytest.approx(4 + 16 / 64)
    assert set(f.tensors) == set(given) | {"tokenizer.json"}
    for k, v in given.items():
        assert f.tensors[k].dtype == v.dtype and np.array_equal(f.tensors[k], v), k
    tok = f.tokenizer()
    assert tok.encode("Hello world") == src.tokenizer.encode("Hello world")
    assert tok.config_dict() == src.tokenizer.config_dict()


def test_reference_model_matches_kernels_and_dequant(tiny):
    lm_k = nf.load_reference(tiny)
    lm_d = nf.load_reference(tiny, use_kernels=False)
    assert lm_k.kind == "nano"
    assert type(lm_k.model.layers[0].attn.wq).__name__ == "Q4Linear"
    x = torch.randint(0, lm_k.config.vocab_size, (1, 12))
    with torch.no_grad():
        a, b = lm_k.model(x), lm_d.model(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # and the dequantized model is the fp model with Q(W) in place of W (the source's own
    # random init: numpy's PCG64, see quant/sources.py)
    fp = open_source("tiny-llama").load_model()
    with torch.no_grad():
        c = fp(x)
    assert (b - c).abs().max() < 0.25 * c.abs().max()


def test_cli_info_and_eval_read_nano(tiny, tmp_path):
    r = run_cli("info", tiny)
    assert r.returncode == 0, r.stderr
    assert "rtn int4 g32 asym" in r.stdout
    t = tmp_path / "t.txt"
    t.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    r = run_cli("eval", "ppl", tiny, "--text", t, "--ctx", "32", "--max-windows", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ppl"] > 1


def test_streamed_writer_needs_each_tensor_once(tmp_path):
    src = open_source("tiny-llama")
    recipe = make_recipe(src.config, "rtn", 32, False, "q8", None)
    items = list(rtn_stream(src, recipe))
    out = str(tmp_path / "x.nano")
    with pytest.raises(NanoError, match="never written"):
        nf.write_nano(out, src.config, iter(items[:-1]), src.tokenizer, recipe)
    with pytest.raises(NanoError, match="given twice"):
        nf.write_nano(out, src.config, iter(items + items[:1]), src.tokenizer, recipe)
    bad = [(n, a.astype(np.float32) if n.endswith("scales") else a) for n, a in items]
    with pytest.raises(NanoError, match="expected float16"):
        nf.write_nano(out, src.config, iter(bad), src.tokenizer, recipe)
    assert os.listdir(tmp_path) == []


def test_exception_in_tensor_stream_leaves_nothing(tmp_path):
    src = open_source("tiny-llama")
    recipe = make_recipe(src.config, "rtn", 32, False, "q8", None)

    def stream():
        for i, item in enumerate(rtn_stream(src, recipe)):
            if i == 5:
                raise RuntimeError("injected failure")
            yield item
    out = tmp_path / "x.nano"
    with pytest.raises(RuntimeError, match="injected"):
        nf.write_nano(str(out), src.config, stream(), src.tokenizer, recipe)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_quantize_leaves_no_nano(tmp_path, sig):
    """Kill `nano quantize nano-1` (1.8B, streamed) while it writes: no OUT.nano appears
    (SIGTERM also removes the temp file; SIGKILL can only leave the hidden temp file)."""
    out = tmp_path / "n1.nano"
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "nano_runtime", "quantize", "nano-1", "-o", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.2)
        time.sleep(1.0)
        p.send_signal(sig)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert not out.exists()
    left = os.listdir(tmp_path)
    if sig == signal.SIGTERM:
        assert left == [] and p.returncode != 0
        assert "error: interrupted" in p.stderr.read().decode()
    else:
        assert all(n.startswith(".n1.nano.") and n.endswith(".tmp") for n in left)


# --------------------------------------------------------------------------- refusing bad files
def _rewrite_header(path, out, edit):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    edit(hdr)
    hb = json.dumps(hdr).encode()
    hb += b" " * ((-(8 + len(hb))) % 64)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    return str(out)


def test_refuses_bad_files(tiny, tmp_path):
    def bad(edit):
        return _rewrite_header(tiny, tmp_path / "bad.nano", edit)

    def setver(h):
        h["__metadata__"]["nano.format_version"] = "7"
    with pytest.raises(ModelFormatError, match="unsupported .nano format version '7'"):
        nf.open_nano(bad(setver))

    def dtype(h):
        h["layers.0.attn.wq.scales"]["dtype"] = "F32"
        h["layers.0.attn.wq.scales"]["shape"][1] //= 2
    with pytest.raises(ModelFormatError, match="tensor layers.0.attn.wq.scales has dtype F32"):
        nf.open_nano(bad(dtype))

    def shape(h):
        h["layers.1.mlp.w_up.qweight"]["shape"] = h["layers.1.mlp.w_up.qweight"]["shape"][::-1]
    with pytest.raises(ModelFormatError, match=r"layers.1.mlp.w_up.qweight has shape"):
        nf.open_nano(bad(shape))

    def missing(h):
        del h["layers.0.mlp.w_down.qweight"]
    with pytest.raises(ModelFormatError, match="layers.0.mlp.w_down.qweight .* is missing"):
        nf.open_nano(bad(missing))

    def extra(h):
        h["layers.0.mlp.w_extra.weight"] = dict(h["norm.weight"])
    with pytest.raises(ModelFormatError, match="unexpected tensor layers.0.mlp.w_extra.weight"):
        nf.open_nano(bad(extra))

    def cfg(h):
        h["__metadata__"]["nano.config"] = "{not json"
    with pytest.raises(ModelFormatError, match="nano.config is invalid"):
        nf.open_nano(bad(cfg))

    raw = open(tiny, "rb").read()
    (tmp_path / "trunc.nano").write_bytes(raw[:len(raw) - 1000])
    with pytest.raises(ModelFormatError, match="truncated .nano file: tensor .* runs past the end"):
        nf.open_nano(str(tmp_path / "trunc.nano"))
    (tmp_path / "short.nano").write_bytes(raw[:100])
    with pytest.raises(ModelFormatError, match="truncated .nano file"):
        nf.open_nano(str(tmp_path / "short.nano"))
    (tmp_path / "garbage.nano").write_bytes(struct.pack("<Q", 40) + b"\xff" * 40 + b"\0" * 100)
    with pytest.raises(ModelFormatError, match="malformed .nano header"):
        nf.open_nano(str(tmp_path / "garbage.nano"))
    (tmp_path / "random.nano").write_bytes(os.urandom(4096))
    with pytest.raises(ModelFormatError):
        nf.open_nano(str(tmp_path / "random.nano"))


def test_cli_reports_corrupt_file_in_one_line(tiny, tmp_path):
    raw = open(tiny, "rb").read()
    p = tmp_path / "cut.nano"
    p.write_bytes(raw[: len(raw) // 2])
    r = run_cli("info", p)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "truncated .nano file" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
