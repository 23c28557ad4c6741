"""Quantizers on real weights: packing, exact GGUF import, error bounds, GPTQ vs RTN,
and the CLI's answers to bad input. Runs in ~60 s (real SmolLM2 tensors, tiny configs)."""
import os

import numpy as np
import pytest
import torch

from conftest import run_cli
from nano_runtime import cards, kernels
from nano_runtime.formats import checkpoint
from nano_runtime.formats.gguf_import import _unpermute_llama, dequantize_tensor, open_gguf
from nano_runtime.quant import core
from nano_runtime.quant.gguf_exact import q4_1_to_nano, q8_0_to_nano


@pytest.fixture(scope="module")
def smol_gguf():
    return open_gguf(cards.card_weights_path(cards.get_card("smollm2-135m-instruct")))


@pytest.fixture(scope="module")
def smol_ckpt():
    """The fp reference weights (dequantized GGUF) of SmolLM2, read tensor by tensor."""
    from safetensors import safe_open
    from nano_runtime.loader import resolve
    _, d = resolve("smollm2-135m-instruct")
    f = safe_open(os.path.join(d, "model.safetensors"), "pt")
    return lambda name: f.get_tensor(name).float()


@pytest.fixture(scope="module")
def calib_x(smol_ckpt):
    """Real calibration activations: the input of layer 0's q/k/v (attn_norm(embed(text)))."""
    from nano_runtime.data import english_text
    from nano_runtime.loader import load_tokenizer
    tok = load_tokenizer("smollm2-135m-instruct")
    ids = torch.tensor(tok.encode(english_text("calib"), add_bos=False)[:2048])
    x = smol_ckpt("embed.weight")[ids]
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * smol_ckpt("layers.0.attn_norm.weight")
    return x


def test_pack_unpack_round_trip_bit_exact():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(7, 576), dtype=np.uint8)
    packed = kernels.pack_q4_codes(codes)
    assert packed.shape == (7, 288)
    assert np.array_equal(kernels.unpack_q4_codes(packed), codes)
    # byte j of block b holds column 32b+j (low nibble) and 32b+j+16 (high nibble)
    assert packed[3, 16 + 5] == codes[3, 32 + 5] | (codes[3, 32 + 21] << 4)


