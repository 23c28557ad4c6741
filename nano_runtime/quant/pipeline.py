"""quantize_model(): one MODEL -> one .nano file, by any method.

* ``rtn``        round-to-nearest, streamed tensor by tensor (row chunk by row chunk) from
                 the source: works at nano-1/nano-2 scale with one fp tensor chunk in memory.
* ``gptq``       GPTQ, layer by layer on calibration text (quant/gptq.py).
* ``awq``        activation-aware scale search folded into the preceding norm / w_up,
                 then a Hessian-weighted range-shrink search per group (quant/awq.py).
* ``awq-gptq``   AWQ scales, then GPTQ on the scaled weights.
* ``gguf-exact`` GGUF Q4_1 / Q8_0 tensors copied bit for bit (quant/gguf_exact.py).

The calibrated methods stream through the model: the calibration batch's hidden states
enter layer i, each group of linears sharing an input is quantized in turn (q/k/v, then
wo on the output of the quantized q/k/v, then gate/up, then down: "true sequential"),
and the quantized layer's output becomes layer i+1's input.
"""
from __future__ import annotations

import os
import resource
import time

import numpy as np
import torch

from ..errors import NanoError
from ..formats import nano_file as nf
from ..progress import progress_bar
from .core import (check_q4_shape, codes_for, dequant_codes, group_params, pack_from_codes,
                   packed_entries, search_clip)
from .sources import open_source

METHODS = ("rtn", "gptq", "awq", "awq-gptq", "gguf-exact")
CALIBRATED = ("gptq", "awq", "awq-gptq")
AWQ_TOKENS = 512  # calibration tokens sampled for the AWQ scale search (its cost is linear in it)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def effective_norm(cfg, v) -> np.ndarray:
    v = v.detach().float().clone() if isinstance(v, torch.Tensor) else \
        torch.from_numpy(np.array(v, dtype=np.float32))
    return (v + 1.0 if cfg.norm_unit_offset else v).numpy()


def make_recipe(cfg, method, group_size, symmetric, embed, head, calib_desc=None, **extra) -> dict:
    if head is None:
        head = "tied" if cfg.tie_embeddings else "q8"
    if cfg.tie_embeddings and head != "tied":
        raise NanoError(f"{cfg.name} ties its output head to the embeddings: --head must be "
                        f"'tied' (the head uses the embedding format, --embed)")
    if not cfg.tie_embeddings and head == "tied":
        raise NanoError(f"{cfg.name} has its own output head: --head must be one of q8, q4, f16, f32")
    r = {"method": method, "bits": 4, "group_size": group_size, "symmetric": bool(symmetric),
         "embed": embed, "head": head, "overrides": {}}
    if calib_desc:
        r["calib"] = calib_desc
    r.update(extra)
    r = nf.check_recipe(r)
    for prefix, n, k in nf.linear_shapes(cfg):
        if nf.tensor_format(cfg, r, prefix) == "q4":
            check_q4_shape(prefix, k, group_size)
    return r


def _concat_entries(parts: list) -> list:
    if len(parts) == 1:
        return parts[0]
    return [(name, np.concatenate([p[i][1] for p in parts]))
            for i, (name, _) in enumerate(parts[0])]


# --------------------------------------------------------------------------- RTN (streamed)
def rtn_stream(src, recipe):
    cfg = src.config
    g, sym = recipe["group_size"], recipe["symmetric"]
    for name, shape, chunks in src.stream():
        if len(shape) == 1:
            v = next(chunks)
            nf_check = torch.isfinite(v).all()
            if not bool(nf_check):
                raise NanoError(f"tensor {name} has NaN or Inf values; refusing to quantize it")
            yield name, effective_norm(cfg, v)
            continue
        prefix = name[:-len(".weight")]
        fmt = nf.tensor_format(cfg, recipe, prefix)
        # the packed outputs are allocated once and filled chunk by chunk (no concatenation)
        bufs = {n: np.empty(shp, dt) for n, dt, shp in nf.prefix_entries(prefix, fmt, *shape, g, sym)}
        r0 = 0
        for c in chunks:
            for n, arr in packed_entries(prefix, fmt, c, g, sym):
                bufs[n][r0:r0 + arr.shape[0]] = arr
            r0 += c.shape[0]
            del c
        yield from bufs.items()
        del bufs


