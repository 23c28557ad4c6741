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

from ..errors import NanoError
from ..formats import nano_file as nf
from ..progress import progress_bar
from .rtn_np import check_q4_shape, packed_entries
from .sources import open_source

METHODS = ("rtn", "gptq", "awq", "awq-gptq", "gguf-exact")
CALIBRATED = ("gptq", "awq", "awq-gptq")
_CALIBRATED_NAMES = ("AWQ_TOKENS", "_fold_norm_scale", "_sample_rows", "_hessian",
                     "_LayerQuantizer", "calibrated_stream")


def __getattr__(name):  # the calibrated half lives in calibrated.py (it needs torch)
    if name in _CALIBRATED_NAMES:
        from . import calibrated
        return getattr(calibrated, name)
    raise AttributeError(name)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def effective_norm(cfg, v) -> np.ndarray:
    """The stored multiplier (1 + w for Gemma) as float32, from numpy or a torch tensor."""
    if hasattr(v, "detach"):
        v = v.detach().float().cpu().numpy()
    v = np.array(v, dtype=np.float32)
    return v + np.float32(1.0) if cfg.norm_unit_offset else v


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
    for name, shape, chunks in src.stream_np():
        if len(shape) == 1:
            v = next(chunks)
            if not np.isfinite(v).all():
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
# GGUF tensor types with more than 4 bits per weight: re-quantized to int8 per 32, not int4
WIDE_GGUF_TYPES = {"Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_1", "Q8_K", "F16", "BF16", "F32"}

def exact_recipe_and_stream(src, embed: str = "q8", calib=None, n_calib: int = 16,
                            seq_len: int = 512, show_progress: bool = True):
    """The exact GGUF import. embed: "q8" (default; a Q8_0 embedding is copied exactly) or
    "q4": the embedding re-quantized to int4 asymmetric g32 from its dequantized values,
    every other tensor as in the default import. With a tied head (Gemma 3: a 262k x 640
    table, 62% of the weights, read in full by every decoded token) the int4 table is
    fitted by GPTQ to the head's inputs (the final-norm hidden states of the calibration
    text through the model): on Gemma 3 270M, with 16 x 512 calibration tokens, that costs
    +2.3% perplexity over the int8 table where round-to-nearest costs +7.8%. An untied
    embedding uses RTN."""
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
            if typ in WIDE_GGUF_TYPES and prefix != "embed":
                # more than 4 bits in the source (Gemma's Q4_K_M keeps attn_v / ffn_down /
                # attn_q in Q5_0/Q6_K): int8 per 32 keeps them within ~0.2% of the source
                # values; int4 g32 RTN lost +18% perplexity on Gemma 3 270M
                overrides[prefix] = "q8"
    if embed not in ("q8", "q4"):
        raise NanoError(f"--method gguf-exact supports --embed q8 (exact) or q4, got {embed!r}")
    extra = {}
    H = None
    if embed == "q4":
        overrides.pop("embed", None)
        if "embed" not in requant:
            requant.append("embed")
        if cfg.tie_embeddings:
            from .calib import read_calib_text
            text, desc = read_calib_text(calib)      # clear errors before any heavy work
            H, ntok = _head_hessian(src, text, n_calib, seq_len, show_progress)
            extra = {"embed_method": "gptq", "calib": desc, "calib_tokens": ntok}
        else:
            extra = {"embed_method": "rtn"}
    head = "tied" if cfg.tie_embeddings else overrides.get("output", "q8")
    recipe = make_recipe(cfg, "gguf-exact", 32, False, embed, head, overrides=overrides,
                         requantized=requant, source=os.path.basename(src.gguf_path), **extra)

    def stream():
        for ref, d in exact_tensors(g, cfg):
            if ref == "embed" and embed == "q4":
                yield from _requant_embed_q4(d, H, show_progress)
                continue
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


def _head_hessian(src, text: str, n_calib: int, seq_len: int, show_progress: bool):
    """H = X^T X [D, D] of the tied head's inputs (the final norm's output) over the
    calibration text run through the reference model of the source; (H, tokens)."""
    import torch
    from ..loader import load_model
    from .calib import calib_batches
    lm = load_model(src.gguf_path)
    model = lm.model.eval()
    tokens = calib_batches(src.tokenizer, text, n_calib, seq_len)
    H = torch.zeros(src.config.dim, src.config.dim, dtype=torch.float64)

    class _Enough(Exception):
        pass

    def hook(mod, inp, out):   # the head's input is all we need: skip the 262k-row logits
        x = out.detach().reshape(-1, out.shape[-1]).double()
        H.add_(x.T @ x)
        raise _Enough
    h = model.norm.register_forward_hook(hook)
    try:
        with torch.no_grad(), progress_bar(total=len(tokens), desc="calibrate head",
                                           unit="window", disable=not show_progress) as bar:
            for t in tokens:
                try:
                    model(t[None])
                except _Enough:
                    pass
                bar.update(1)
    finally:
        h.remove()
    return H.float(), int(tokens.numel())


