"""Exported artifacts in their own runtimes: correctness against the reference, size, speed, ppl.

For each model (default: smollm2-135m-instruct gemma3-270m) this exports (or reuses,
--artifacts DIR) the ExecuTorch .pte and the ONNX Runtime GenAI folder, then:

1. Greedy agreement, 5 prompts x 32 tokens, each artifact against "the reference
   running the same quantization" (see correctness() for how one reference forward
   checks a whole greedy continuation):
     .pte  vs the quantized eager PteDecoder (same torchao 8da4w/8da8w/int8 weights,
           activations fake-quantized in PyTorch, int8 GEMMs in XNNPACK);
     onnx  vs the reference Transformer holding the folder's int4 weights (weight-only;
           ORT's MatMulNBits also quantizes activations to int8, accuracy_level 4).
   Both artifacts quantize activations, so identical tokens are not guaranteed; the
   criterion that applies is teacher-forced top-1 agreement >= 95% (all 5 prompts,
   every position), and identical greedy tokens are reported alongside.
   The .pte is also run through ExecuTorch's own LLM runner (TextLLMRunner: its
   tokenizer, prefill, sampler); its tokens' text is compared with the checked
   continuation of the same program.
2. File size, load time, prefill and decode tok/s at 1 and 2 threads, runtimes
   interleaved, --reps repetitions, medians.
3. Perplexity on nano_runtime.data.english_text("eval"), ctx 512, --windows windows:
   fp32 reference, each same-quantization reference, each artifact.

Writes benchmarks/results/export_bench.json, export_bench.md and export_bench.png.
Run: nice -n 10 python benchmarks/bench_export.py [MODEL ...] [--reps 3] [--windows 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
warnings.filterwarnings("ignore")

from nano_runtime.data import english_text  # noqa: E402
from nano_runtime.evaluate import nll_of_window, ppl_windows  # noqa: E402
from nano_runtime.export import runtimes as R  # noqa: E402
from nano_runtime.export.metadata import ONNX_SCHEME, PTE_SCHEME, ExportOptions  # noqa: E402
from nano_runtime.loader import load_model  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
]
RESULTS = os.path.join(HERE, "results")


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))


def artifact_bytes(d, kind):
    if kind == "pte":
        return os.path.getsize(os.path.join(d, "model.pte"))
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if f.startswith("model.onnx"))


def ensure_artifacts(lm, root, opts, name, no_export=False):
    from nano_runtime.export.onnx_genai import export_onnx
    from nano_runtime.export.pte import export_pte
    out, times = {}, {}
    for kind, fn in (("pte", export_pte), ("onnx", export_onnx)):
        d = os.path.join(root, f"{name}-{kind}")
        if not os.path.isdir(d):
            if no_export:
                continue
            t0 = time.perf_counter()
            fn(lm, d, opts)
            times[kind] = time.perf_counter() - t0
        out[kind] = d
    return out, times


def prompt_ids(tok, text):
    return tok.encode(text)


def references(lm, arts, opts):
    """Full-sequence logits fns [T] -> [T, V] of the same-quantization references."""
    from nano_runtime.export.pte import build_quantized_decoder
    refs = {}
    if "onnx" in arts:
        m = R.onnx_reference(lm, arts["onnx"], opts.max_seq_len).module
        m.clear_cache()
        refs["onnx"] = lambda ids: m(torch.tensor([ids]))[0].float().numpy()
    if "pte" in arts:
        from nano_runtime.export.pte import weight_only_twin
        q = build_quantized_decoder(lm.model, opts)
        refs["pte"] = lambda ids: q.all_logits(torch.tensor([ids]))[0].float().numpy()
        w = weight_only_twin(q)      # same weights, fp32 activations (as the ONNX reference)
        refs["pte_weight_only"] = lambda ids: w.all_logits(torch.tensor([ids]))[0].float().numpy()
    return refs


def correctness(lm, arts, refs, n_tokens=32):
    """Greedy continuations of each artifact checked against its reference.

    The artifact generates greedily; one reference forward over prompt + continuation
    gives the reference's next-token choice at every step given the same prefix. The
    continuations are identical for the first k tokens exactly when the reference's
    choices equal the artifact's tokens for the first k steps (the reference's own
    greedy run would take the same prefix). Teacher-forced top-1 agreement compares
    the argmax of both at every position of that sequence.
    """
    tok = lm.tokenizer
    res = {}
    runs = []
    if "onnx" in arts:
        g = R.GenaiModel(arts["onnx"], threads=2)
        runs.append(("onnx", g, lambda seq, n: g.all_logits(seq)[n - 1:-1]))
    if "pte" in arts:
        pm = R.PteModule(arts["pte"], threads=2)
        runs.append(("pte", pm, lambda seq, n: R.teacher_forced_logits(pm, seq, n)[:-1]))
    greedy_ids = {}
    for kind, art, tf in runs:
        rows = []
        with torch.no_grad():
            for p in PROMPTS:
                ids = prompt_ids(tok, p)
                aa = R.greedy(art, ids, n_tokens)
                seq = ids + aa
                lr = refs[kind](seq)[len(ids) - 1:-1]          # [n_tokens, V]
                la = tf(seq, len(ids))
                row = {"prompt": p, "prompt_tokens": len(ids),
                       "identical_prefix": R.first_divergence(
                           [int(t) for t in lr.argmax(-1)], aa),
                       "top1": float((la.argmax(-1) == lr.argmax(-1)).mean()),
                       "max_abs_logit_diff": float(np.abs(la - lr).max()),
                       "artifact_text": tok.decode(aa)}
                if kind + "_weight_only" in refs:
                    lw = refs[kind + "_weight_only"](seq)[len(ids) - 1:-1]
                    row["weight_only"] = {
                        "identical_prefix": R.first_divergence([int(t) for t in lw.argmax(-1)], aa),
                        "top1": float((la.argmax(-1) == lw.argmax(-1)).mean()),
                        "max_abs_logit_diff": float(np.abs(la - lw).max())}
                rows.append(row)
                greedy_ids[(kind, p)] = aa
        res[kind] = rows
    if "onnx" in arts:
        # ORT GenAI's tokenizer never adds BOS (docs/ANDROID.md): compare the rest
        res["onnx_tokenizer_matches_after_bos"] = all(
            [int(i) for i in g.tokenizer.encode(p)] == tok.encode(p, add_bos=False)
            for p in PROMPTS)
    if "pte" not in arts:
        return res
    # ---- the .pte through ExecuTorch's own LLM runner: its tokenizer, prefill, sampler
    runner, rows = None, []
    bos = tok.hf.id_to_token(tok.bos_id) if tok.add_bos and tok.bos_id is not None else ""
    for p in PROMPTS:
        pieces, st, runner = R.pte_llm_generate(arts["pte"], p, n_tokens, threads=2,
                                                runner=runner, bos_text=bos)
        want = [tok.decode([t]) for t in greedy_ids[("pte", p)]]
        same = R.first_divergence(pieces, want)
        rows.append({"prompt": p, "runner_tokens": len(pieces), "identical_prefix": same,
                     "runner_text": "".join(pieces),
                     "same_text": "".join(pieces) == tok.decode(greedy_ids[("pte", p)]),
                     "prompt_tokens_runner": st.num_prompt_tokens if st else None})
    res["pte_llm_runner"] = rows
    return res


def speed(arts, tok, threads_list, reps, prompt_len=128, gen=64):
    """Interleaved timings: load s, prefill tok/s, decode tok/s per (runtime, threads)."""
    text = english_text("eval")
    ids = tok.encode(text)[:prompt_len]
    samples = {"_load_avg_at_start": os.getloadavg()[0]}
    for rep in range(reps):
        for th in threads_list:
            for kind in [k for k in ("pte", "onnx") if k in arts]:
                key = f"{kind}@{th}"
                s = samples.setdefault(key, {"load_s": [], "prefill_tok_s": [], "decode_tok_s": []})
                if kind == "pte":
                    m = R.PteModule(arts["pte"], threads=th)
                else:
                    m = R.GenaiModel(arts["onnx"], threads=th)
                s["load_s"].append(m.load_s)
                m.reset()
                prefill, decode = R.time_prefill_decode(m, ids, gen, time.perf_counter)
                s["prefill_tok_s"].append(prefill)
                s["decode_tok_s"].append(decode)
                del m
    return {k: (d if k.startswith("_") else
                {m: statistics.median(v) for m, v in d.items()} | {"n": reps})
            for k, d in samples.items()}


def perplexities(lm, arts, refs, windows, ctx=512):
    tok = lm.tokenizer
    ids = tok.encode(english_text("eval"), add_bos=False)
    wins = ppl_windows(ids, ctx, tok.bos_id if tok.add_bos else None)[:windows]

    def ppl(fn):
        tot, n = 0.0, 0
        for w in wins:
            nll = nll_of_window(fn(w), w)
            tot += float(nll.sum())
            n += len(nll)
        return {"ppl": float(np.exp(tot / n)), "tokens": n}

    def stepwise(r):
        return lambda w: R.teacher_forced_logits(r, w, 1)

    out = {}
    with torch.no_grad():
        out["reference_fp32"] = ppl(lambda w: lm.model(torch.tensor([w]))[0].float().numpy())
        if "onnx" in refs:
            out["reference_onnx_quant"] = ppl(refs["onnx"])
        if "pte" in refs:
            out["reference_pte_quant"] = ppl(refs["pte"])
        if "pte_weight_only" in refs:
            out["reference_pte_weight_only"] = ppl(refs["pte_weight_only"])
    if "onnx" in arts:
        g = R.GenaiModel(arts["onnx"], threads=2)
        out["onnx_genai"] = ppl(g.all_logits)
        del g
    if "pte" in arts:
        out["pte_executorch"] = ppl(stepwise(R.PteModule(arts["pte"], threads=2)))
    return out


def larger_sample_note():
    """The Gemma .pte's agreement on pte_gemma_sdpa.py's larger sample, next to the floor."""
    path = os.path.join(RESULTS, "pte_gemma_sdpa.json")
    f = json.load(open(path)).get("full") if os.path.exists(path) else None
    if not f:
        return []
    v = f["variants"]
    ptes = [k for k in v if k.startswith(".pte")]
    floors = [v[k]["top1"] for k in v if k.startswith("floor")]
    step = v.get("eager reference, prefill + one token per call")
    if not ptes or not floors:
        return []
    fl = f"{min(floors):.1%}" + (f"-{max(floors):.1%}" if max(floors) > min(floors) else "")
    return ["", f"A larger sample for {f['model']} (`pte_gemma_sdpa.md`): {len(f['prompts'])} "
            f"prompts x {f['tokens']} = {f['positions']} positions, teacher-forced on the eager "
            "reference's own continuations (the table above uses each artifact's): " +
            "; ".join(f"{k} {v[k]['top1']:.1%} (on the first 5 prompts, the ones above: "
                      f"{np.mean(v[k]['per_prompt_top1'][:5]):.1%})" for k in ptes) +
            f"; the eager reference against itself perturbed by 1e-6: {fl}" +
            (f", called token by token: {step['top1']:.1%}" if step else "") + "."]


def markdown(all_res):
    lines = ["# Exported artifacts (ExecuTorch .pte, ONNX Runtime GenAI)", "",
             f"- .pte: {PTE_SCHEME}", f"- onnx: {ONNX_SCHEME}", "",
             "## Agreement with the reference running the same quantization "
             "(5 prompts x 32 greedy tokens)", "",
             "| model | artifact | identical greedy tokens per prompt | all 32 identical | "
             "teacher-forced top-1 | max abs logit diff |", "|---|---|---|---|---|---|"]
    for name, r in all_res.items():
        c = r.get("correctness", {})
        for kind in [k for k in ("pte", "onnx") if k in c]:
            rows = c[kind]
            pref = [x["identical_prefix"] for x in rows]
            top1 = float(np.mean([x["top1"] for x in rows]))
            label = {"pte": "pte vs eager torchao 8da4w (fake-quant activations)",
                     "onnx": "onnx vs weight-only int4 reference"}[kind]
            lines.append(f"| {name} | {label} | {pref} | {sum(p == 32 for p in pref)}/5 | "
                         f"{top1:.1%} | {max(x['max_abs_logit_diff'] for x in rows):.3f} |")
            if all("weight_only" in x for x in rows):
                wo = [x["weight_only"] for x in rows]
                pref = [x["identical_prefix"] for x in wo]
                lines.append(f"| {name} | pte vs weight-only reference (same int4/int8 weights) | "
                             f"{pref} | {sum(p == 32 for p in pref)}/5 | "
                             f"{float(np.mean([x['top1'] for x in wo])):.1%} | "
                             f"{max(x['max_abs_logit_diff'] for x in wo):.3f} |")
        if "pte_llm_runner" not in c:
            continue
        pref = [x["identical_prefix"] for x in c["pte_llm_runner"]]
        lines.append(f"| {name} | pte via ExecuTorch LLM runner (text) | {pref} | "
                     f"{sum(p == 32 for p in pref)}/5 | | |")
    lines += larger_sample_note()
    if not any(k for r in all_res.values() for k in r.get("speed", {}) if not k.startswith("_")):
        lines += ["", "## Size, load, speed", "",
                  "Not in this file's last run (`--stages` without speed). The artifacts' speeds, "
                  "measured in the same run as our engine, llama.cpp and the other runtime, are in "
                  "the engine benchmark (`bench_engine.py`, `results/engine_s5/engine.md`). Sizes: " +
                  "; ".join(f"{n} {k} {v / 2**20:.1f} MiB" for n, r in all_res.items()
                            for k, v in r.get("size_bytes", {}).items()) + "."]
    else:
        lines += ["", "## Size, load, speed (medians of interleaved runs; prefill 128 tokens, "
                  "decode 64)", "",
                  "Timed on the shared 2-core build machine at nice 10 (1-minute load average "
                  "when each model's runs started: " + ", ".join(
                      f"{n} {r['speed']['_load_avg_at_start']:.1f}" for n, r in all_res.items()
                      if "_load_avg_at_start" in r.get("speed", {})) +
                  "): the speeds are lower bounds, not phone figures.", "",
                  "| model | artifact | size MiB | threads | load s | prefill tok/s | decode tok/s |",
                  "|---|---|---|---|---|---|---|"]
    for name, r in all_res.items():
        for key, s in r.get("speed", {}).items():
            if key.startswith("_"):
                continue
            kind, th = key.split("@")
            lines.append(f"| {name} | {kind} | {r['size_bytes'][kind] / 2**20:.1f} | {th} | "
                         f"{s['load_s']:.3f} | {s['prefill_tok_s']:.1f} | {s['decode_tok_s']:.1f} |")
    lines += ["", "## Perplexity (english_text('eval'), ctx 512, first windows)", "",
              "| model | runtime | ppl | tokens |", "|---|---|---|---|"]
    for name, r in all_res.items():
        for k, v in r.get("ppl", {}).items():
            lines.append(f"| {name} | {k} | {v['ppl']:.3f} | {v['tokens']} |")
    return "\n".join(lines) + "\n"


def plot(all_res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("prefill_tok_s", "decode_tok_s")):
        labels, vals = [], []
        for name, r in all_res.items():
            for key, s in r.get("speed", {}).items():
                if key.startswith("_"):
                    continue
                labels.append(f"{name.split('-')[0]}\n{key}")
                vals.append(s[metric])
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)), labels, fontsize=7)
        ax.set_title(metric.replace("_", " "))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--artifacts", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                         "nano_runtime", "export-bench"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite export_bench.md/.png from export_bench.json")
    ap.add_argument("--no-export", action="store_true",
                    help="measure only the artifacts already in --artifacts")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--stages", default="correctness,speed,ppl",
                    help="which of correctness,speed,ppl to run (default: all)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--kinds", default="pte,onnx",
                    help="which artifacts to measure (default: pte,onnx); the other's "
                         "earlier results stay in export_bench.json")
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=512, help="perplexity window (default 512)")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    opts = ExportOptions(max_seq_len=args.max_seq_len)
    out_json = os.path.join(RESULTS, "export_bench.json")
    all_res = {}
    if os.path.exists(out_json):
        with open(out_json) as f:
            all_res = json.load(f).get("models", {})
    for name in ([] if args.report_only else args.models):
        lm = load_model(name)
        arts, export_s = ensure_artifacts(lm, args.artifacts, opts, name, args.no_export)
        arts = {k: d for k, d in arts.items() if k in args.kinds.split(",")}
        r = all_res.setdefault(name, {})    # merged: a later run may add the other artifact
        r.setdefault("export_s", {}).update(export_s)
        r.setdefault("size_bytes", {}).update({k: artifact_bytes(d, k) for k, d in arts.items()})
        r.setdefault("folder_bytes", {}).update({k: dir_bytes(d) for k, d in arts.items()})

        def save():   # after every stage, so an interrupted run keeps what it measured
            with open(out_json, "w") as f:
                json.dump({"schemes": {"pte": PTE_SCHEME, "onnx": ONNX_SCHEME},
                           "max_seq_len": args.max_seq_len, "models": all_res}, f, indent=1)
        stages = set(args.stages.split(","))
        print(f"[{name}] references", file=sys.stderr)
        refs = references(lm, arts, opts)
        if "correctness" in stages:
            print(f"[{name}] correctness", file=sys.stderr)
            r.setdefault("correctness", {}).update(correctness(lm, arts, refs))
            save()
        if "speed" in stages:
            print(f"[{name}] speed", file=sys.stderr)
            r.setdefault("speed", {}).update(
                speed(arts, lm.tokenizer, [int(t) for t in args.threads.split(",")], args.reps))
            save()
        if "ppl" in stages:
            print(f"[{name}] perplexity", file=sys.stderr)
            r.setdefault("ppl", {}).update(perplexities(lm, arts, refs, args.windows, args.ctx))
            save()
        del refs
    md = markdown(all_res)
    with open(os.path.join(RESULTS, "export_bench.md"), "w") as f:
        f.write(md)
    plot(all_res, os.path.join(RESULTS, "export_bench.png"))
    print(md)


if __name__ == "__main__":
    main()