# --------------------------------------------------------------------------- GGUF exact
def exact_recipe_and_stream(src, recipe_kw):
    from ..formats.gguf_import import open_gguf
    from .gguf_exact import exact_plan, exact_tensors
    if src.gguf_path is None:
        raise NanoError("--method gguf-exact needs a GGUF model (a .gguf file or a card backed by one)")
    cfg = src.config
    g = open_gguf(src.gguf_path)
    plan = exact_plan(g, cfg)
    overrides, requant = {}, []
    for prefix, typ in plan.items():
        if typ == "Q8_0":
            overrides[prefix] = "q8"
        elif typ == "Q4_1" and prefix != "embed":
            overrides[prefix] = "q4"
        else:
            requant.append(prefix)
    embed = "q8"
    head = "tied" if cfg.tie_embeddings else overrides.get("output", "q8")
    recipe = make_recipe(cfg, "gguf-exact", 32, False, embed, head, overrides=overrides,
                         requantized=requant, source=os.path.basename(src.gguf_path))

    def stream():
        for ref, d in exact_tensors(g, cfg):
            if "q4" in d:
                qw, sc, mn = d["q4"]
                yield from [(ref + ".qweight", qw), (ref + ".scales", sc), (ref + ".mins", mn)]
            elif "q8" in d:
                q, sc = d["q8"]
                yield from [(ref + ".qweight8", q), (ref + ".scales", sc)]
            elif d["fp"].ndim == 1:
                yield ref, effective_norm(cfg, d["fp"])
            else:
                fmt = nf.tensor_format(cfg, recipe, ref)
                yield from packed_entries(ref, fmt, d["fp"], 32, False)
    return recipe, stream()


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


# --------------------------------------------------------------------------- entry point
def quantize_model(spec: str, out: str, method: str = "rtn", group_size: int = 32,
                   symmetric: bool = False, embed: str = "q8", head=None, calib=None,
                   n_calib: int = 16, seq_len: int = 512, act_order: bool = False,
                   damp: float = 0.01, seed: int = 0, show_progress: bool = True) -> dict:
    """Quantize MODEL into OUT.nano; returns {"seconds", "peak_rss_mb", "bits_per_weight", ...}."""
    if method not in METHODS:
        raise NanoError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if group_size not in nf.GROUP_SIZES:
        raise NanoError(f"--group-size must be one of {', '.join(map(str, nf.GROUP_SIZES))}, "
                        f"got {group_size}")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise NanoError(f"cannot write {out}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise NanoError(f"cannot write {out}: directory {out_dir} is not writable")
    if os.path.isdir(out):
        raise NanoError(f"cannot write {out}: it is a directory")
    t0 = time.time()
    import_rss = peak_rss_mb()  # interpreter + torch + numpy, before any model work
    calib_text = None
    if method in CALIBRATED:
        from .calib import read_calib_text
        calib_text, calib_desc = read_calib_text(calib)  # fail early, before any heavy work
    src = open_source(spec, seed=seed)
    cfg = src.config
    stats = {}
    if method == "gguf-exact":
        recipe, stream = exact_recipe_and_stream(src, {})
    elif method == "rtn":
        recipe = make_recipe(cfg, method, group_size, symmetric, embed, head)
        stream = rtn_stream(src, recipe)
    else:
        from .calib import calib_batches
        tokens = calib_batches(src.tokenizer, calib_text, n_calib, seq_len)
        recipe = make_recipe(cfg, method, group_size, symmetric, embed, head, calib_desc,
                             calib_tokens=int(tokens.numel()), act_order=bool(act_order),
                             damp=damp)
        stream, stats = calibrated_stream(src, recipe, method, tokens, act_order, damp,
                                          show_progress)
    n_entries = len(nf.tensor_layout(cfg, recipe))
    with progress_bar(total=n_entries, desc=f"write {os.path.basename(out)}", unit="tensor",
                      disable=not show_progress) as bar:
        nf.write_nano(out, cfg, stream, src.tokenizer, recipe, progress=bar)
    bpw = nf.bits_per_weight(cfg, recipe)
    return {"seconds": time.time() - t0, "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": import_rss, "method": method,
            "bits_per_weight": bpw["linear"], "bits_per_weight_total": bpw["total"],
            "file_size_bytes": os.path.getsize(out), "recipe": recipe, "layer_errors": stats}