def _requant_embed_q4(d: dict, H=None, show_progress: bool = False, rows: int = 8192):
    """The embedding's entries in int4 asym g32 from its dequantized values, in row chunks
    (one fp32 chunk at a time, never the whole fp32 table: 671 MB for Gemma 3): GPTQ
    against H (the tied head's input statistics) when given, else round-to-nearest."""
    import torch
    from .core import pack_from_codes
    from .gptq import gptq_quantize
    if "q8" in d:
        q, sc = d["q8"]
        n, k = q.shape
        deq = lambda a, b: (q[a:b].reshape(b - a, -1, 32).astype(np.float32)
                            * sc[a:b].astype(np.float32)[:, :, None]).reshape(b - a, k)
    elif "q4" in d:
        qw, sc, mn = d["q4"]
        n, k = qw.shape[0], qw.shape[1] * 2
        deq = lambda a, b: _dequant_q4_asym(qw[a:b], sc[a:b], mn[a:b])
    else:
        fp = d["fp"]
        n, k = fp.shape
        deq = lambda a, b: np.asarray(fp[a:b], dtype=np.float32)
    bufs = {name: np.empty(shp, dt) for name, dt, shp in nf.prefix_entries("embed", "q4", n, k, 32, False)}
    with progress_bar(total=n, desc="int4 embedding" + (" (GPTQ)" if H is not None else ""),
                      unit="row", disable=not show_progress) as bar:
        for a in range(0, n, rows):
            b = min(n, a + rows)
            w = deq(a, b)
            if not np.isfinite(w).all():
                raise NanoError("tensor embed has NaN or Inf values; refusing to quantize it")
            if H is None:
                ents = packed_entries("embed", "q4", w, 32, False)
            else:
                codes, gs, gm = gptq_quantize(torch.from_numpy(w), H, 32, False)
                qw, s16, m16 = pack_from_codes(codes, gs, gm)
                ents = [("embed.qweight", qw), ("embed.scales", s16), ("embed.mins", m16)]
            for name, arr in ents:
                bufs[name][a:b] = arr
            bar.update(b - a)
    yield from bufs.items()


def _dequant_q4_asym(qw, sc, mn) -> np.ndarray:
    """.nano asym g32 int4 (low nibble = weight j, high = j + 16 of each block) -> fp32."""
    n = qw.shape[0]
    b = qw.reshape(n, -1, 16)
    codes = np.concatenate([b & 0x0F, b >> 4], axis=-1).astype(np.float32)   # [n, nb, 32]
    return (codes * sc.astype(np.float32)[:, :, None]
            + mn.astype(np.float32)[:, :, None]).reshape(n, -1)


