"""Does the Gemma 3 .pte on custom_sdpa compute its reference's function? Probe + larger sample.

The Gemma .pte exported with the reference attention (index_put cache, F.sdpa) agreed with
the eager 8da4w reference on 95.6% of bench_export's 160 teacher-forced positions; the one
on ExecuTorch's llama::custom_sdpa/update_cache, XnnRMSNorm and matmul RoPE on 91.9%.

1. probe: a 2-layer Gemma 3 built from Gemma 3 270M's layer 0 (local) and layer 5 (global,
   RoPE base 1e6) with the sliding window cut to 8 (so the local layer's mask drops keys),
   8da4w as exported. Every op group's output is compared with fp64 of the same op on that
   run's own inputs (local error) and with a fully fp64 run (global error), as in
   pte_gemma_gap.py section 2, for: the eager reference attention (fp32 PyTorch), the
   eager custom_sdpa rewrite (the exporter's own modules, CustomSdpaAttention.parts,
   XnnRMSNorm, StepContext), and that rewrite lowered by lower_to_executorch. Calls: a
   prefill of 12 tokens, 8 single tokens, a chunk of 5, 7 single tokens (32 positions);
   errors are max |diff| / max |fp64| of a position's vector, max over positions.
2. full: >= 20 real-text prompts (bench_export's 5 + paragraph openings of
   nano_runtime.data.english_text("eval")) x 32 tokens. The text is each prompt + the
   eager 8da4w reference's greedy continuation (cached stepper); every variant is
   teacher-forced on that same text (paired), its argmax compared with the reference's
   one-forward argmax: top-1 agreement and identical greedy prefix (tokens before the first
   disagreement = the prefix a greedy run of the variant would share). Variants: .pte
   artifacts (--pte LABEL=DIR, prefill + one token per call as the LLM runner), the eager
   reference itself called that way, the eager custom_sdpa rewrite (one forward, and
   called that way), and the eager reference against itself with every block input
   scaled by (1 + 1e-6 N(0,1)) (the noise floor, --seeds). 95% intervals: bootstrap over
   prompts.

3. own (--own): bench_export's measurement (each .pte's own greedy continuations) on the
   same prompts.

Writes benchmarks/results/pte_gemma_sdpa.{md,json} (sections not run are kept).
Run: nice -n 10 python benchmarks/pte_gemma_sdpa.py [--skip-probe] [--skip-full]
        [--pte current=~/.cache/nano_runtime/export-bench/gemma3-270m-pte ...]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")

from pte_gemma_gap import OP_LABEL, OPS, Probe, Ref64, _mlp_parts, _rel  # noqa: E402

from nano_runtime.export import runtimes as R  # noqa: E402
from nano_runtime.export.pte import (PTE_NAME, PteDecoder, StepContext,  # noqa: E402
                                     lower_to_executorch, quantize_pte_model,
                                     round_group_scales_bf16, use_custom_sdpa)
from nano_runtime.loader import build_model, load_model  # noqa: E402

MODEL = "gemma3-270m"
RESULTS = os.path.join(HERE, "results")
CALLS = [12] + [1] * 8 + [5] + [1] * 7           # tokens per forward call: 32 positions
TEXT = ("The history of the Roman Empire begins with the founding of the city, and over many "
        "centuries it grew into a state that ruled the Mediterranean world, from Britain to "
        "the deserts of Egypt.")


# ------------------------------------------------------------------ 1. per-op probe
def two_layer_gemma(lm, window=8, layers=(0, 5), seq_len=64):
    """PteDecoder of Gemma 3 270M's blocks `layers` (local, global) with sliding window
    `window`, quantized as the exporter does."""
    cfg = dataclasses.replace(lm.config, name="gemma3-270m-probe", n_layers=2,
                              sliding_window=window, sliding_window_pattern=2)
    assert cfg.layer_window(0) == window and cfg.layer_window(1) == 0
    src = lm.model.state_dict()
    state = {k: v for k, v in src.items() if not k.startswith("layers.")}
    for new, old in enumerate(layers):
        pre = f"layers.{old}."
        state.update({f"layers.{new}." + k[len(pre):]: v for k, v in src.items()
                      if k.startswith(pre)})
    ref = build_model(cfg, {k: v.detach().clone() for k, v in state.items()})
    dec = PteDecoder(ref, seq_len).eval()
    with torch.no_grad():
        quantize_pte_model(dec, 32)
        round_group_scales_bf16(dec)
    return dec


class SdpaProbe(nn.Module):
    """The exporter's custom_sdpa decoder (use_custom_sdpa applied) with every intermediate:
    StepContext.build and CustomSdpaAttention.parts are the production code."""

    def __init__(self, dec):
        super().__init__()
        self.dec, self.max_seq_len = dec, dec.max_seq_len

    def forward(self, tokens, input_pos):
        d = self.dec
        T = tokens.shape[1]
        ctx = StepContext.build(d, input_pos, T)
        x = d.embed(tokens)
        x = x * torch.tensor(d.embed_scale, dtype=x.dtype)
        outs = [x]
        for blk in d.layers:
            a = blk.attn_norm(x)
            r = blk.attn.parts(a, ctx)
            h1 = blk.post_attn_norm(r["o"])
            flat = [r[n].reshape(1, T, -1) for n in ("q", "k", "v", "qn", "kn", "qr", "kr")]
            rest = _mlp_parts(blk, x, h1)
            outs += [a, *flat, r["y"], r["o"], h1, *rest]
            x = rest[-1]
        n = d.norm(x)
        return tuple(outs + [n, d.head(n)])


def _reset(dec):
    for blk in dec.layers:
        at = blk.attn
        for buf in ((at.k_cache, at.v_cache) if hasattr(at, "k_cache")
                    else (at.kv_cache.k, at.kv_cache.v)):
            buf.zero_()


def _run(call, ids):
    """Per position: list of 1-D fp64 tensors (emb, 20 per layer, final norm, logits)."""
    per_pos, p = [], 0
    for n in CALLS:
        outs = call(torch.tensor([ids[p:p + n]]), torch.tensor([p]))
        outs = [torch.as_tensor(np.asarray(t)).double() for t in outs]
        for j in range(n):
            per_pos.append([t.reshape(n, -1)[j] for t in outs])
        p += n
    return per_pos


def _fp64_run(r64, ids, nl, scale):
    """Fully fp64 run: per position (layers [dict op -> vec], final norm, logits)."""
    out = []
    Kh, Vh = [[] for _ in range(nl)], [[] for _ in range(nl)]
    for p, t in enumerate(ids):
        x, layers = r64.W["embed"][t] * scale, []
        for i in range(nl):
            v = {"x": x}
            for nm in OPS:
                if nm == "y":
                    Kh[i].append(v["kr"])
                    Vh[i].append(v["v"])
                v[nm] = r64.op(i, p, v, torch.stack(Kh[i]) if Kh[i] else None,
                               torch.stack(Vh[i]) if Vh[i] else None, nm)
            layers.append(v)
            x = v["x2"]
        n = r64.norm("norm", x)
        out.append((layers, n, r64.lin("head", n)))
    return out


def _errors(r64, ids, run, g64, nl, scale):
    loc, glob = {}, {}

    def put(d, k, e):
        d[k] = max(d.get(k, 0.0), e)
    Kh, Vh = [[] for _ in range(nl)], [[] for _ in range(nl)]
    for p, t in enumerate(ids):
        o = run[p]
        emb, n, logits = o[0], o[-2], o[-1]
        layers = [dict(zip(OPS, o[1 + 20 * i: 21 + 20 * i])) for i in range(nl)]
        gl, gn, glog = g64[p]
        ex = r64.W["embed"][t] * scale
        put(loc, "emb", _rel(emb, ex))
        put(glob, "emb", _rel(emb, ex))
        x = emb
        for i in range(nl):
            v = dict(layers[i], x=x)
            Kh[i].append(v["kr"])
            Vh[i].append(v["v"])
            K, V = torch.stack(Kh[i]), torch.stack(Vh[i])
            for nm in OPS:
                put(loc, f"L{i}.{nm}", _rel(v[nm], r64.op(i, p, v, K, V, nm)))
                put(glob, f"L{i}.{nm}", _rel(v[nm], gl[i][nm]))
            x = v["x2"]
        put(loc, "final_norm", _rel(n, r64.norm("norm", x)))
        put(glob, "final_norm", _rel(n, gn))
        put(loc, "head", _rel(logits, r64.lin("head", n)))
        put(glob, "head", _rel(logits, glog))
        put(glob, "logits_abs", float((logits - glog).abs().max()))
    return loc, glob


def _lower(module, folder):
    if not os.path.exists(os.path.join(folder, PTE_NAME)):
        t0 = time.time()
        data = lower_to_executorch(module, {"get_max_seq_len": module.max_seq_len})
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, PTE_NAME) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(folder, PTE_NAME))
        print("lowered", folder, f"{time.time() - t0:.0f} s", flush=True)
    return folder


def probe(work, window=8, with_ref_pte=False, model=MODEL):
    lm = load_model(model)
    dec = two_layer_gemma(lm, window)
    ref_dec = copy.deepcopy(dec)
    r64 = Ref64(ref_dec)                       # RMSNorm weights w, before XnnRMSNorm
    use_custom_sdpa(dec)
    ids = lm.tokenizer.encode(TEXT)[:sum(CALLS)]
    assert len(ids) == sum(CALLS), len(ids)
    scale, nl = dec.embed_scale, 2
    g64 = _fp64_run(r64, ids, nl, scale)
    rp, sp = Probe(ref_dec, last_only=False).eval(), SdpaProbe(dec).eval()
    runs = {}
    with torch.no_grad():
        _reset(ref_dec)
        runs["eager reference attention"] = _run(rp, ids)
        _reset(dec)
        runs["eager custom_sdpa rewrite"] = _run(sp, ids)
    tag = f"{model}-w{window}"
    progs = [(".pte custom_sdpa", sp, f"sdpa-{tag}")]
    if with_ref_pte:
        progs.append((".pte reference attention", rp, f"ref-{tag}"))
    for key, mod, name in progs:
        _reset(dec)
        _reset(ref_dec)
        pm = R.PteModule(_lower(mod, os.path.join(work, f"probe-{name}")), threads=1)
        runs[key] = _run(lambda t, p: pm.forward.execute([t, p]), ids)
        del pm
    res = {"model": model, "layers": "blocks 0 (local) and 5 (global)", "window": window,
           "positions": len(ids), "calls": CALLS, "runs": {}}
    for k, run in runs.items():
        loc, glob = _errors(r64, ids, run, g64, nl, scale)
        res["runs"][k] = {"local": loc, "global": glob}
        worst = max((v, n) for n, v in loc.items())
        print(f"{k}: logits abs vs fp64 {glob['logits_abs']:.2e}; worst local {worst[1]} "
              f"{worst[0]:.1e}", flush=True)
    return res


# ------------------------------------------------------------------ 2. full model
def prompts(n_text=20, words=24):
    """bench_export's 5 prompts + the openings of n_text prose paragraphs of the eval text."""
    from bench_export import PROMPTS
    from nano_runtime.data import english_text
    paras = [p.strip() for p in english_text("eval").split("\n\n")]
    prose = [p for p in paras if len(p.split()) >= 2 * words and p[:1].isalpha()
             and "    " not in p[:200] and not p.startswith(("*", "-"))]
    openings = list(dict.fromkeys(" ".join(p.split()[:words]) for p in prose))   # unique
    idx = np.linspace(0, len(openings) - 1, n_text).round().astype(int)
    return list(PROMPTS) + [openings[i] for i in idx]


