"""The calibrated methods (GPTQ, AWQ, AWQ+GPTQ), layer by layer through the fp model.

Split out of pipeline.py so that the streamed RTN path never imports torch.
"""
from __future__ import annotations

import numpy as np
import torch

from ..formats import nano_file as nf
from ..progress import progress_bar
from .core import (codes_for, dequant_codes, group_params, pack_from_codes, packed_entries,
                   search_clip)
from .pipeline import effective_norm
from .rtn_np import QK, packed_entries as packed_entries_np

AWQ_TOKENS = 512  # calibration tokens sampled for the AWQ scale search (its cost is linear in it)


# --------------------------------------------------------------------------- calibrated
def _fold_norm_scale(norm, s, unit_offset: bool):
    """Divide a RMSNorm's effective multiplier by s (the next linears' columns get * s)."""
    w = norm.weight.data.float()
    eff = (1.0 + w) if unit_offset else w
    eff = eff / s
    norm.weight.data = (eff - 1.0 if unit_offset else eff).to(norm.weight.dtype)


def _sample_rows(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] <= n:
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.shape[0], generator=g)[:n]]


def _hessian(x: torch.Tensor) -> torch.Tensor:
    X = x.reshape(-1, x.shape[-1]).float()
    return (X.T @ X) * (2.0 / X.shape[0])


