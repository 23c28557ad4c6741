"""Round-to-nearest int4 / int8 in numpy only (no torch import): the streamed RTN path.

Bit for bit the same as quant/core.py's torch quantizers (tests/test_quant.py checks it on
real SmolLM2 layers): the same fp32 operations in the same order, fp16 rounding of scales and
mins (round-to-nearest-even in both libraries) before the codes are chosen, round-half-even
codes, first-occurrence argmax for the symmetric scale, and the short last group padded by
repeating its last column. `nano quantize MODEL --method rtn` on a random-init card, a
safetensors checkpoint or a GGUF import therefore never loads torch (~190 MiB of RSS).
"""
from __future__ import annotations

import numpy as np

from ..errors import NanoError
from ..formats.nano_file import GROUP_SIZES, QK, ngroups

CHUNK_ELEMS = 1 << 20  # weights quantized at once (bounds temporary memory for large tensors)
_F15, _F8, _F127 = np.float32(15.0), np.float32(8.0), np.float32(127.0)


def check_q4_shape(name: str, k: int, group_size: int):
    if group_size not in GROUP_SIZES:
        raise NanoError(f"group size must be one of {', '.join(map(str, GROUP_SIZES))}, "
                        f"got {group_size}")
    if k % QK or k == 0:
        raise NanoError(f"tensor {name} has K={k} columns, not a multiple of {QK}: "
                        "it cannot be stored as int4")


def check_finite(name: str, w: np.ndarray) -> None:
    ok = np.isfinite(w)
    if not ok.all():
        raise NanoError(f"tensor {name} has {int(w.size - ok.sum())} NaN or Inf values; "
                        "refusing to quantize it")


def _grouped(w: np.ndarray, g: int) -> np.ndarray:
    n, k = w.shape
    ng = ngroups(k, g)
    pad = ng * g - k
    if pad:
        w = np.concatenate([w, np.repeat(w[:, -1:], pad, axis=1)], axis=1)
    return w.reshape(n, ng, g)


def _expand(v: np.ndarray, k: int, g: int) -> np.ndarray:
    return np.repeat(v, g, axis=1)[:, :k]


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def group_params(w: np.ndarray, g: int, symmetric: bool):
    """fp16-rounded (scales, mins|None) [N, ng] as float32 for w [N, K] float32 (RTN)."""
    gw = _grouped(w, g)
    if symmetric:
        idx = np.abs(gw).argmax(axis=2)[..., None]
        m = np.take_along_axis(gw, idx, axis=2)[..., 0]
        return _f16(-m / _F8), None
    lo, hi = gw.min(axis=2), gw.max(axis=2)
    return _f16((hi - lo) / _F15), _f16(lo)


def codes_for(w: np.ndarray, s: np.ndarray, mn, g: int) -> np.ndarray:
    k = w.shape[1]
    se = _expand(s, k, g)
    nz = se != 0
    safe = np.where(nz, se, np.float32(1.0))
    if mn is None:
        q = np.where(nz, np.rint(w / safe) + _F8, _F8)
    else:
        q = np.where(nz, np.rint((w - _expand(mn, k, g)) / safe), np.float32(0.0))
    return np.clip(q, 0, 15).astype(np.uint8)


def pack_q4_codes(codes: np.ndarray) -> np.ndarray:
    """codes uint8 [N, K] -> qweight [N, K/2], nano_format.h nibble order: byte j of each
    32-column block holds column j (low nibble) and column j + 16 (high nibble). The same as
    nano_runtime.kernels.pack_q4_codes (tested), repeated here because importing the kernels
    module imports torch when it is installed."""
    n, k = codes.shape
    b = codes.reshape(n, k // QK, 2, QK // 2)
    return (b[:, :, 0, :] | (b[:, :, 1, :] << 4)).reshape(n, k // 2)


def quantize_q4(name: str, w: np.ndarray, group_size: int, symmetric: bool):
    """RTN int4 of w [N, K] -> (qweight uint8 [N, K/2], scales f16 [N, ng], mins f16|None)."""
    n, k = w.shape
    check_q4_shape(name, k, group_size)
    check_finite(name, w)
    ng = ngroups(k, group_size)
    qw = np.empty((n, k // 2), np.uint8)
    sc = np.empty((n, ng), np.float16)
    mn = None if symmetric else np.empty((n, ng), np.float16)
    rows = max(1, CHUNK_ELEMS // k)
    for r0 in range(0, n, rows):
        wc = np.asarray(w[r0:r0 + rows], dtype=np.float32)
        s, m = group_params(wc, group_size, symmetric)
        qw[r0:r0 + wc.shape[0]] = pack_q4_codes(codes_for(wc, s, m, group_size))
        sc[r0:r0 + wc.shape[0]] = s
        if m is not None:
            mn[r0:r0 + wc.shape[0]] = m
    return qw, sc, mn


def quantize_q8(name: str, w: np.ndarray):
    """int8 per-32 of w [N, K] -> (qweight8 int8 [N, K], scales f16 [N, K/32]) (GGUF Q8_0)."""
    n, k = w.shape
    if k % QK or k == 0:
        raise NanoError(f"tensor {name} has K={k} columns, not a multiple of {QK}: "
                        "it cannot be stored as int8")
    check_finite(name, w)
    q8 = np.empty((n, k), np.int8)
    sc = np.empty((n, k // QK), np.float16)
    rows = max(1, CHUNK_ELEMS // k)
    for r0 in range(0, n, rows):
        g = np.asarray(w[r0:r0 + rows], dtype=np.float32).reshape(-1, k // QK, QK)
        s = _f16(np.abs(g).max(axis=-1) / _F127)
        nz = s != 0
        safe = np.where(nz, s, np.float32(1.0))[..., None]
        q = np.where(nz[..., None], np.rint(g / safe), np.float32(0.0))
        q8[r0:r0 + g.shape[0]] = np.clip(q, -127, 127).astype(np.int8).reshape(-1, k)
        sc[r0:r0 + g.shape[0]] = s
    return q8, sc


def packed_entries(prefix: str, fmt: str, w: np.ndarray, group_size: int, symmetric: bool):
    """[(name, array)] storing weight w of `prefix` in format fmt (q4 | q8 | f16 | f32)."""
    if fmt == "q4":
        qw, sc, mn = quantize_q4(prefix, w, group_size, symmetric)
        out = [(prefix + ".qweight", qw), (prefix + ".scales", sc)]
        return out + ([] if mn is None else [(prefix + ".mins", mn)])
    if fmt == "q8":
        q, s = quantize_q8(prefix, w)
        return [(prefix + ".qweight8", q), (prefix + ".scales", s)]
    w = np.asarray(w, dtype=np.float32)
    check_finite(prefix, w)
    return [(prefix + ".weight", w.astype(np.float16 if fmt == "f16" else np.float32))]