# --------------------------------------------------------------------------- entry point
def quantize_model(spec: str, out: str, method: str = "rtn", group_size: int = 32,
                   symmetric: bool = False, embed: str = "q8", head=None, calib=None,
                   n_calib: int = 16, seq_len: int = 512, act_order: bool = False,
                   damp: float = 0.01, seed: int = 0, show_progress: bool = True,
                   overrides=None, tune_steps: int = 0, tune_lr: float = 1e-3,
                   tune_seqs=None) -> dict:
    """Quantize MODEL into OUT.nano; returns {"seconds", "peak_rss_mb", "bits_per_weight", ...}.

    overrides: {linear prefix: "q8" | "f16" | "f32" | "q4"} for mixed precision (e.g. the most
    sensitive tensors kept in int8); the rest use the method at group_size.
    tune_steps > 0: afterwards, train the int4 group scales/mins end to end against the fp
    model on the calibration text (quant/tune.py); codes and bits per weight unchanged.
    tune_seqs: calibration windows for the tuning (default n_calib), e.g. GPTQ on 64 windows
    and the tuning on every window of the text."""
    if method not in METHODS:
        raise NanoError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if tune_steps < 0:
        raise NanoError(f"--tune-steps must be >= 0, got {tune_steps}")
    if tune_steps and method == "gguf-exact":
        raise NanoError("--tune-steps does not apply to --method gguf-exact (its tensors are "
                        "copied exactly)")
    if tune_steps and not (0 < tune_lr < 1):
        raise NanoError(f"--tune-lr must be in (0, 1), got {tune_lr}")
    if tune_seqs is not None and tune_seqs < 1:
        raise NanoError(f"--tune-seqs must be >= 1, got {tune_seqs}")
    if tune_steps and (n_calib if tune_seqs is None else tune_seqs) < 2:
        flag = "--calib-seqs" if tune_seqs is None else "--tune-seqs"
        raise NanoError(f"--tune-steps needs at least 2 calibration windows (one is held out): "
                        f"raise {flag}")
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
    if overrides:
        overrides = dict(overrides)
        bad = [f for f in overrides.values() if f not in nf.TENSOR_FORMATS]
        if bad:
            raise NanoError(f"tensor formats must be one of {', '.join(nf.TENSOR_FORMATS)}, "
                            f"got {bad[0]!r}")
    t0 = time.time()
    import_rss = peak_rss_mb()  # interpreter + torch + numpy, before any model work
    calib_text = None
    if method in CALIBRATED or tune_steps:
        from .calib import read_calib_text
        calib_text, calib_desc = read_calib_text(calib)  # fail early, before any heavy work
    src = open_source(spec, seed=seed)
    cfg = src.config
    if overrides:
        known = {p for p, _, _ in nf.linear_shapes(cfg)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise NanoError(f"{unknown[0]} is not a linear layer of {cfg.name} (expected names "
                            f"like layers.0.mlp.w_down)")
    stats = {}
    if method == "gguf-exact":
        recipe, stream = exact_recipe_and_stream(src, embed, calib, n_calib, seq_len,
                                                 show_progress)
    elif method == "rtn":
        recipe = make_recipe(cfg, method, group_size, symmetric, embed, head,
                             overrides=dict(overrides or {}))
        stream = rtn_stream(src, recipe)
    else:
        from .calib import calib_batches
        # the large built-in train split is sampled evenly over its length (varied topics);
        # files and the small calib split keep consecutive windows from the start
        tokens = calib_batches(src.tokenizer, calib_text, n_calib, seq_len,
                               spread=calib_desc.startswith("builtin:train"))
        recipe = make_recipe(cfg, method, group_size, symmetric, embed, head, calib_desc,
                             calib_tokens=int(tokens.numel()), act_order=bool(act_order),
                             damp=damp, overrides=dict(overrides or {}))
        from .calibrated import calibrated_stream
        stream, stats = calibrated_stream(src, recipe, method, tokens, act_order, damp,
                                          show_progress)
    n_entries = len(nf.tensor_layout(cfg, recipe))
    # with tuning, the untuned file goes to a temporary name first: OUT appears only once
    # it holds the tuned scales (an interrupted or failed tuning leaves no OUT behind)
    first = f"{out}.untuned.{os.getpid()}" if tune_steps else out
    with progress_bar(total=n_entries, desc=f"write {os.path.basename(out)}", unit="tensor",
                      disable=not show_progress) as bar:
        nf.write_nano(first, cfg, stream, src.tokenizer, recipe, progress=bar)
    del stream  # the calibrated model is no longer needed
    if tune_steps:
        try:
            same = tune_seqs is None or tune_seqs == n_calib
            recipe = _tune(src, first, out, method, calib_text, calib_desc,
                           n_calib if tune_seqs is None else tune_seqs, seq_len,
                           tune_steps, tune_lr, n_entries, show_progress,
                           tokens if method != "rtn" and same else None)
        finally:
            if os.path.exists(first):
                os.unlink(first)
    bpw = nf.bits_per_weight(cfg, recipe)
    return {"seconds": time.time() - t0, "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": import_rss, "method": method,
            "bits_per_weight": bpw["linear"], "bits_per_weight_total": bpw["total"],
            "file_size_bytes": os.path.getsize(out), "recipe": recipe, "layer_errors": stats}


def _tune(src, first, out, method, calib_text, calib_desc, n_calib, seq_len, steps, lr,
          n_entries, show_progress, tokens=None) -> dict:
    """Tune FIRST's int4 scales against the source's fp model, write the result to OUT."""
    from .calib import calib_batches
    from .tune import rewrite_scales, tune_scales
    if tokens is None:
        tokens = calib_batches(src.tokenizer, calib_text, n_calib, seq_len,
                               spread=calib_desc.startswith("builtin:train"))
    new, info = tune_scales(src.load_model(), first, tokens, steps, lr,
                            show_progress=show_progress)
    info["calib"] = calib_desc
    with progress_bar(total=n_entries, desc=f"write {os.path.basename(out)} (tuned)",
                      unit="tensor", disable=not show_progress) as bar:
        rewrite_scales(first, out, new, info, progress=bar)
    return nf.open_nano(out).recipe
