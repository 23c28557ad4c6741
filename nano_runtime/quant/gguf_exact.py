"""Lossless import of GGUF Q4_1 and Q8_0 tensors into the .nano layout.

GGUF Q4_1 block (20 bytes per 32 weights): fp16 d, fp16 m, 16 bytes of codes with
weight j in the low nibble of byte j and weight j+16 in its high nibble; x = d * q + m.
That is exactly the asymmetric group-32 .nano Q4 layout: qweight = the code bytes,
scales = d, mins = m. GGUF Q8_0 (34 bytes per 32): fp16 d, 32 int8; x = d * q, exactly
.nano Q8. Llama q/k rows permuted by llama.cpp's converter are un-permuted by moving
whole packed rows together with their scales and mins, which keeps the import exact.
Other GGUF types (Q4_K, Q5_0, Q6_K, ...) have no exact int4 g32 image; they are
dequantized and re-quantized (listed in the recipe under "requantized"): types wider
than 4 bits (pipeline.WIDE_GGUF_TYPES) to int8 per 32, the rest to int4 g32 with RTN.
"""
from __future__ import annotations

import numpy as np

from ..formats.gguf_import import _unpermute_llama, gguf_to_ref_name

Q4_1_BLOCK = 20
Q8_0_BLOCK = 34


def q4_1_to_nano(data: np.ndarray, n: int, k: int):
    """GGUF Q4_1 raw rows uint8 [N, K/32*20] -> (qweight [N, K/2], scales, mins [N, K/32])."""
    b = np.asarray(data, dtype=np.uint8).reshape(n, k // 32, Q4_1_BLOCK)
    scales = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16).reshape(n, k // 32)
    mins = np.ascontiguousarray(b[:, :, 2:4]).view(np.float16).reshape(n, k // 32)
    qweight = np.ascontiguousarray(b[:, :, 4:]).reshape(n, k // 2)
    return qweight, scales, mins


def q8_0_to_nano(data: np.ndarray, n: int, k: int):
    """GGUF Q8_0 raw rows uint8 [N, K/32*34] -> (qweight8 int8 [N, K], scales [N, K/32])."""
    b = np.asarray(data, dtype=np.uint8).reshape(n, k // 32, Q8_0_BLOCK)
    scales = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16).reshape(n, k // 32)
    q = np.ascontiguousarray(b[:, :, 2:]).view(np.int8).reshape(n, k)
    return q, scales


def _rows_fix(cfg, gname: str):
    """Row un-permutation for Llama q/k (applied to every per-row array)."""
    if cfg.family == "llama" and gname.endswith("attn_q.weight"):
        return lambda a: np.ascontiguousarray(_unpermute_llama(a, cfg.n_heads))
    if cfg.family == "llama" and gname.endswith("attn_k.weight"):
        return lambda a: np.ascontiguousarray(_unpermute_llama(a, cfg.n_kv_heads))
    return lambda a: a


def exact_plan(g, cfg) -> dict:
    """ref prefix -> GGUF type name of every 2-D weight of the GGUF file."""
    out = {}
    for t in g.reader.tensors:
        ref = gguf_to_ref_name(t.name)
        if ref.endswith(".weight") and len(t.shape) == 2:
            out[ref[:-len(".weight")]] = t.tensor_type.name
    return out


def exact_tensors(g, cfg):
    """Yield (ref prefix, {"q4": (qw, sc, mn)} | {"q8": (q, sc)} | {"fp": fp32 array}).

    For norms (1-D) yields (ref name, {"fp": array}) with the HF convention (w, not 1 + w).
    """
    from ..formats.gguf_import import dequantize_tensor
    for t in g.reader.tensors:
        ref = gguf_to_ref_name(t.name)
        typ = t.tensor_type.name
        fix = _rows_fix(cfg, t.name)
        if len(t.data.shape) == 2 and typ in ("Q4_1", "Q8_0"):
            n = int(t.shape[1])
            k = int(t.shape[0])
            if typ == "Q4_1":
                qw, sc, mn = q4_1_to_nano(t.data, n, k)
                yield ref[:-len(".weight")], {"q4": (fix(qw), fix(sc), fix(mn))}
            else:
                q, sc = q8_0_to_nano(t.data, n, k)
                yield ref[:-len(".weight")], {"q8": (fix(q), fix(sc))}
            continue
        w = fix(dequantize_tensor(t))
        if w.ndim == 1:
            if cfg.norm_unit_offset and t.name.endswith("norm.weight"):
                w = w - 1.0
            yield ref, {"fp": w}
        else:
            yield ref[:-len(".weight")], {"fp": w}
