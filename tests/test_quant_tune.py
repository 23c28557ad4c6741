"""End-to-end scale tuning after quantization (`nano quantize --tune-steps`, quant/tune.py):
the trainable layer reproduces the file's weights exactly, its gradient is the true one,
tuning a real SmolLM2 RTN file lowers the held-out KL to the fp model while the codes stay
bit-identical, and bad options give one clear error with no file left behind."""
import numpy as np
import torch

from conftest import one_error as _one_error, run_cli
from nano_runtime.formats import nano_file as nf
from nano_runtime.quant.calib import calib_batches, read_calib_text
from nano_runtime.quant.pipeline import quantize_model
from nano_runtime.quant.tune import (kl_to_teacher, rewrite_scales,
                                     student_from_nano, tune_scales)


def test_tuned_layer_starts_at_the_file_weights_and_has_the_true_gradient(tmp_path):
    out = str(tmp_path / "a.nano")
    for sym in (True, False):
        quantize_model("tiny-llama", out, method="rtn", group_size=32, symmetric=sym,
                       show_progress=False)
        f = nf.open_nano(out)
        model, tuned = student_from_nano(f)
        for p, m in tuned.items():
            assert (m.b is None) == sym
            assert torch.equal(m.weight().detach(), torch.from_numpy(f.weight(p))), p
        m = tuned["layers.0.mlp.w_up"]
        x = torch.randn(3, m.codes.shape[1])
        with torch.no_grad():
            m.a.uniform_(-0.1, 0.1)
            if m.b is not None:
                m.b.uniform_(-0.5, 0.5)
        m.double()
        x = x.double()
        params = (m.a,) if m.b is None else (m.a, m.b)
        assert all(p.requires_grad for p in params)
        # gradcheck perturbs m.a / m.b in place, so the closure sees its inputs
        assert torch.autograd.gradcheck(lambda *_: m(x).pow(2).sum(), params, eps=1e-6,
                                        atol=1e-5)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    t = torch.randn(2, 5, 11)
    assert float(kl_to_teacher(t, t)) < 1e-6
    assert float(kl_to_teacher(t, t + torch.randn_like(t))) > 1e-3


def test_tuning_real_smollm2_lowers_heldout_kl_and_keeps_codes(tmp_path, smollm2):
    """RTN g128 asym of SmolLM2 (+50% perplexity), 4 tuning steps on 128-token train windows:
    the held-out window's KL to the fp model falls; only scales and mins change."""
    src = str(tmp_path / "rtn.nano")
    out = str(tmp_path / "tuned.nano")
    quantize_model("smollm2-135m-instruct", src, method="rtn", group_size=128,
                   show_progress=False)
    text, _ = read_calib_text("builtin:train")
    tokens = calib_batches(smollm2.tokenizer, text, 4, 128, spread=True)
    new, info = tune_scales(smollm2.model, src, tokens, 4, lr=1e-3, show_progress=False)
    assert info["heldout_kl_after"] < 0.95 * info["heldout_kl_before"], info
    assert info["train_windows"] == 3
    rewrite_scales(src, out, new, info)
    a, b = nf.open_nano(src), nf.open_nano(out)
    assert b.recipe["tune"]["steps"] == 4
    assert nf.bits_per_weight(a.config, a.recipe) == nf.bits_per_weight(b.config, b.recipe)
    changed = 0
    for name in a.tensors:
        same = np.array_equal(np.asarray(a.tensors[name]), np.asarray(b.tensors[name]))
        if name.endswith((".scales", ".mins")) and name in new:
            changed += not same
        else:
            assert same, name          # codes, embeddings, norms, tokenizer untouched
    assert changed > 0
    # the tuned file runs through the native kernels like any other
    lm = nf.load_reference(out)
    with torch.no_grad():
        logits = lm.model(tokens[-1:, :32])
    assert torch.isfinite(logits).all()


def test_cli_tune_and_bad_options(tmp_path):
    out = tmp_path / "t.nano"
    r = run_cli("quantize", "tiny-llama", "-o", out, "--method", "gptq", "--sym",
                "--calib-seqs", "3", "--calib-len", "32", "--tune-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    f = nf.open_nano(str(out))
    assert f.recipe["tune"]["steps"] == 2 and f.recipe["tune"]["train_windows"] == 2
    assert "tune scales" in r.stderr          # progress bar
    # GPTQ on 2 windows, the tuning on 5 of its own (4 trained on, 1 held out)
    out2 = tmp_path / "t2.nano"
    r = run_cli("quantize", "tiny-llama", "-o", out2, "--method", "gptq", "--sym",
                "--calib-seqs", "2", "--calib-len", "32", "--tune-steps", "2",
                "--tune-seqs", "5")
    assert r.returncode == 0, r.stderr
    f2 = nf.open_nano(str(out2))
    assert f2.recipe["calib_tokens"] == 2 * 32 and f2.recipe["tune"]["train_windows"] == 4
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e5.nano", "--tune-steps",
                       "2", "--tune-seqs", "1", "--calib-len", "32"), "--tune-seqs")
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e1.nano",
                       "--tune-steps", "-1"), "--tune-steps")
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e2.nano",
                       "--tune-steps", "2", "--tune-lr", "0"), "--tune-lr")
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e3.nano", "--tune-steps",
                       "2", "--calib-seqs", "1", "--calib-len", "32"), "--calib-seqs")
    _one_error(run_cli("quantize", "tiny-llama", "-o", tmp_path / "e4.nano", "--method",
                       "gguf-exact", "--tune-steps", "2"), "gguf-exact")
    assert not any((tmp_path / f"e{i}.nano").exists() for i in range(1, 6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.nano", "t2.nano"]  # no temp files