@pytest.mark.parametrize("g,sym", [(32, False), (64, False), (128, True), (128, False)])
def test_rtn_matches_kernels_reference_packer_and_requantizes_to_itself(smol_ckpt, g, sym):
    w = smol_ckpt("layers.2.attn.wq.weight")         # K = 576: g128 leaves a 64-wide last group
    qw, sc, mn = core.quantize_q4("wq", w, g, sym)
    kq, ks, km = kernels.pack_q4(w.numpy(), g, sym)
    assert np.array_equal(qw, kq) and np.array_equal(sc, ks)
    assert (mn is None and km is None) or np.array_equal(mn, km)
    assert sc.shape == (576, -(-576 // g))
    deq = core.dequantize_q4(qw, sc, mn, g)
    qw2, sc2, mn2 = core.quantize_q4("wq", deq, g, sym)
    assert np.array_equal(core.dequantize_q4(qw2, sc2, mn2, g), deq)  # idempotent on its grid
    x = np.random.default_rng(1).standard_normal((3, 576)).astype(np.float32)
    y = kernels.q4_matmul(x, qw, sc, mn, g)
    np.testing.assert_allclose(y, x @ deq.T, rtol=1e-4, atol=1e-4)


def test_exact_gguf_import_q4_1_and_q8_0(smol_gguf):
    names = {"blk.3.attn_q.weight": 9, "blk.3.attn_k.weight": 3, "blk.3.ffn_down.weight": 0,
             "token_embd.weight": 0}
    for name, heads in names.items():
        t = smol_gguf.tensor(name)
        want = dequantize_tensor(t)
        n, k = want.shape
        if t.tensor_type.name == "Q4_1":
            qw, sc, mn = q4_1_to_nano(t.data, n, k)
            if heads:  # un-permute packed rows with their scales and mins
                qw, sc, mn = (_unpermute_llama(a, heads) for a in (qw, sc, mn))
                want = _unpermute_llama(want, heads)
            got = kernels.dequantize_q4(qw, sc, mn, 32, k)
        else:
            q, sc = q8_0_to_nano(t.data, n, k)
            got = kernels.dequantize_q8(q, sc)
        assert got.dtype == np.float32 and np.array_equal(got, want), name


def _out_err(w, wq, x):
    return float(((x @ (w - wq).T) ** 2).mean() / ((x @ w.T) ** 2).mean())


@pytest.mark.parametrize("g,sym", [(128, False), (32, True)])
def test_error_bounds_per_method(smol_ckpt, calib_x, g, sym):
    from nano_runtime.quant.awq import search_scales
    from nano_runtime.quant.gptq import gptq_quantize
    w = smol_ckpt("layers.0.attn.wq.weight")
    x = calib_x
    H = x.T @ x * (2 / x.shape[0])
    # RTN: every weight within half a step (asym) / one step (sym, the +8 side clips)
    s, m = core.group_params(w, g, sym)
    deq = core.dequant_codes(core.codes_for(w, s, m, g), s, m, g)
    step = core._expand(s.abs(), w.shape[1], g)
    assert torch.all((w - deq).abs() <= step * (1.0 if sym else 0.5) * 1.01 + 1e-6)
    e_rtn = _out_err(w, deq, x)
    assert e_rtn < 0.05
    # Hessian-weighted clip search, AWQ and GPTQ: each no worse than RTN on the layer output
    clip = core.search_clip(w, g, sym, H)
    s2, m2 = core.group_params(w, g, sym, clip)
    e_clip = _out_err(w, core.dequant_codes(core.codes_for(w, s2, m2, g), s2, m2, g), x)
    sc = search_scales(x[:1024], [w], g, sym)
    e_awq = _out_err(w, core.fake_quant(w * sc, g, sym) / sc, x)
    Q, S, M = gptq_quantize(w, H, g, sym)
    e_gptq = _out_err(w, core.dequant_codes(Q, S, M, g), x)
    assert e_clip <= e_rtn and e_awq <= e_rtn * 1.001 and e_gptq < e_rtn


def test_gptq_beats_rtn_on_layer_reconstruction(smol_ckpt, calib_x):
    """Real calibration text, real layer: GPTQ's output error is well below RTN's."""
    from nano_runtime.quant.gptq import gptq_quantize
    w = smol_ckpt("layers.0.attn.wk.weight")
    x = calib_x
    fit, held = x[:1536], x[1536:]
    H = fit.T @ fit * (2 / fit.shape[0])
    rtn = core.fake_quant(w, 128, False)
    for act_order in (False, True):
        Q, S, M = gptq_quantize(w, H, 128, False, act_order=act_order)
        gq = core.dequant_codes(Q, S, M, 128)
        assert _out_err(w, gq, fit) < 0.6 * _out_err(w, rtn, fit)
        assert _out_err(w, gq, held) < 0.8 * _out_err(w, rtn, held)  # and on unseen tokens


def test_awq_scale_folding_keeps_the_function():
    from nano_runtime.loader import build_model
    from nano_runtime.config import ModelConfig
    from nano_runtime.quant.pipeline import _fold_norm_scale
    cfg = ModelConfig.from_name("tiny-gemma3")
    m = build_model(cfg, None, seed=3)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.3)
        blk = m.layers[0]
        x = torch.randn(1, 9, cfg.dim)
        before = blk(x, torch.arange(9))
        s = torch.rand(cfg.dim) + 0.5
        _fold_norm_scale(blk.mlp_norm, s, cfg.norm_unit_offset)
        blk.mlp.w_gate.weight.data *= s
        blk.mlp.w_up.weight.data *= s
        s2 = torch.rand(cfg.hidden_dim) + 0.5
        blk.mlp.w_up.weight.data /= s2[:, None]
        blk.mlp.w_down.weight.data *= s2
        after = blk(x, torch.arange(9))
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- CLI bad input
def _one_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[-1], lines[-1]


def _ckpt(tmp_path, cfg_name=None, cfg=None, edit=None):
    from nano_runtime.config import ModelConfig
    from nano_runtime.loader import build_model, load_tokenizer
    cfg = cfg or ModelConfig.from_name(cfg_name)
    sd = {k: v.clone() for k, v in build_model(cfg, None).state_dict().items()}
    if edit:
        edit(sd)
    d = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(d, cfg, sd, load_tokenizer("tiny-llama"))
    return d


def test_cli_bad_inputs(tmp_path):
    from nano_runtime.config import ModelConfig
    out = str(tmp_path / "o.nano")
    _one_error(run_cli("quantize", "tiny-llama", "-o", out, "--group-size", "48"),
               "--group-size must be one of 32, 64, 128", "48")

    def nan(sd):
        sd["layers.1.mlp.w_up.weight"][3, 5] = float("nan")
    d = _ckpt(tmp_path, "tiny-llama", edit=nan)
    _one_error(run_cli("quantize", d, "-o", out), "tensor layers.1.mlp.w_up", "NaN or Inf")

    odd = ModelConfig(name="odd", vocab_size=256, dim=48, n_layers=1, n_heads=2, n_kv_heads=1,
                      hidden_dim=96, max_seq_len=64)
    d2 = tmp_path / "odd"
    d2.mkdir()
    _one_error(run_cli("quantize", _ckpt(d2, cfg=odd), "-o", out),
               "K=48", "not a multiple of 32")

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    _one_error(run_cli("quantize", "tiny-llama", "-o", out, "--method", "gptq", "--calib", empty),
               "calibration file", "is empty")
    _one_error(run_cli("quantize", "tiny-llama", "-o", str(tmp_path / "no" / "dir" / "o.nano")),
               "cannot write", "does not exist")
    _one_error(run_cli("quantize", "tiny-llama", "-o", str(tmp_path)), "cannot write", "directory")
    assert not os.path.exists(out)


def test_cli_calibrated_method_end_to_end(tmp_path):
    out = tmp_path / "a.nano"
    calib = tmp_path / "c.txt"
    from nano_runtime.data import english_text
    calib.write_text(english_text("calib")[:6000])
    r = run_cli("quantize", "tiny-gemma3", "-o", out, "--method", "awq-gptq", "--group-size", "64",
                "--calib", calib, "--calib-seqs", "2", "--calib-len", "64", "--act-order")
    assert r.returncode == 0, r.stderr
    assert "layers" in r.stderr  # the per-layer progress bar
    from nano_runtime.formats.nano_file import open_nano
    f = open_nano(str(out))
    assert f.recipe["method"] == "awq-gptq" and f.recipe["calib"] == "c.txt"
    assert f.recipe["act_order"] is True


# --------------------------------------------------------------------------- numpy RTN path
def test_numpy_rtn_matches_torch_rtn_bit_for_bit(smol_ckpt):
    """The streamed (torch-free) RTN quantizer gives exactly core.py's torch codes, scales and
    mins on real SmolLM2 layers, for every group size (576 % 128 != 0: a short last group),
    both grids, and the int8 path."""
    from nano_runtime.quant import rtn_np
    for name in ("layers.0.attn.wv.weight", "layers.0.mlp.w_down.weight",
                 "layers.29.mlp.w_gate.weight"):
        w = smol_ckpt(name)
        for g in (32, 64, 128):
            for sym in (False, True):
                a = core.quantize_q4(name, w, g, sym)
                b = rtn_np.quantize_q4(name, w.numpy(), g, sym)
                for x, y in zip(a, b):
                    assert (x is None and y is None) or np.array_equal(x, y), (name, g, sym)
        a, b = core.quantize_q8(name, w), rtn_np.quantize_q8(name, w.numpy())
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), name
    c = np.random.default_rng(0).integers(0, 16, (7, 96), dtype=np.uint8)
    assert np.array_equal(kernels.pack_q4_codes(c), rtn_np.pack_q4_codes(c))


