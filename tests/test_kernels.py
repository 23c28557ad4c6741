"""Native int4/int8 kernels against numpy references (nano_runtime.kernels).

Tolerances (stated once, used everywhere):
  * fp32-activation paths: |y - y_ref| <= FP_RTOL * (|x| @ |W|^T) + 1e-6, i.e. float
    reassociation error relative to the sum of absolute products.
  * int8-activation paths on integer-valued data (power-of-two scales, integer mins,
    activations on the int8 grid): every term is exact in fp32, so variants must agree
    bit for bit with the scalar reference and with the exact float64 result.
  * int8 activation error vs fp32: |y_q8 - y_f32| <= sum_b (d_b / 2) * sum_{k in b} |W_k|
    (+ FP slack), the bound implied by rounding each activation to the nearest step d_b.
"""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from nano_runtime import kernels as K

FP_RTOL = 5e-5
SHAPES = [(1, 32), (7, 96), (33, 288), (16, 416), (65, 1056), (5, 16416)]  # K % 256 != 0, odd N, N = 1;
# 16416 = 513 blocks: more than one 256-group scale-table chunk for G = 32 and 64
GROUPS = (32, 64, 128)
VARIANTS = K.variants()
THREADS = (1, 2)


def rng(seed=0):
    return np.random.default_rng(seed)


