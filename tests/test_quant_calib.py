"""Calibration sources for the calibrated quantizers: the built-in train split (`--calib
builtin:train`, windows spread over the whole split), the held-out eval split refused, and
the option end to end through `nano quantize` on a tiny model. ~20 s of CPU (72 s wall on
the loaded 2-core machine, with quantization jobs running beside it)."""
import torch

from conftest import one_error as _one_error, run_cli
from nano_runtime.data import english_text
from nano_runtime.errors import NanoError
from nano_runtime.loader import load_tokenizer
from nano_runtime.quant.calib import calib_batches, read_calib_text


def test_builtin_splits_and_eval_refused():
    text, desc = read_calib_text("builtin:train")
    assert text == english_text("train") and desc.startswith("builtin:train")
    text, desc = read_calib_text(None)
    assert text == english_text("calib") and desc.startswith("builtin:calib")
    try:
        read_calib_text("builtin:eval")
    except NanoError as e:
        assert "builtin:train" in str(e) and "held out" in str(e)
    else:
        raise AssertionError("builtin:eval accepted")


def test_spread_windows_cover_the_split_without_overlap():
    tok = load_tokenizer("smollm2-135m-instruct")
    text = english_text("train")
    ids = tok.encode(text, add_bos=False)
    first = calib_batches(tok, text, 8, 512)
    spread = calib_batches(tok, text, 8, 512, spread=True)
    assert first.shape == spread.shape == (8, 512)
    assert torch.equal(first[0], spread[0])  # both start at the beginning
    step = 512 - (1 if tok.add_bos else 0)
    rows = [r[-step:].tolist() for r in spread]
    starts = [next(i for i in range(0, len(ids), step) if ids[i:i + step] == r) for r in rows]
    # distinct, non-overlapping windows reaching the last eighth of the split
    assert all(b - a >= step for a, b in zip(starts, starts[1:]))
    assert starts[-1] >= len(ids) * 7 // 8 - step
    # asking for more windows than the text holds gives every window once
    all_w = calib_batches(tok, text, 10 ** 6, 512, spread=True)
    assert all_w.shape[0] == len(ids) // step


def test_cli_gptq_on_train_split(tmp_path):
    out = tmp_path / "t.nano"
    r = run_cli("quantize", "tiny-llama", "-o", out, "--method", "gptq", "--sym",
                "--calib", "builtin:train", "--calib-seqs", "6", "--calib-len", "64",
                "--act-order")
    assert r.returncode == 0, r.stderr
    from nano_runtime.formats.nano_file import open_nano
    f = open_nano(str(out))
    assert f.recipe["calib"].startswith("builtin:train")
    assert f.recipe["calib_tokens"] == 6 * 64 and f.recipe["act_order"] is True
    assert f.recipe["symmetric"] is True
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e.nano", "--method", "gptq",
                       "--calib", "builtin:eval"), "builtin:eval", "held out")
    assert not (tmp_path / "e.nano").exists()