def test_param_order_and_light_resolve_match_the_model_and_loader():
    from nano_runtime import loader
    from nano_runtime.config import ModelConfig
    from nano_runtime.quant import sources
    for name in cards.list_cards():
        try:
            cfg = ModelConfig.from_name(name)
        except ValueError:  # config from the weights
            cfg = sources.open_source(name).config
        assert sources.param_shapes(cfg) == sources.param_shapes_torch(cfg), name
        r = sources.resolve_light(name)
        assert r is not None and r == loader.resolve(name), name


def test_streamed_rtn_never_imports_torch(tmp_path):
    """`nano quantize CARD --method rtn` runs numpy-only (the nano-1 peak-RSS budget has no
    room for torch's ~190 MiB), and the file matches the torch-side stream's quantization."""
    import subprocess
    import sys
    from conftest import ROOT
    out = str(tmp_path / "t.nano")
    code = ("import sys; from nano_runtime.cli import main\n"
            "try:\n    main(['quantize', 'tiny-gemma3', '-o', %r, '--sym', '--group-size', '64'])\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)" % out)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert "TORCH False" in r.stdout, r.stdout + r.stderr
    from nano_runtime.formats import nano_file as nf
    from nano_runtime.quant.sources import open_source
    f = nf.open_nano(out)
    src = open_source("tiny-gemma3")
    for name, shape, chunks in src.stream():
        w = torch.cat(list(chunks))
        if len(shape) == 2 and name != "embed.weight":
            qw, sc, mn = core.quantize_q4(name, w, 64, True)
            p = name[:-len(".weight")]
            assert mn is None and np.array_equal(f.tensors[p + ".qweight"], qw), name
            assert np.array_equal(f.tensors[p + ".scales"], sc), name


