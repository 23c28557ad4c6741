"""Groupwise int4 and int8 quantizers producing the packed .nano tensors.

Q4 (nano_format.h): per row, groups of G in {32, 64, 128} columns along K (the last group
may be shorter), symmetric x = s * (q - 8) or asymmetric x = s * q + m with fp16 s and m.
Q8: per 32 columns, x = s * q, |q| <= 127 (GGUF Q8_0). Packing goes through the kernels'
numpy reference (nano_runtime.kernels.pack_q4_codes), so there is one packer.

Scales and mins are rounded to fp16 BEFORE the codes are chosen, so what the file holds
dequantizes to exactly what the quantizer optimized.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import NanoError
from ..formats.nano_file import GROUP_SIZES, QK, ngroups

CHUNK_ELEMS = 1 << 20  # weights quantized at once (bounds temporary memory for large tensors)


def check_q4_shape(name: str, k: int, group_size: int):
    if group_size not in GROUP_SIZES:
        raise NanoError(f"group size must be one of {', '.join(map(str, GROUP_SIZES))}, "
                        f"got {group_size}")
    if k % QK or k == 0:
        raise NanoError(f"tensor {name} has K={k} columns, not a multiple of {QK}: "
                        "it cannot be stored as int4")


def check_finite(name: str, w) -> None:
    t = torch.as_tensor(w)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NanoError(f"tensor {name} has {bad} NaN or Inf values; refusing to quantize it")


# ------------------------------------------------------------------ group parameters
def _grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """[N, K] -> [N, ng, g], the short last group padded by repeating its last column."""
    n, k = w.shape
    ng = ngroups(k, g)
    pad = ng * g - k
    if pad:
        w = torch.cat([w, w[:, -1:].expand(n, pad)], dim=1)
    return w.reshape(n, ng, g)


def _expand(v: torch.Tensor, k: int, g: int) -> torch.Tensor:
    """[N, ng] -> [N, K] per column."""
    return v.repeat_interleave(g, dim=1)[:, :k]


def group_params(w: torch.Tensor, g: int, symmetric: bool, clip=None):
    """fp16-rounded (scales, mins|None) [N, ng] as float32 for w [N, K].

    clip: None, a float, or a [N, ng] tensor of range shrink factors in (0, 1].
    Symmetric (Q4_0 style): the signed value of largest magnitude m maps to code 0,
    s = -m / 8. Asymmetric (Q4_1 style): s = (max - min) / 15, min = group minimum.
    """
    gw = _grouped(w.float(), g)
    if symmetric:
        idx = gw.abs().argmax(dim=2, keepdim=True)
        m = torch.gather(gw, 2, idx)[..., 0]
        if clip is not None:
            m = m * clip
        s = (-m / 8.0).half().float()
        return s, None
    lo, hi = gw.amin(dim=2), gw.amax(dim=2)
    if clip is not None:
        lo, hi = lo * clip, hi * clip
    s = ((hi - lo) / 15.0).half().float()
    mn = lo.half().float()
    return s, mn


def codes_for(w: torch.Tensor, s: torch.Tensor, mn: Optional[torch.Tensor], g: int) -> torch.Tensor:
    """uint8 codes [N, K] of w given per-group params [N, ng]."""
    k = w.shape[1]
    se = _expand(s, k, g)
    safe = torch.where(se != 0, se, torch.ones_like(se))
    if mn is None:
        q = torch.where(se != 0, torch.round(w / safe) + 8, torch.full_like(w, 8))
    else:
        q = torch.where(se != 0, torch.round((w - _expand(mn, k, g)) / safe), torch.zeros_like(w))
    return q.clamp_(0, 15).to(torch.uint8)


def dequant_codes(q: torch.Tensor, s: torch.Tensor, mn: Optional[torch.Tensor], g: int) -> torch.Tensor:
    k = q.shape[1]
    se = _expand(s, k, g)
    if mn is None:
        return se * (q.float() - 8.0)
    return se * q.float() + _expand(mn, k, g)


def fake_quant(w: torch.Tensor, g: int, symmetric: bool, clip=None) -> torch.Tensor:
    """Quantize-dequantize w [N, K] (float32) with RTN group parameters."""
    s, mn = group_params(w, g, symmetric, clip)
    return dequant_codes(codes_for(w.float(), s, mn, g), s, mn, g)


# ------------------------------------------------------------------ clip search
CLIP_GRID = tuple(1.0 - 0.025 * i for i in range(13))  # 1.0 .. 0.7


def search_clip(w: torch.Tensor, g: int, symmetric: bool, hessian: Optional[torch.Tensor] = None,
                grid=CLIP_GRID) -> torch.Tensor:
    """Per-group range shrink factor [N, ng] minimizing the group's error.

    With `hessian` H = X^T X [K, K] of the layer inputs the error of group j of row n is the
    output error it causes, d_j^T H_jj d_j (d = w - Q(w) on the group); without it, |d|^2.
    """
    w = w.float()
    n, k = w.shape
    ng = ngroups(k, g)
    best = torch.full((n, ng), float("inf"))
    best_r = torch.ones(n, ng)
    hb = None
    if hessian is not None:
        pad = ng * g - k
        hp = torch.nn.functional.pad(hessian.float(), (0, pad, 0, pad))
        hb = torch.stack([hp[j * g:(j + 1) * g, j * g:(j + 1) * g] for j in range(ng)])  # [ng,g,g]
    for r in grid:
        rr = torch.full((n, ng), r)
        d = w - fake_quant(w, g, symmetric, rr)
        dg = torch.nn.functional.pad(d, (0, ng * g - k)).reshape(n, ng, g)
        if hb is None:
            err = (dg * dg).sum(-1)
        else:
            err = torch.einsum("ngi,gij,ngj->ng", dg, hb, dg)
        better = err < best
        best = torch.where(better, err, best)
        best_r = torch.where(better, rr, best_r)
    return best_r


# ------------------------------------------------------------------ packed outputs
def pack_from_codes(codes: torch.Tensor, s: torch.Tensor, mn: Optional[torch.Tensor]):
    """(qweight uint8 [N, K/2], scales fp16 [N, ng], mins fp16 | None) for the .nano file."""
    from ..kernels import pack_q4_codes
    qw = pack_q4_codes(codes.numpy())
    return qw, s.half().numpy(), None if mn is None else mn.half().numpy()


def quantize_q4(name: str, w, group_size: int, symmetric: bool, clip=None):
    """RTN int4 of w [N, K] (numpy or torch) -> (qweight, scales, mins|None), in row chunks."""
    w = torch.as_tensor(w)
    n, k = w.shape
    check_q4_shape(name, k, group_size)
    check_finite(name, w)
    outs = []
    rows = max(1, CHUNK_ELEMS // k)
    for r0 in range(0, n, rows):
        wc = w[r0:r0 + rows].float()
        c = None if clip is None or isinstance(clip, float) and clip == 1.0 else (
            clip if isinstance(clip, float) else clip[r0:r0 + rows])
        s, mn = group_params(wc, group_size, symmetric, c)
        outs.append(pack_from_codes(codes_for(wc, s, mn, group_size), s, mn))
    qw = np.concatenate([o[0] for o in outs])
    sc = np.concatenate([o[1] for o in outs])
    mn = None if symmetric else np.concatenate([o[2] for o in outs])
    return qw, sc, mn


def quantize_q8(name: str, w):
    """int8 per-32 of w [N, K] -> (qweight8 int8 [N, K], scales fp16 [N, K/32]), GGUF Q8_0 rule."""
    w = torch.as_tensor(w)
    n, k = w.shape
    if k % QK or k == 0:
        raise NanoError(f"tensor {name} has K={k} columns, not a multiple of {QK}: "
                        "it cannot be stored as int8")
    check_finite(name, w)
    qs, ss = [], []
    rows = max(1, CHUNK_ELEMS // k)
    for r0 in range(0, n, rows):
        g = w[r0:r0 + rows].float().reshape(-1, k // QK, QK)
        s = (g.abs().amax(-1) / 127.0).half().float()
        safe = torch.where(s != 0, s, torch.ones_like(s))[..., None]
        q = torch.where(s[..., None] != 0, torch.round(g / safe), torch.zeros_like(g))
        qs.append(q.clamp_(-127, 127).to(torch.int8).reshape(-1, k).numpy())
        ss.append(s.half().numpy())
    return np.concatenate(qs), np.concatenate(ss)


def dequantize_q4(qweight, scales, mins, group_size: int) -> np.ndarray:
    from ..kernels import dequantize_q4 as dq
    return dq(qweight, scales, mins, group_size, 2 * np.asarray(qweight).shape[1])


def packed_entries(prefix: str, fmt: str, w, group_size: int, symmetric: bool, clip=None):
    """[(name, array)] storing weight w of `prefix` in format fmt (q4 | q8 | f16 | f32)."""
    if fmt == "q4":
        qw, sc, mn = quantize_q4(prefix, w, group_size, symmetric, clip)
        out = [(prefix + ".qweight", qw), (prefix + ".scales", sc)]
        return out + ([] if mn is None else [(prefix + ".mins", mn)])
    if fmt == "q8":
        q, s = quantize_q8(prefix, w)
        return [(prefix + ".qweight8", q), (prefix + ".scales", s)]
    check_finite(prefix, w)
    t = torch.as_tensor(w)
    return [(prefix + ".weight", t.to(torch.float16 if fmt == "f16" else torch.float32).numpy())]