def _dequant_np(ents: list, fmt: str) -> np.ndarray:
    """float32 weight of rtn_np.packed_entries(...) for fmt q8 | f16 | f32."""
    if fmt == "q8":
        q, sc = ents[0][1], ents[1][1]
        n, k = q.shape
        return (q.reshape(n, k // QK, QK).astype(np.float32)
                * sc.astype(np.float32)[..., None]).reshape(n, k)
    return ents[0][1].astype(np.float32)


class _LayerQuantizer:
    def __init__(self, cfg, recipe, method, act_order, damp, packed):
        self.cfg, self.recipe, self.method = cfg, recipe, method
        self.g, self.sym = recipe["group_size"], recipe["symmetric"]
        self.act_order, self.damp, self.packed = act_order, damp, packed
        self.stats = {}

    def quantize_linears(self, prefix, mods: dict, xin: torch.Tensor):
        """Quantize linears sharing input xin [B, T, K]; weights replaced by Q(W)."""
        from .gptq import gptq_quantize
        H = _hessian(xin)
        results = {}
        # mixed precision: tensors the recipe keeps in q8 / f16 / f32 are stored RTN (int8
        # per-32 is near-lossless), and later layers see their stored values
        fmts = {name: nf.tensor_format(self.cfg, self.recipe, prefix + name) for name in mods}
        for name in [n for n in mods if fmts[n] != "q4"]:
            mod = mods.pop(name)
            w = mod.weight.data.float()
            ents = packed_entries_np(prefix + name, fmts[name], w.numpy(), self.g, self.sym)
            wq = torch.from_numpy(_dequant_np(ents, fmts[name]))
            d = w - wq
            self.stats[prefix + name] = float(torch.einsum("ij,jk,ik->", d, H, d) / w.shape[0])
            mod.weight.data = wq.to(mod.weight.dtype)
            self.packed[prefix + name] = ents
        if not mods:
            return
        if self.method in ("gptq", "awq-gptq"):
            # rows are independent given H: one GPTQ pass over the stacked matrices
            ws = [mod.weight.data.float() for mod in mods.values()]
            codes, S, M = gptq_quantize(torch.cat(ws), H, self.g, self.sym, damp=self.damp,
                                        act_order=self.act_order)
            r0 = 0
            for name, w in zip(mods, ws):
                r1 = r0 + w.shape[0]
                results[name] = (codes[r0:r1], S[r0:r1], None if M is None else M[r0:r1])
                r0 = r1
        for name, mod in mods.items():
            w = mod.weight.data.float()
            if name in results:
                codes, S, M = results[name]
            else:
                clip = search_clip(w, self.g, self.sym, H)
                S, M = group_params(w, self.g, self.sym, clip)
                codes = codes_for(w, S, M, self.g)
            wq = dequant_codes(codes, S, M, self.g)
            d = w - wq
            self.stats[prefix + name] = float(torch.einsum("ij,jk,ik->", d, H, d) / w.shape[0])
            mod.weight.data = wq.to(mod.weight.dtype)
            qw, sc, mn = pack_from_codes(codes, S, M)
            e = [(f"{prefix}{name}.qweight", qw), (f"{prefix}{name}.scales", sc)]
            self.packed[prefix + name] = e + ([] if mn is None else [(f"{prefix}{name}.mins", mn)])

    @torch.no_grad()
    def layer(self, i: int, blk, x: torch.Tensor, pos: torch.Tensor, mb: int = 4) -> torch.Tensor:
        cfg, p = self.cfg, f"layers.{i}."
        awq = self.method in ("awq", "awq-gptq")
        uo = cfg.norm_unit_offset
        from .awq import search_scales
        # 1. q, k, v on attn_norm(x)
        a = blk.attn
        if awq:
            s = search_scales(_sample_rows(blk.attn_norm(x), AWQ_TOKENS), [a.wq.weight, a.wk.weight,
                              a.wv.weight], self.g, self.sym)
            _fold_norm_scale(blk.attn_norm, s, uo)
            for lin in (a.wq, a.wk, a.wv):
                lin.weight.data *= s
        xa = blk.attn_norm(x)
        self.quantize_linears(p + "attn.", {"wq": a.wq, "wk": a.wk, "wv": a.wv}, xa)
        # 2. wo on the attention output of the quantized q, k, v
        wo = a.wo
        a.wo = torch.nn.Identity()
        ao = torch.cat([a(xa[b:b + mb], pos) for b in range(0, xa.shape[0], mb)])
        a.wo = wo
        del xa
        self.quantize_linears(p + "attn.", {"wo": wo}, ao)
        h = wo(ao)
        del ao
        if blk.post_norms:
            h = blk.post_attn_norm(h)
        x2 = x + h
        # 3. gate, up on mlp_norm(x2); AWQ also scales down's input through w_up's rows
        m = blk.mlp
        act_fn = (lambda t: torch.nn.functional.gelu(t, approximate="tanh")) if m.gelu \
            else torch.nn.functional.silu
        if awq:
            s = search_scales(_sample_rows(blk.mlp_norm(x2), AWQ_TOKENS), [m.w_gate.weight,
                              m.w_up.weight], self.g, self.sym)
            _fold_norm_scale(blk.mlp_norm, s, uo)
            m.w_gate.weight.data *= s
            m.w_up.weight.data *= s
            xs = _sample_rows(blk.mlp_norm(x2), AWQ_TOKENS)
            act = act_fn(m.w_gate(xs)) * m.w_up(xs)
            s = search_scales(act, [m.w_down.weight], self.g, self.sym)
            m.w_up.weight.data /= s[:, None]
            m.w_down.weight.data *= s
        xm = blk.mlp_norm(x2)
        self.quantize_linears(p + "mlp.", {"w_gate": m.w_gate, "w_up": m.w_up}, xm)
        act = act_fn(m.w_gate(xm)) * m.w_up(xm)
        del xm
        self.quantize_linears(p + "mlp.", {"w_down": m.w_down}, act)
        h = m.w_down(act)
        del act
        if blk.post_norms:
            h = blk.post_mlp_norm(h)
        return x2 + h


def calibrated_stream(src, recipe, method, tokens, act_order, damp, show_progress):
    cfg = src.config
    model = src.load_model()
    model.eval()
    packed = {}
    lq = _LayerQuantizer(cfg, recipe, method, act_order, damp, packed)
    with torch.no_grad():
        x = model.embed(tokens)
        if model.embed_scale != 1.0:
            x = x * torch.tensor(model.embed_scale, dtype=x.dtype)
        pos = torch.arange(tokens.shape[1])
        with progress_bar(total=cfg.n_layers, desc=f"{method} layers", unit="layer",
                          disable=not show_progress) as bar:
            for i, blk in enumerate(model.layers):
                x = lq.layer(i, blk, x, pos)
                bar.update(1)
    g, sym = recipe["group_size"], recipe["symmetric"]

    def stream():
        sd = dict(model.named_parameters())
        for name, _ in nf.norm_shapes(cfg):
            yield name, effective_norm(cfg, sd[name].detach())
        yield from packed_entries("embed", nf.tensor_format(cfg, recipe, "embed"),
                                  model.embed.weight.detach(), g, sym)
        if not cfg.tie_embeddings:
            yield from packed_entries("output", nf.tensor_format(cfg, recipe, "output"),
                                      model.output.weight.detach(), g, sym)
        for prefix in list(packed):
            yield from packed.pop(prefix)
    return stream(), lq.stats