def test_mixed_precision_keeps_chosen_tensors_in_int8(tmp_path):
    """--keep-q8 tensors are stored int8 per-32 (GGUF Q8_0 rule) by GPTQ too, the budget is
    counted, and the file runs through the kernels' reference model."""
    from nano_runtime.formats import nano_file as nf
    from nano_runtime.quant import rtn_np
    from nano_runtime.quant.pipeline import quantize_model
    from nano_runtime.quant.sources import open_source
    out = str(tmp_path / "m.nano")
    ov = {"layers.0.mlp.w_down": "q8", "layers.1.attn.wv": "q8"}
    r = quantize_model("tiny-llama", out, method="gptq", group_size=64, symmetric=True,
                       n_calib=2, seq_len=64, show_progress=False, overrides=ov)
    f = nf.open_nano(out)
    assert f.formats["layers.0.mlp.w_down"] == "q8" and f.formats["layers.1.attn.wv"] == "q8"
    assert f.formats["layers.0.attn.wq"] != "q8"
    assert r["bits_per_weight"] == pytest.approx(nf.bits_per_weight(f.config, f.recipe)["linear"])
    assert r["bits_per_weight"] > 4 + 16 / 64
    # layer 0's down projection is quantized before any earlier change reaches it: exact RTN Q8
    w = dict((n, torch.cat(list(c))) for n, _, c in open_source("tiny-llama").stream())
    q, s = rtn_np.quantize_q8("x", w["layers.0.mlp.w_down.weight"].numpy())
    assert np.array_equal(f.tensors["layers.0.mlp.w_down.qweight8"], q)
    lm = nf.load_reference(out)
    with torch.no_grad():
        assert torch.isfinite(lm.model(torch.tensor([[1, 2, 3]]))).all()
    r = run_cli("quantize", "tiny-llama", "-o", out, "--keep-q8", "layers.0.mlp.nope")
    assert r.returncode == 2 and "not a linear layer" in r.stderr and "Traceback" not in r.stderr


def test_gguf_import_with_int4_gptq_head(tmp_path):
    """`gguf-exact --embed q4` (Gemma 3's default import) on the real SmolLM2 GGUF: every
    other tensor stays bit-identical to the exact import, the tied embedding/head becomes
    int4 asym g32 fitted by GPTQ to the head's inputs, and on held-out text its output
    (logit) error is below round-to-nearest's of the same table."""
    from nano_runtime.data import english_text
    from nano_runtime.formats import nano_file as nf
    from nano_runtime.loader import load_model
    from nano_runtime.quant import rtn_np
    from nano_runtime.quant.pipeline import quantize_model
    exact, q4 = str(tmp_path / "exact.nano"), str(tmp_path / "q4.nano")
    quantize_model("smollm2-135m-instruct", exact, method="gguf-exact", show_progress=False)
    quantize_model("smollm2-135m-instruct", q4, method="gguf-exact", embed="q4", n_calib=4,
                   seq_len=128, show_progress=False)
    fe, fq = nf.open_nano(exact), nf.open_nano(q4)
    assert fq.recipe["embed"] == "q4" and fq.recipe["embed_method"] == "gptq"
    assert fq.recipe["calib"].startswith("builtin:calib") and fq.recipe["calib_tokens"] == 4 * 128
    assert set(fq.tensors) - set(fe.tensors) == {"embed.qweight", "embed.mins"}
    for name in fe.tensors:
        if not name.startswith("embed."):
            assert np.array_equal(fe.tensors[name], fq.tensors[name]), name
    w = kernels.dequantize_q8(fe.tensors["embed.qweight8"], fe.tensors["embed.scales"])
    k = w.shape[1]
    got = kernels.dequantize_q4(fq.tensors["embed.qweight"], fq.tensors["embed.scales"],
                                fq.tensors["embed.mins"], 32, k)
    qw, sc, mn = rtn_np.quantize_q4("embed", w, 32, False)
    rtn = kernels.dequantize_q4(qw, sc, mn, 32, k)
    lm = load_model("smollm2-135m-instruct")
    ids = torch.tensor([lm.tokenizer.encode(english_text("eval"))[:256]])
    hs = []
    h = lm.model.norm.register_forward_hook(lambda m, i, o: hs.append(o[0].detach().numpy()))
    with torch.no_grad():
        lm.model(ids)
    h.remove()
    x = hs[0].astype(np.float64)
    err = lambda wq: float(((x @ (w - wq).T.astype(np.float64)) ** 2).mean())
    assert err(got) < 0.9 * err(rtn), (err(got), err(rtn))
    r = run_cli("quantize", "smollm2-135m-instruct", "-o", str(tmp_path / "x.nano"),
                "--method", "gguf-exact", "--embed", "f16")
    assert r.returncode == 2 and "--embed q8 (exact) or q4" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "x.nano")
