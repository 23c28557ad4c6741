"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") for one weight matrix, into the .nano int4 group layout.

Given H = 2/n X^T X of the layer's inputs, columns are quantized one at a time and the
error of each is spread over the not-yet-quantized columns through the Cholesky factor of
H^-1 (lazy batch updates in blocks of 128 columns). Hessian damping adds
``damp * mean(diag H)`` to the diagonal. With ``act_order`` columns are processed by
decreasing diag(H); group parameters are then fixed up front from the original weights
("static groups"), so the file keeps its plain column order. Group parameters are
otherwise computed when the first column of a group is reached, from the error-updated
weights, with an optional range-shrink search on the group (``clip_search``).
"""
from __future__ import annotations

import torch

from ..formats.nano_file import ngroups
from .core import CLIP_GRID, codes_for, dequant_codes, group_params, search_clip


def gptq_quantize(w: torch.Tensor, H: torch.Tensor, group_size: int, symmetric: bool,
                  damp: float = 0.01, act_order: bool = False, block: int = 128,
                  clip_search: bool = True):
    """w [N, K] float32, H [K, K] -> (codes uint8 [N, K], scales [N, ng], mins [N, ng]|None).

    Runs on one thread: the column loop is many small ops, which extra threads only slow
    down (10x measured on a loaded 2-core machine)."""
    nt = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq(w, H, group_size, symmetric, damp, act_order, block, clip_search)
    finally:
        torch.set_num_threads(nt)


def _gptq(w, H, group_size, symmetric, damp, act_order, block, clip_search):
    W = w.detach().clone().float()
    n, k = W.shape
    g = group_size
    ng = ngroups(k, g)
    H = H.detach().clone().double()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    S = torch.zeros(n, ng)
    M = None if symmetric else torch.zeros(n, ng)
    static = act_order
    if static:
        clip = search_clip(W, g, symmetric) if clip_search else None
        S, M = group_params(W, g, symmetric, clip)
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        colgroup = perm // g
    else:
        perm = None
        colgroup = torch.arange(k) // g

    H += damp * torch.mean(torch.diag(H)) * torch.eye(k, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True).float()

    Q = torch.zeros(n, k, dtype=torch.uint8)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            gi = int(colgroup[col])
            if not static and col % g == 0:
                # group params from the current (error-updated) weights of this group;
                # block is a multiple of g, so the group lies inside W1
                wg = W1[:, i:i + g]
                if clip_search:
                    best_err = torch.full((n,), float("inf"))
                    for r in CLIP_GRID:
                        s_, m_ = group_params(wg, g, symmetric, torch.full((n, 1), r))
                        d = wg - dequant_codes(codes_for(wg, s_, m_, g), s_, m_, g)
                        err = (d * d).sum(1)
                        better = err < best_err
                        best_err = torch.where(better, err, best_err)
                        S[better, gi] = s_[better, 0]
                        if M is not None:
                            M[better, gi] = m_[better, 0]
                else:
                    s_, m_ = group_params(wg, g, symmetric)
                    S[:, gi] = s_[:, 0]
                    if M is not None:
                        M[:, gi] = m_[:, 0]
            wcol = W1[:, i]
            s = S[:, gi]
            safe = torch.where(s != 0, s, torch.ones_like(s))
            if M is None:
                q = torch.where(s != 0, torch.round(wcol / safe) + 8, torch.full_like(wcol, 8))
                q = q.clamp_(0, 15)
                deq = s * (q - 8.0)
            else:
                m = M[:, gi]
                q = torch.where(s != 0, torch.round((wcol - m) / safe), torch.zeros_like(wcol))
                q = q.clamp_(0, 15)
                deq = s * q + m
            Q[:, col] = q.to(torch.uint8)
            err = ((wcol - deq) / Hinv1[i, i])[:, None]
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if perm is not None:
        inv = torch.argsort(perm)
        Q = Q[:, inv]
    return Q, S, M