def _boot(hits, n=2000, seed=0):
    """95% bootstrap interval (over prompts) of the pooled agreement; hits [P, N] bool."""
    rng = np.random.default_rng(seed)
    P = hits.shape[0]
    m = hits[rng.integers(0, P, size=(n, P))].mean(axis=(1, 2))
    return [float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]


def _summary(argmax, ref_argmax):
    hits = np.stack([a == r for a, r in zip(argmax, ref_argmax)])
    return {"top1": float(hits.mean()), "top1_ci95": _boot(hits),
            "identical_prefix": [R.first_divergence(list(a), list(r))
                                 for a, r in zip(argmax, ref_argmax)],
            "per_prompt_top1": [float(h.mean()) for h in hits]}


def cache_dequantized(model):
    """In place: every torchao-quantized Linear/Embedding computes with its weight
    dequantized once instead of on every call, otherwise the same calls as torchao's eager
    kernels (IntxUnpackedToInt8Tensor: per-token int8 activation quant-dequant, then
    F.linear with weight.dequantize(); embedding of weight.dequantize()), so the logits
    are bit-identical (checked in full()). One decode step of Gemma 3 270M otherwise
    dequantizes the 262k-row embedding and head: ~7 s per token here under load."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor, _apply_int8_act_asym_per_token_quant_dequant)
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if not isinstance(w, IntxUnpackedToInt8Tensor):
            continue
        dq = w.dequantize()
        if isinstance(mod, nn.Embedding):
            mod.forward = lambda t, dq=dq: F.embedding(t, dq)
        else:
            act = w.activation_quantization is not None
            mod.forward = lambda x, dq=dq, act=act: F.linear(
                _apply_int8_act_asym_per_token_quant_dequant(x) if act else x, dq)
    return model


def full(ptes, n_tokens, seeds, n_text, model=MODEL, save=lambda out: None):
    from nano_runtime.export.metadata import ExportOptions
    from nano_runtime.export.pte import build_quantized_decoder
    from pte_noise_floor import Perturbed
    lm = load_model(model)
    tok = lm.tokenizer
    opts = ExportOptions(max_seq_len=1024)
    q = build_quantized_decoder(lm.model, opts)
    texts = prompts(n_text)
    check = torch.tensor([tok.encode(texts[0])])
    with torch.no_grad():
        slow = q.all_logits(check)
        cache_dequantized(q)
        assert torch.equal(slow, q.all_logits(check)), "cache_dequantized changed the logits"
    seqs, ref_am = [], []
    t0 = time.time()
    stepper = R.RefStepper(q, start_pos_only=True)
    for text in texts:
        ids = tok.encode(text)
        seq = ids + R.greedy(stepper, ids, n_tokens)
        with torch.no_grad():
            q.reset_cache()
            lr = q.all_logits(torch.tensor([seq]))[0].float().numpy()[len(ids) - 1:-1]
        seqs.append((seq, len(ids)))
        ref_am.append(lr.argmax(-1))
    print(f"reference: {len(texts)} prompts in {time.time() - t0:.0f} s", flush=True)
    out = {"model": model, "prompts": texts, "tokens": n_tokens,
           "positions": len(texts) * n_tokens, "prompt_tokens": [n for _, n in seqs],
           "texts_ids": [seq for seq, _ in seqs], "variants": {}}

    def add(key, am, **extra):          # each variant is saved as soon as it is measured
        t = time.time()
        out["variants"][key] = dict(_summary(am, ref_am), **extra)
        print(f"{key}: {out['variants'][key]['top1']:.4f}", flush=True)
        save(out)
        return t
    for label, folder in ptes:
        if not os.path.exists(os.path.join(folder, PTE_NAME)):
            print("missing", folder, flush=True)
            continue
        with open(os.path.join(folder, "export_config.json")) as f:
            att = json.load(f).get("attention", "reference (index_put cache)")
        pm = R.PteModule(folder, threads=2)
        am = [R.teacher_forced_logits(pm, seq, n)[:-1].argmax(-1) for seq, n in seqs]
        del pm
        add(f".pte {label} ({att})", am, folder=folder)
    # the noise floor: every block input perturbed by 1e-6
    p = Perturbed(q, every_layer=True)
    for s in range(seeds):
        add(f"floor: eager vs itself, block inputs x(1+1e-6 N), seed {s}",
            [p.logits(seq, 1e-6, s)[n - 1:-1].argmax(-1) for seq, n in seqs])
    # the eager custom_sdpa rewrite (same modules as the .pte, PyTorch kernels)
    qs = use_custom_sdpa(cache_dequantized(build_quantized_decoder(lm.model, opts)))
    with torch.no_grad():
        add("eager custom_sdpa rewrite, one forward",
            [qs.all_logits(torch.tensor([seq]))[0].float().numpy()[n - 1:-1].argmax(-1)
             for seq, n in seqs])
    # the eager models called as the runner calls the .pte: prefill, then one token per call
    add("eager reference, prefill + one token per call",
        [R.teacher_forced_logits(stepper, seq, n)[:-1].argmax(-1) for seq, n in seqs])
    st = R.RefStepper(qs, start_pos_only=True)
    add("eager custom_sdpa rewrite, prefill + one token per call",
        [R.teacher_forced_logits(st, seq, n)[:-1].argmax(-1) for seq, n in seqs])
    return out


def own(ptes, n_tokens, n_text, model=MODEL):
    """bench_export's measurement on the larger sample: each .pte generates greedily, the
    eager reference is teacher-forced on the .pte's own continuation (pte_noise_floor.
    pte_vs_ref, here with cache_dequantized)."""
    from nano_runtime.export.metadata import ExportOptions
    from nano_runtime.export.pte import build_quantized_decoder
    lm = load_model(model)
    tok = lm.tokenizer
    q = cache_dequantized(build_quantized_decoder(lm.model, ExportOptions(max_seq_len=1024)))
    texts = prompts(n_text)
    out = {"prompts": len(texts), "tokens": n_tokens, "variants": {}}
    for label, folder in ptes:
        if not os.path.exists(os.path.join(folder, PTE_NAME)):
            continue
        pm = R.PteModule(folder, threads=2)
        hits, prefs = [], []
        for text in texts:
            ids = tok.encode(text)
            aa = R.greedy(pm, ids, n_tokens)
            seq = ids + aa
            with torch.no_grad():
                lr = q.all_logits(torch.tensor([seq]))[0].float().numpy()[len(ids) - 1:-1]
            la = R.teacher_forced_logits(pm, seq, len(ids))[:-1]
            hits.append(la.argmax(-1) == lr.argmax(-1))
            prefs.append(R.first_divergence([int(t) for t in lr.argmax(-1)], aa))
        del pm
        hits = np.stack(hits)
        out["variants"][label] = {"top1": float(hits.mean()), "top1_ci95": _boot(hits),
                                  "per_prompt_top1": [float(h.mean()) for h in hits],
                                  "identical_prefix": prefs}
        print("own", label, out["variants"][label]["top1"], flush=True)
    return out


# ------------------------------------------------------------------ report
def _agreement_cells(r, tokens):
    """top-1 | its 95% interval | top-1 on the first 5 prompts | prompts with all identical"""
    pre = r["identical_prefix"]
    return (f"{r['top1']:.1%} | {r['top1_ci95'][0]:.1%} - {r['top1_ci95'][1]:.1%} | "
            f"{np.mean(r['per_prompt_top1'][:5]):.1%} | {sum(x == tokens for x in pre)}/{len(pre)}")


def report(res):
    L = ["# Gemma 3 .pte on custom_sdpa vs its eager 8da4w reference", ""]
    p = res.get("probe")
    if p:
        runs = list(p["runs"])
        L += [f"## 1. Per op group: 2-layer {p.get('model', MODEL)} ({p['layers']}), sliding window "
              f"{p['window']}, {p['positions']} positions in calls of {p['calls']} tokens", "",
              "local = the op group's own error: its output vs fp64 of the same op on that "
              "run's own inputs; global = vs a fully fp64 run (same int4/int8 weights, same "
              "per-token int8 activation fake-quant). max |diff| / max |fp64|, max over "
              "positions. L0 is local (window mask cuts keys from position 8 on, RoPE base "
              "1e4), L1 global (causal, RoPE base 1e6).", "",
              "| op group | " + " | ".join(f"{r} local" for r in runs) + " | "
              + " | ".join(f"{r} global" for r in runs) + " |",
              "|---|" + "---|" * (2 * len(runs))]
        keys = ["emb"] + [f"L{i}.{nm}" for i in range(2) for nm in OPS] + ["final_norm", "head"]
        for k in keys:
            lab = k if "." not in k else f"L{k.split('.')[0][1:]} {OP_LABEL[k.split('.')[1]]}"
            lab = {"emb": "embedding (int8) x sqrt(dim)", "final_norm": "final norm",
                   "head": "tied head (8da8w)"}.get(k, lab)
            lab = lab.replace("SDPA (window mask)", "SDPA")
            cells = [f"{p['runs'][r]['local'][k]:.1e}" for r in runs] + \
                    [f"{p['runs'][r]['global'][k]:.1e}" for r in runs]
            L.append(f"| {lab} | " + " | ".join(cells) + " |")
        L.append("| logits, max abs diff vs fp64 | " + " | " * len(runs) + " | ".join(
            f"{p['runs'][r]['global']['logits_abs']:.2e}" for r in runs) + " |")
        worst = {r: max(p["runs"][r]["local"].values()) for r in runs}
        L += ["", "Largest local error of any op group: " + ", ".join(
            f"{r} {v:.1e}" for r, v in worst.items()) + ".", ""]
    f = res.get("full")
    if f:
        L += [f"## 2. Full {f.get('model', MODEL)}: {len(f['prompts'])} prompts x {f['tokens']} tokens "
              f"= {f['positions']} positions", "",
              "Text = prompt + the eager 8da4w reference's greedy continuation; every variant "
              "is teacher-forced on that same text and its argmax compared with the "
              "reference's (paired positions). Identical prefix = tokens before the first "
              "disagreement. 95% interval: bootstrap over prompts.", "",
              "| variant | top-1 vs eager 8da4w | 95% interval | top-1 on bench_export's 5 "
              f"prompts | prompts with all {f['tokens']} identical | median identical prefix | "
              "identical prefixes |", "|---|---|---|---|---|---|---|"]
        for k, r in f["variants"].items():
            pre = r["identical_prefix"]
            L.append(f"| {k} | {_agreement_cells(r, f['tokens'])} | {np.median(pre):g} | {pre} |")
        names = list(f["variants"])
        if len(names) > 1:
            base = names[0]
            b = np.array(f["variants"][base]["per_prompt_top1"])
            L += ["", f"Paired difference from `{base}` (same positions; 95% bootstrap "
                  "interval over prompts):", "", "| variant | top-1 minus the first row's | "
                  "95% interval |", "|---|---|---|"]
            rng = np.random.default_rng(0)
            for k in names[1:]:
                d = np.array(f["variants"][k]["per_prompt_top1"]) - b
                m = d[rng.integers(0, len(d), size=(2000, len(d)))].mean(1)
                L.append(f"| {k} | {d.mean() * 100:+.1f} points | {np.percentile(m, 2.5) * 100:+.1f}"
                         f" to {np.percentile(m, 97.5) * 100:+.1f} |")
        L += ["", "Prompts: bench_export's 5, then openings (24 words) of prose paragraphs of "
              "nano_runtime.data.english_text('eval'); the list is in the json.", ""]
    o = res.get("own")
    if o:
        L += [f"## 3. bench_export's measurement on the larger sample ({o['prompts']} prompts x "
              f"{o['tokens']})", "",
              "Each .pte generates greedily; the eager 8da4w reference is teacher-forced on "
              "that continuation (so the texts differ per artifact, as in export_bench.md). "
              "Identical prefix = the .pte's greedy tokens the reference's greedy run shares.",
              "", "| .pte | top-1 vs eager 8da4w | 95% interval | on bench_export's 5 prompts | "
              "prompts with all identical | identical prefixes |", "|---|---|---|---|---|---|"]
        for k, r in o["variants"].items():
            L.append(f"| {k} | {_agreement_cells(r, o['tokens'])} | {r['identical_prefix']} |")
        L.append("")
    if res.get("conclusion"):
        L += ["## Conclusion", "", res["conclusion"], ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--probe-model", default=MODEL, help="a Gemma 3 card with >= 6 layers")
    ap.add_argument("--with-ref-pte", action="store_true",
                    help="also lower the reference-attention probe")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--text-prompts", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--pte", action="append", default=[],
                    help="LABEL=DIR of a Gemma .pte folder (repeatable)")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/nano_runtime/pte_gemma_sdpa"))
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--own", action="store_true",
                    help="also bench_export's measurement (each .pte's own continuations)")
    ap.add_argument("--conclusion", default=None)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ptes = [(s.split("=", 1)[0], os.path.expanduser(s.split("=", 1)[1])) for s in args.pte] or [
        ("current", os.path.expanduser("~/.cache/nano_runtime/export-bench/gemma3-270m-pte")),
        ("reference attention", os.path.expanduser(
            "~/.cache/nano_runtime/export-bench-gelu/gemma3-270m-pte"))]
    path = os.path.join(args.out, "pte_gemma_sdpa.json")
    res = json.load(open(path)) if os.path.exists(path) else {}

    def save():
        os.makedirs(args.out, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(path + ".tmp", path)
        md = report(res)
        with open(os.path.join(args.out, "pte_gemma_sdpa.md") + ".tmp", "w") as f:
            f.write(md)
        os.replace(os.path.join(args.out, "pte_gemma_sdpa.md") + ".tmp",
                   os.path.join(args.out, "pte_gemma_sdpa.md"))
        return md
    if not args.skip_probe:
        res["probe"] = probe(args.work, args.window, args.with_ref_pte,
                              args.probe_model)
        save()
    if not args.skip_full:
        def keep(out):
            res["full"] = out
            save()
        res["full"] = full(ptes, args.tokens, args.seeds, args.text_prompts, save=keep)
    if args.own:
        res["own"] = own(ptes, args.tokens, args.text_prompts)
    if args.conclusion:
        res["conclusion"] = args.conclusion
    print(save())


if __name__ == "__main__":
    main()
