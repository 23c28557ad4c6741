"""How closely can any 8da4w artifact agree with the eager 8da4w reference? The noise floor.

ExecuTorch's 8da4w program quantizes every linear's input to int8 per token at run time.
A float difference of one ulp in an activation (XNNPACK's summation order vs PyTorch's)
can move a value across an int8 rounding boundary; 30 layers of that amplify a 1e-7
difference into logit differences of ~1-2. This program measures that amplification on
the eager reference itself, next to the .pte:

1. floor: the eager 8da4w reference (build_quantized_decoder, the model that is exported)
   against the same reference with its embedding output multiplied by (1 + 1e-6 * N(0,1)),
   teacher-forced on the reference's own greedy continuations of bench_export's 5 prompts
   x 32 tokens (3 perturbation seeds): top-1 agreement and identical greedy prefix.
2. the same for the weight-only twin (same int4/int8 weights, fp32 activations): the
   floor without dynamic activation quantization.
3. pte: the exported .pte (--artifacts, bench_export's folders) against the reference on
   the .pte's own greedy continuations (bench_export's measurement, recomputed here).
4. shallow: the first --layers layers of the same model exported to a .pte with the same
   recipe, against its eager reference, every position of a prompt (step by step, as the
   LLM runner decodes): the program computes the reference's function where depth does
   not amplify rounding differences.

Writes benchmarks/results/pte_noise_floor.{md,json}.
Run: python benchmarks/pte_noise_floor.py [MODEL ...] [--artifacts DIR] [--layers 2]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
warnings.filterwarnings("ignore")

from bench_export import PROMPTS  # noqa: E402
from nano_runtime.export import runtimes as R  # noqa: E402
from nano_runtime.export.metadata import ExportOptions, export_metadata  # noqa: E402
from nano_runtime.export.pte import (PteDecoder, build_quantized_decoder,  # noqa: E402
                                     lower_to_executorch, quantize_pte_model,
                                     round_group_scales_bf16, weight_only_twin)
from nano_runtime.loader import load_model  # noqa: E402

EPS = 1e-6


class Perturbed:
    """all_logits of a PteDecoder, optionally with the embedding output perturbed
    (every_layer: each block's input too, like an implementation whose every op rounds
    differently)."""

    def __init__(self, model, every_layer: bool = False):
        self.m = model
        self.eps = 0.0
        orig = model.embed.forward

        def fwd(t):
            x = orig(t)
            return x if self.eps == 0 else x * (1 + self.eps * torch.randn_like(x))
        model.embed.forward = fwd
        if every_layer:
            for blk in model.layers:
                blk.register_forward_pre_hook(
                    lambda mod, args: None if self.eps == 0 else
                    (args[0] * (1 + self.eps * torch.randn_like(args[0])),) + tuple(args[1:]))

    @torch.no_grad()
    def logits(self, ids, eps=0.0, seed=0):
        self.eps = eps
        torch.manual_seed(seed)
        try:
            return self.m.all_logits(torch.tensor([ids]))[0].float().numpy()
        finally:
            self.eps = 0.0


def floor(model, tok, n_tokens, seeds, every_layer=False):
    p = Perturbed(model, every_layer)
    tops, prefs = [], []
    for text in PROMPTS:
        ids = tok.encode(text)
        seq = list(ids)
        for _ in range(n_tokens):
            seq.append(int(p.logits(seq)[-1].argmax()))
        a = p.logits(seq)[len(ids) - 1:-1].argmax(-1)
        for s in seeds:
            b = p.logits(seq, EPS, s)[len(ids) - 1:-1].argmax(-1)
            tops.append(float((a == b).mean()))
            prefs.append(R.first_divergence(list(a), list(b)))
    return {"top1": float(np.mean(tops)), "identical_prefix": prefs}


def pte_vs_ref(folder, model, tok, n_tokens):
    pm = R.PteModule(folder, threads=2)
    tops, prefs, dmax = [], [], 0.0
    for text in PROMPTS:
        ids = tok.encode(text)
        aa = R.greedy(pm, ids, n_tokens)
        seq = ids + aa
        with torch.no_grad():
            lr = model.all_logits(torch.tensor([seq]))[0].float().numpy()[len(ids) - 1:-1]
        la = R.teacher_forced_logits(pm, seq, len(ids))[:-1]
        tops.append(float((la.argmax(-1) == lr.argmax(-1)).mean()))
        prefs.append(R.first_divergence([int(t) for t in lr.argmax(-1)], aa))
        dmax = max(dmax, float(np.abs(la - lr).max()))
    return {"top1": float(np.mean(tops)), "identical_prefix": prefs, "max_abs_logit_diff": dmax}


def shallow(lm, n_layers, seq_len=128):
    ref = copy.deepcopy(lm.model)
    ref.layers = ref.layers[:n_layers]
    m = PteDecoder(ref, seq_len).eval()
    with torch.no_grad():
        quantize_pte_model(m, 32)
        round_group_scales_bf16(m)
    t0 = time.time()
    data = lower_to_executorch(m, export_metadata(lm.config, lm.tokenizer, seq_len))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "model.pte"), "wb") as f:
            f.write(data)
        pm = R.PteModule(d, threads=1)
        ids = lm.tokenizer.encode(PROMPTS[1] + " " + PROMPTS[0])
        with torch.no_grad():
            m.reset_cache()
            lr = m.all_logits(torch.tensor([ids]))[0].numpy()
        la = R.teacher_forced_logits(pm, ids, 1)
        del pm
    return {"layers": n_layers, "positions": len(ids), "export_s": time.time() - t0,
            "max_abs_logit_diff": float(np.abs(la - lr).max()),
            "top1": float((la.argmax(-1) == lr.argmax(-1)).mean())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--artifacts", default=os.path.expanduser("~/.cache/nano_runtime/export-bench"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--every-layer-only", action="store_true",
                    help="only the floor with every block's input perturbed -> "
                         "pte_noise_floor_layers.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.every_layer_only:
        lines = ["# 8da4w noise floor with every block's input perturbed by (1 + 1e-6·N(0,1))", "",
                 "| model | top-1 | identical greedy prefixes |", "|---|---|---|"]
        res = {}
        for name in args.models:
            lm = load_model(name)
            q = build_quantized_decoder(lm.model, ExportOptions(max_seq_len=1024))
            res[name] = floor(q, lm.tokenizer, args.tokens, range(args.seeds), every_layer=True)
            print(name, res[name], flush=True)
            lines.append(f"| {name} | {res[name]['top1']:.1%} | {res[name]['identical_prefix']} |")
        with open(os.path.join(args.out, "pte_noise_floor_layers.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(args.out, "pte_noise_floor_layers.json"), "w") as f:
            json.dump(res, f, indent=1)
        print("\n".join(lines))
        return
    res = {}
    for name in args.models:
        lm = load_model(name)
        q = build_quantized_decoder(lm.model, ExportOptions(max_seq_len=1024))
        r = {"floor_8da4w": floor(q, lm.tokenizer, args.tokens, range(args.seeds))}
        print(name, "floor 8da4w", r["floor_8da4w"], flush=True)
        w = weight_only_twin(build_quantized_decoder(lm.model, ExportOptions(max_seq_len=1024)))
        r["floor_weight_only"] = floor(w, lm.tokenizer, args.tokens, range(args.seeds))
        print(name, "floor weight-only", r["floor_weight_only"], flush=True)
        folder = os.path.join(args.artifacts, f"{name}-pte")
        if os.path.exists(os.path.join(folder, "model.pte")):
            q = build_quantized_decoder(lm.model, ExportOptions(max_seq_len=1024))
            r["pte_vs_8da4w"] = pte_vs_ref(folder, q, lm.tokenizer, args.tokens)
            print(name, "pte", r["pte_vs_8da4w"], flush=True)
        r["shallow"] = shallow(lm, args.layers)
        print(name, "shallow", r["shallow"], flush=True)
        res[name] = r
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pte_noise_floor.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# .pte vs its eager reference: the 8da4w noise floor", "",
             f"Teacher-forced top-1 over {len(PROMPTS)} prompts x {args.tokens} greedy tokens; "
             f"'floor' = the eager reference against itself with its embedding output scaled by "
             f"(1 + {EPS:g}·N(0,1)), {args.seeds} seeds. Identical prefix = greedy tokens before "
             "the first disagreement.", "",
             "| model | comparison | top-1 | identical greedy prefixes | max abs logit diff |",
             "|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | eager 8da4w vs itself perturbed by {EPS:g} (floor) | "
                     f"{r['floor_8da4w']['top1']:.1%} | {r['floor_8da4w']['identical_prefix']} | |")
        lines.append(f"| {name} | weight-only twin vs itself perturbed (no activation quant) | "
                     f"{r['floor_weight_only']['top1']:.1%} | "
                     f"{r['floor_weight_only']['identical_prefix']} | |")
        if "pte_vs_8da4w" in r:
            p = r["pte_vs_8da4w"]
            lines.append(f"| {name} | .pte (ExecuTorch, XNNPACK) vs eager 8da4w | {p['top1']:.1%} | "
                         f"{p['identical_prefix']} | {p['max_abs_logit_diff']:.3f} |")
        s = r["shallow"]
        lines.append(f"| {name} | first {s['layers']} layers: .pte vs eager 8da4w, {s['positions']} "
                     f"positions step by step | {s['top1']:.1%} | | {s['max_abs_logit_diff']:.2e} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "pte_noise_floor.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