def random_q4(r, n, k, g, sym, exact=False):
    ng = -(-k // g)
    qw = r.integers(0, 256, (n, k // 2), dtype=np.uint8)
    if exact:
        sc = (2.0 ** r.integers(-1, 2, (n, ng))).astype(np.float16)
        mn = None if sym else r.integers(-8, 9, (n, ng)).astype(np.float16)
    else:
        sc = (0.01 + 0.04 * r.random((n, ng))).astype(np.float16)
        mn = None if sym else (-8 * sc.astype(np.float32) * (1 + 0.1 * r.standard_normal((n, ng)))).astype(np.float16)
    return qw, sc, mn


def exact_x(r, m, k):
    x = r.integers(-127, 128, (m, k)).astype(np.float32)
    blocks = x.reshape(m, k // 32, 32)
    blocks[:, :, 0] = np.where(r.random((m, k // 32)) < 0.5, 127, -127)  # act scale exactly 1
    return x


def fp_tol(x, w):
    return FP_RTOL * (np.abs(x) @ np.abs(w).T) + 1e-6


# --------------------------------------------------------------------- layout and packing
def test_pack_unpack_roundtrip_and_layout():
    r = rng(1)
    codes = r.integers(0, 16, (5, 96), dtype=np.uint8)
    qw = K.pack_q4_codes(codes)
    assert qw.shape == (5, 48) and qw.dtype == np.uint8
    assert np.array_equal(K.unpack_q4_codes(qw), codes)
    # nano_format.h: nano_q4_code(row, k), written out independently
    for n in range(5):
        for k in range(96):
            b = qw[n, (k // 32) * 16 + (k % 32) % 16]
            assert codes[n, k] == ((b & 0x0F) if k % 32 < 16 else (b >> 4))


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("g", GROUPS)
def test_pack_q4_error_bound(sym, g):
    r = rng(2)
    w = r.standard_normal((9, 160)).astype(np.float32)  # 160 = short last group for g=64/128
    qw, sc, mn = K.pack_q4(w, g, sym)
    ng = -(-160 // g)
    assert qw.shape == (9, 80) and sc.shape == (9, ng) and sc.dtype == np.float16
    assert (mn is None) == sym
    dq = K.dequantize_q4(qw, sc, mn, g)
    s = np.repeat(np.abs(sc.astype(np.float32)), g, axis=1)[:, :160]
    # symmetric: +|max| clips to code 15 (one step); asymmetric: half a step (+ fp16 min rounding)
    bound = s * (1.0 if sym else 0.5) + 1e-3 * np.abs(w).max()
    assert np.all(np.abs(dq - w) <= bound)
    # re-packing the dequantized weights is lossless
    qw2, sc2, mn2 = K.pack_q4(dq, g, sym)
    assert np.allclose(K.dequantize_q4(qw2, sc2, mn2, g), dq, atol=1e-3 * np.abs(dq).max())


def test_pack_q8_roundtrip():
    r = rng(3)
    w = r.standard_normal((4, 64)).astype(np.float32)
    q, s = K.pack_q8(w)
    assert q.dtype == np.int8 and s.shape == (4, 2)
    dq = K.dequantize_q8(q, s)
    assert np.all(np.abs(dq - w) <= np.repeat(s.astype(np.float32), 32, axis=1) * 0.5 + 1e-3)


def test_fp16_conversions_match_numpy():
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got, ref = K.fp16_to_fp32(h), h.astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan], ref[~nan])
    r = rng(4)
    f = np.concatenate([r.standard_normal(10000) * 10.0 ** r.integers(-8, 6, 10000),
                        [0.0, -0.0, 65504, 65519.99, 65520, 1e9, -1e9, 6e-8, 2.98e-8, 3e-8, np.inf, -np.inf]]
                       ).astype(np.float32)
    with np.errstate(over="ignore"):
        ref16 = f.astype(np.float16)
    assert np.array_equal(K.fp32_to_fp16(f).view(np.uint16), ref16.view(np.uint16))


# --------------------------------------------------------------------- fp32 activation path
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_q4_f32_matches_reference(variant, threads):
    r = rng(5)
    for (n, k) in SHAPES:
        for g in GROUPS:
            for sym in (True, False):
                for m in (1, 3, 6):
                    qw, sc, mn = random_q4(r, n, k, g, sym)
                    w = K.dequantize_q4(qw, sc, mn, g)
                    x = r.standard_normal((m, k)).astype(np.float32)
                    y = K.q4_matmul(x, qw, sc, mn, g, variant=variant, threads=threads)
                    assert y.shape == (m, n)
                    assert np.all(np.abs(y - x @ w.T) <= fp_tol(x, w)), (variant, n, k, g, sym, m)
    y1 = K.q4_matmul(x[0], qw, sc, mn, g, variant=variant, threads=threads)  # 1-D x -> 1-D y
    assert y1.shape == (n,)


# --------------------------------------------------------------------- int8 activation path
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_q4_q8act_exact_on_integer_data(variant, threads):
    r = rng(6)
    for (n, k) in SHAPES:
        for g in GROUPS:
            for sym in (True, False):
                m = 1 + (n + k + g) % 4
                qw, sc, mn = random_q4(r, n, k, g, sym, exact=True)
                x = exact_x(r, m, k)
                exact = (x.astype(np.float64) @ K.dequantize_q4(qw, sc, mn, g).astype(np.float64).T)
                y = K.q4_matmul(x, qw, sc, mn, g, act="q8", variant=variant, threads=threads)
                ref = K.q4_matmul(x, qw, sc, mn, g, act="q8", variant="scalar")
                assert np.array_equal(y, ref), (variant, n, k, g, sym, m)
                assert np.array_equal(y, exact.astype(np.float32))


@pytest.mark.parametrize("variant", VARIANTS)
def test_q4_q8act_error_bound_vs_fp32(variant):
    r = rng(7)
    for (n, k) in SHAPES:
        for g, sym in ((32, True), (128, False)):
            qw, sc, mn = random_q4(r, n, k, g, sym)
            w = K.dequantize_q4(qw, sc, mn, g)
            x = r.standard_normal((2, k)).astype(np.float32)
            y8 = K.q4_matmul(x, qw, sc, mn, g, act="q8", variant=variant)
            yf = x @ w.T
            d = np.abs(x).reshape(2, k // 32, 32).max(axis=2) / 127.0       # [m, blocks]
            wabs = np.abs(w).reshape(n, k // 32, 32).sum(axis=2)             # [n, blocks]
            bound = 0.5 * d @ wabs.T + fp_tol(x, w) * 2
            assert np.all(np.abs(y8 - yf) <= bound)
            assert np.linalg.norm(y8 - yf) <= 0.02 * np.linalg.norm(yf)


def test_quantize_act_identical_across_variants_and_reference():
    r = rng(8)
    x = (r.standard_normal((5, 288)) * 10.0 ** r.integers(-3, 3, (5, 1))).astype(np.float32)
    x[0, :32] = 0.0  # all-zero block
    x[1, 5] = np.inf  # non-finite block: codes 0 / in range, no crash
    ref = K.quantize_act_q8(x, variant="scalar")
    amax = np.abs(x).reshape(5, 9, 32).max(axis=2)
    with np.errstate(all="ignore"):
        q = np.rint(x.reshape(5, 9, 32) * np.where(amax > 0, np.float32(127) / amax, 0)[..., None])
    q = np.where(np.isfinite(q), q, 0).reshape(5, 288)
    assert np.array_equal(ref.q[2:], q[2:].astype(np.int8)) and np.array_equal(ref.q[0], q[0])
    assert np.array_equal(ref.d[2:], (amax / np.float32(127))[2:])
    for v in VARIANTS:
        got = K.quantize_act_q8(x, variant=v, threads=2)
        assert np.array_equal(got.buf, ref.buf), v


# --------------------------------------------------------------------- int8 weights
@pytest.mark.parametrize("variant", VARIANTS)
def test_q8_weights(variant):
    r = rng(9)
    for (n, k) in SHAPES:
        w = r.standard_normal((n, k)).astype(np.float32)
        q, s = K.pack_q8(w)
        wd = K.dequantize_q8(q, s)
        x = r.standard_normal((3, k)).astype(np.float32)
        y = K.q8_matmul(x, q, s, variant=variant, threads=2)
        assert np.all(np.abs(y - x @ wd.T) <= fp_tol(x, wd))
        xe = exact_x(r, 2, k)
        se = (2.0 ** r.integers(-1, 2, s.shape)).astype(np.float16)
        ye = K.q8_matmul(xe, q, se, act="q8", variant=variant, threads=2)
        exact = xe.astype(np.float64) @ K.dequantize_q8(q, se).astype(np.float64).T
        assert np.array_equal(ye, exact.astype(np.float32))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("threads", THREADS)
def test_q8_gemv_block_splits(variant, threads):
    """One activation row (the decode GEMV): K in blocks of 8, then 4, then 1-3 single
    blocks (K = 640 is Gemma 3 270M's hidden size: 16 + 4 blocks)."""
    r = rng(10)
    for k in (32, 96, 128, 224, 256, 288, 384, 640, 736):
        n = 37
        w = r.standard_normal((n, k)).astype(np.float32)
        q, s = K.pack_q8(w)
        xe = exact_x(r, 1, k)
        se = (2.0 ** r.integers(-1, 2, s.shape)).astype(np.float16)
        exact = xe.astype(np.float64) @ K.dequantize_q8(q, se).astype(np.float64).T
        ye = K.q8_matmul(xe, q, se, act="q8", variant=variant, threads=threads)
        assert np.array_equal(ye, exact.astype(np.float32)), k
        x = r.standard_normal((1, k)).astype(np.float32)
        wd = K.dequantize_q8(q, s)
        assert np.all(np.abs(K.q8_matmul(x, q, s, variant=variant, threads=threads) - x @ wd.T)
                      <= fp_tol(x, wd)), k


@pytest.mark.parametrize("variant", VARIANTS)
def test_q8_gemm_crosses_tiles(variant):
    """int8 weights, m = 70 (> the 64-row activation tile), K = 1088 (34 blocks: two K
    chunks of the tiled GEMM), n = 37 (a 4-row tail): exact on exactly representable data,
    and the fp32 path within its bound."""
    r = rng(15)
    n, k, m = 37, 1088, 70
    w = r.standard_normal((n, k)).astype(np.float32)
    q, s = K.pack_q8(w)
    se = (2.0 ** r.integers(-1, 2, s.shape)).astype(np.float16)
    xe = exact_x(r, m, k)
    exact = xe.astype(np.float64) @ K.dequantize_q8(q, se).astype(np.float64).T
    for threads in (1, 2):
        ye = K.q8_matmul(xe, q, se, act="q8", variant=variant, threads=threads)
        assert np.array_equal(ye, exact.astype(np.float32))
    x = r.standard_normal((m, k)).astype(np.float32)
    wd = K.dequantize_q8(q, s)
    assert np.all(np.abs(K.q8_matmul(x, q, s, variant=variant, threads=2) - x @ wd.T) <= fp_tol(x, wd))


def test_dequant_row_matches_numpy():
    r = rng(10)
    qw, sc, mn = random_q4(r, 6, 160, 64, False)
    w = K.dequantize_q4(qw, sc, mn, 64)
    for row in (0, 5):
        assert np.array_equal(K.q4_dequant_row(qw, sc, mn, 64, row), w[row])
    with pytest.raises(ValueError):
        K.q4_dequant_row(qw, sc, mn, 64, 6)


# --------------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    r = rng(11)
    qw, sc, mn = random_q4(r, 8, 64, 32, False)
    x = r.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="scales"):
        K.q4_matmul(x, qw, sc[:, :1], mn, 32)
    with pytest.raises(ValueError, match="mins"):
        K.q4_matmul(x, qw, sc, mn[:4], 32)
    with pytest.raises(ValueError, match="group_size"):
        K.q4_matmul(x, qw, sc, mn, 48)
    with pytest.raises(ValueError, match="multiple of 32"):
        K.q4_matmul(x[:, :48], qw[:, :24], sc[:, :2], None, 32)
    with pytest.raises(ValueError, match="K=64"):
        K.q4_matmul(x[:, :32], qw, sc, mn, 32)
    with pytest.raises(ValueError, match="dtype"):
        K.q4_matmul(x, qw.astype(np.int16), sc, mn, 32)
    with pytest.raises(ValueError, match="no rows"):
        K.q4_matmul(x[:0], qw, sc, mn, 32)
    with pytest.raises(ValueError):
        K.q4_matmul(x, qw, sc, mn, 32, threads=0)
    with pytest.raises(ValueError):
        K.q4_matmul(x, qw, sc, mn, 32, act="int3")
    with pytest.raises(ValueError):
        K.q4_matmul(x, qw, sc, mn, 32, variant="sse9")
    missing = [v for v in K.VARIANTS if v not in VARIANTS]
    if missing:
        with pytest.raises(ValueError, match="not available"):
            K.q4_matmul(x, qw, sc, mn, 32, variant=missing[0])
    # misaligned fp16 scales: the C library refuses them (status -4)
    raw = np.zeros(sc.nbytes + 1, dtype=np.uint8)
    mis = raw[1:].view(np.float16).reshape(sc.shape)
    mis[...] = sc
    with pytest.raises(ValueError, match="misaligned"):
        K.q4_matmul(x, qw, mis, None, 32)
    rawx = np.zeros(x.nbytes + 2, dtype=np.uint8)
    misx = rawx[2:].view(np.float32).reshape(x.shape)
    with pytest.raises(ValueError, match="misaligned"):
        K.q4_matmul(misx, qw, sc, mn, 32)


def test_c_api_null_and_shape_status():
    lib = K._lib()
    qw, sc, _ = random_q4(rng(12), 4, 64, 32, True)
    y = np.zeros(4, np.float32)
    x = np.zeros(64, np.float32)
    w = K._Q4Matrix(qw.ctypes.data, sc.ctypes.data, None, 4, 64, 32)
    assert lib.nano_q4_matmul_f32(ctypes.byref(w), x.ctypes.data, y.ctypes.data, 1, None) == 0
    assert lib.nano_q4_matmul_f32(None, x.ctypes.data, y.ctypes.data, 1, None) == -1
    assert lib.nano_q4_matmul_f32(ctypes.byref(w), None, y.ctypes.data, 1, None) == -1
    bad = K._Q4Matrix(None, sc.ctypes.data, None, 4, 64, 32)
    assert lib.nano_q4_matmul_f32(ctypes.byref(bad), x.ctypes.data, y.ctypes.data, 1, None) == -1
    bad = K._Q4Matrix(qw.ctypes.data, sc.ctypes.data, None, -4, 64, 32)
    assert lib.nano_q4_matmul_f32(ctypes.byref(bad), x.ctypes.data, y.ctypes.data, 1, None) == -2
    assert lib.nano_q4_matmul_q8act(ctypes.byref(w), None, y.ctypes.data, None) == -1
    assert lib.nano_kernel_set_variant(77) == -5
    assert b"group" in lib.nano_kernel_status_string(-3)


# --------------------------------------------------------------------- variants
def test_variant_selection_and_env():
    assert VARIANTS[0] == "scalar" and K.current_variant() in VARIANTS
    with K.use_variant("scalar"):
        assert K.current_variant() == "scalar"
    assert K.current_variant() == VARIANTS[-1] or "NANO_KERNEL" in os.environ
    code = "from nano_runtime import kernels as K; print(K.current_variant())"
    env = dict(os.environ, NANO_KERNEL="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


# --------------------------------------------------------------------- torch
def test_torch_op_and_module():
    torch = pytest.importorskip("torch")
    r = rng(13)
    qw, sc, mn = random_q4(r, 24, 160, 64, False)
    x = torch.randn(2, 3, 160)
    w = torch.from_numpy(K.dequantize_q4(qw, sc, mn, 64))
    y = torch.ops.nano.q4_linear(x, torch.from_numpy(qw), torch.from_numpy(sc), torch.from_numpy(mn), 64)
    assert y.shape == (2, 3, 24)
    torch.testing.assert_close(y, x @ w.T, rtol=1e-4, atol=1e-4)
    y8 = torch.ops.nano.q4_linear(x, torch.from_numpy(qw), torch.from_numpy(sc), None, 64, "q8")
    assert y8.shape == (2, 3, 24)
    with torch.device("meta"):  # fake kernel: shapes only
        ym = torch.ops.nano.q4_linear(torch.empty(5, 160), torch.empty(24, 80, dtype=torch.uint8),
                                      torch.empty(24, 3, dtype=torch.float16), None, 64)
    assert ym.shape == (5, 24)
    lin = torch.nn.Linear(160, 24)
    q = K.Q4Linear.from_linear(lin, group_size=32, symmetric=True)
    ref = torch.nn.functional.linear(x, q.dequantized_weight(), lin.bias)
    torch.testing.assert_close(q(x), ref, rtol=1e-4, atol=1e-4)
    assert set(q.state_dict()) == {"qweight", "scales", "bias"}
    qb = q.to(torch.bfloat16)  # packed scales stay fp16, activations follow the module dtype
    assert qb.scales.dtype == torch.float16
    assert qb(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("variant", VARIANTS)
def test_gemm_many_rows_crosses_row_blocks(variant):
    """m = 70 > 64 (the kernels' activation-row cache block), both activation paths."""
    r = rng(14)
    for g, sym in ((32, True), (64, False)):
        qw, sc, mn = random_q4(r, 37, 288, g, sym)
        w = K.dequantize_q4(qw, sc, mn, g)
        x = r.standard_normal((70, 288)).astype(np.float32)
        y = K.q4_matmul(x, qw, sc, mn, g, variant=variant, threads=2)
        assert np.all(np.abs(y - x @ w.T) <= fp_tol(x, w))
        y8 = K.q4_matmul(x, qw, sc, mn, g, act="q8", variant=variant, threads=2)
        ref8 = K.q4_matmul(x, qw, sc, mn, g, act="q8", variant="scalar")
        assert np.all(np.abs(y8 - ref8) <= fp_tol(x, w))
        xe = exact_x(r, 70, 288)
        qe, se, me = random_q4(r, 37, 288, g, sym, exact=True)
        exact = xe.astype(np.float64) @ K.dequantize_q4(qe, se, me, g).astype(np.float64).T
        assert np.array_equal(K.q4_matmul(xe, qe, se, me, g, act="q8", variant=variant, threads=2),
                              exact.astype(np.float32))
