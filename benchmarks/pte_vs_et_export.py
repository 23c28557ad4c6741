"""Our `nano export pte` against ExecuTorch's own LLM export of the same weights.

The peer is ExecuTorch's `examples.models.llama.export_llama` (executorch 1.5.1) run on
SmolLM2-135M-Instruct with exactly the weights of `load_model("smollm2-135m-instruct")`:
KV cache, `--use_sdpa_with_kv_cache` (llama::custom_sdpa), XNNPACK (`-X`),
`-qmode 8da4w -G 32`, `-d fp32`, max_seq_length = max_context_length = ours (1024).
Offline: no hub download; export_llama takes a Meta-layout checkpoint, which
`et_checkpoint` writes from our reference (q/k rows permuted from the half-split RoPE
layout to Meta's interleaved one, ET's own smollm2 recipe layout, use_hf_rope false).
ExecuTorch's loader reads only torch.save checkpoints (torch.load(mmap=True)), so the
checkpoint is a .pth that this script writes itself (never one from elsewhere).

Stages:
  export   write the checkpoint + params and run export_llama (nice -n 10 advised)
  ops      plan histogram of each .pte (instructions outside the XNNPACK delegate)
  speed    ExecuTorch's TextLLMRunner (its C++ runner through the Python binding) at
           N threads, a 128-token prompt and 64 new tokens, each run a fresh process,
           the .pte files interleaved; prefill and decode tok/s from the runner's stats
Writes benchmarks/results/pte_vs_et_export.md (and .json).

    python benchmarks/pte_vs_et_export.py --stages export,ops,speed \
        --pte ours=~/.cache/nano_runtime/export-bench-sdpa/smollm2-135m-instruct-pte
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
CACHE = os.path.expanduser("~/.cache/nano_runtime/et-export")
MODEL = "smollm2-135m-instruct"
MAX_SEQ = 1024
PROMPT = ("The history of the Roman Empire begins with the founding of the city of Rome, "
          "and over many centuries the small settlement on the Tiber grew into a power that "
          "ruled the Mediterranean world. ")


def meta_permute(w, n_heads):
    """HF (half-split RoPE) q/k rows [n_heads*hd, dim] -> Meta's interleaved layout."""
    out, dim = w.shape
    return w.view(n_heads, 2, out // n_heads // 2, dim).transpose(1, 2).reshape(out, dim)


def et_checkpoint(out_dir):
    """Meta-named state dict + params.json of our SmolLM2 reference, for export_llama."""
    import torch
    from nano_runtime.loader import load_model
    lm = load_model(MODEL)
    c = lm.config
    sd = lm.model.state_dict()
    meta = {"tok_embeddings.weight": sd["embed.weight"], "norm.weight": sd["norm.weight"],
            "output.weight": sd["embed.weight"]}
    names = {"attn_norm": "attention_norm", "mlp_norm": "ffn_norm", "attn.wq": "attention.wq",
             "attn.wk": "attention.wk", "attn.wv": "attention.wv", "attn.wo": "attention.wo",
             "mlp.w_gate": "feed_forward.w1", "mlp.w_down": "feed_forward.w2",
             "mlp.w_up": "feed_forward.w3"}
    for i in range(c.n_layers):
        for ours, theirs in names.items():
            w = sd[f"layers.{i}.{ours}.weight"]
            if ours == "attn.wq":
                w = meta_permute(w, c.n_heads)
            elif ours == "attn.wk":
                w = meta_permute(w, c.n_kv_heads)
            meta[f"layers.{i}.{theirs}.weight"] = w.contiguous()
    params = {"dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads,
              "n_kv_heads": c.n_kv_heads, "hidden_dim": c.hidden_dim, "vocab_size": c.vocab_size,
              "norm_eps": float(c.norm_eps), "rope_theta": float(c.rope_theta),
              "use_scaled_rope": False, "use_hf_rope": False, "ffn_dim_multiplier": 1}
    os.makedirs(out_dir, exist_ok=True)
    ckpt = os.path.join(out_dir, "smollm2_meta.pth")
    torch.save(meta, ckpt + ".tmp")
    os.replace(ckpt + ".tmp", ckpt)
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(params, f, indent=1)
    lm.tokenizer.save(out_dir)     # tokenizer.json beside the .pte, as for ours
    return ckpt, os.path.join(out_dir, "params.json"), lm


def et_export(out_dir, extra=()):
    """Run ExecuTorch's export_llama; returns (seconds, the command)."""
    ckpt, params, lm = et_checkpoint(out_dir)
    from nano_runtime.export.metadata import export_metadata
    m = export_metadata(lm.config, lm.tokenizer, MAX_SEQ)
    md = json.dumps({"get_bos_id": m["get_bos_id"], "get_eos_ids": m["get_eos_ids"]})
    cmd = [sys.executable, "-m", "executorch.examples.models.llama.export_llama",
           "--model", "smollm2", "--checkpoint", ckpt, "--params", params,
           "-kv", "--use_sdpa_with_kv_cache", "-X", "-qmode", "8da4w", "-G", "32",
           "-d", "fp32", "--max_seq_length", str(MAX_SEQ), "--max_context_length", str(MAX_SEQ),
           "--metadata", md, "--output-dir", out_dir, "--output_name", "model.pte", *extra]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True)
    with open(os.path.join(out_dir, "export_llama.log"), "w") as f:
        f.write(" ".join(cmd) + "\n\n" + r.stdout + "\n" + r.stderr)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"export_llama failed (rc {r.returncode}):\n{tail}")
    return time.time() - t0, cmd


def op_histogram(pte):
    from nano_runtime.export.pte import plan_op_counts
    return plan_op_counts(os.path.join(pte, "model.pte"))


# ------------------------------------------------------------------ speed (worker)
def worker(pte, threads, gen, n_prompt=128):
    """One fresh process: load the runner, one warm-up, one timed generation -> JSON line."""
    from nano_runtime.export import runtimes as R
    from nano_runtime.tokenizer import Tokenizer
    tok = Tokenizer.load(pte)
    ids = tok.encode(PROMPT * 8)[:n_prompt]
    prompt = tok.decode(ids)
    _, _, runner = R.pte_llm_generate(pte, prompt, 4, threads=threads)
    pieces, st, _ = R.pte_llm_generate(pte, prompt, gen, threads=threads, runner=runner)
    npt, ngen = st.num_prompt_tokens, st.num_generated_tokens
    prefill_s = (st.prompt_eval_end_ms - st.inference_start_ms) / 1e3
    decode_s = (st.inference_end_ms - st.prompt_eval_end_ms) / 1e3
    print(json.dumps({"prompt_tokens": npt, "generated": ngen,
                      "prefill_tok_s": npt / prefill_s,
                      # the runner's own definition (its printed "Generated N tokens" rate)
                      "decode_tok_s": ngen / decode_s}))


def worker_cpu(pte, gen, n_prompt=128):
    """One fresh process, 1 thread, forward() through ExecuTorch's runtime, timed in CPU
    seconds of this process: on a shared machine the wall clock counts the time other
    processes hold the core, the process's CPU time does not."""
    from nano_runtime.export import runtimes as R
    from nano_runtime.tokenizer import Tokenizer
    tok = Tokenizer.load(pte)
    ids = tok.encode(PROMPT * 8)[:n_prompt]
    m = R.PteModule(pte, threads=1)
    m.step(ids[:8], 0)                                   # warm-up (XNNPACK setup)
    prefill, decode = R.time_prefill_decode(m, ids, gen, time.process_time)
    print(json.dumps({"prompt_tokens": len(ids), "generated": gen,
                      "prefill_tok_s": prefill, "decode_tok_s": decode}))


def speed(ptes, threads, reps, gen, n_prompt=128):
    samples = {name: [] for name in ptes}
    for rep in range(reps):
        for name, pte in ptes.items():       # interleaved: ours, theirs, ours, theirs, ...
            r = subprocess.run([sys.executable, __file__, "--worker", pte, "--threads",
                                str(threads), "--gen", str(gen), "--prompt-tokens",
                                str(n_prompt)], capture_output=True, text=True)
            line = [l for l in r.stdout.splitlines() if l.startswith("{")]
            if r.returncode != 0 or not line:
                raise SystemExit(f"worker {name} failed:\n{r.stderr[-2000:]}")
            s = json.loads(line[-1])
            samples[name].append(s)
            print(f"  rep {rep} {name}: prefill {s['prefill_tok_s']:.1f} tok/s "
                  f"({s['prompt_tokens']} tok), decode {s['decode_tok_s']:.1f} tok/s", flush=True)
    return samples


def summarize(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def markdown(res):
    L = ["# Our `.pte` vs ExecuTorch's own export_llama (SmolLM2-135M-Instruct, same weights)",
         "", f"Machine: {res.get('machine', '?')} (AMD Zen 3, AVX2), shared. 128-token prompt, "
         f"{res.get('gen')} new tokens, {res.get('reps')} fresh processes per .pte, "
         "interleaved (median, min-max)." + (f" Load average: {res['load_avg_at_runner_speed']}."
                                              if "load_avg_at_runner_speed" in res else ""), ""]
    for d, e in res.get("et_exports", {}).items():
        L += [f"ExecuTorch export ({os.path.basename(d)}): `{' '.join(os.path.basename(a) if a.startswith('/') else a for a in e['cmd'][2:])}` "
              f"({e['seconds'] / 60:.0f} min on the shared machine).", ""]
    if "ops" in res:
        L += ["## Plan (instructions of `forward`; DELEGATE = XNNPACK calls)", "",
              "| .pte | instructions | delegate calls | outside the delegate (op: count) |",
              "|---|---|---|---|"]
        for name, h in res["ops"].items():
            other = ", ".join(f"{k.split('::')[-1]}: {v}" for k, v in
                              sorted(h.items(), key=lambda kv: -kv[1]) if k != "DELEGATE")
            L.append(f"| {name} | {sum(h.values())} | {h.get('DELEGATE', 0)} | {other} |")
        L.append("")
    for key, title in (("speed", f"## Speed: ExecuTorch's TextLLMRunner, {res.get('threads_runner', 2)} "
                                 "threads, wall clock (runner stats)"),
                       ("speed_cpu1", "## Speed: forward() at 1 thread, process CPU time "
                                      "(robust to other load on the machine)")):
        if key not in res:
            continue
        L += [title, "", "| .pte | size MiB | prefill(128) tok/s | decode tok/s |",
              "|---|---|---|---|"]
        for name, s in res[key].items():
            p = summarize([x["prefill_tok_s"] for x in s])
            d = summarize([x["decode_tok_s"] for x in s])
            L.append(f"| {name} | {res['sizes'][name] / 2**20:.1f} | {p['median']:.1f} "
                     f"({p['min']:.1f}-{p['max']:.1f}) | {d['median']:.1f} "
                     f"({d['min']:.1f}-{d['max']:.1f}) |")
        L.append("")
    if res.get("notes"):
        L += ["## Findings", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="ops,speed")
    ap.add_argument("--pte", action="append", default=[],
                    help="NAME=FOLDER of a .pte to compare (repeatable)")
    ap.add_argument("--et-dir", default=os.path.join(CACHE, f"{MODEL}-pte"))
    ap.add_argument("--et-flags", default="--xnnpack-extended-ops",
                    help="extra export_llama flags (default --xnnpack-extended-ops: the whole "
                         "graph to XNNPACK, as ExecuTorch's llama README exports; without it "
                         "-X takes only the quantized linears)")
    ap.add_argument("--threads", type=int, default=2,
                    help="runner threads; 0 = 1 thread timed in process CPU seconds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(RESULTS, "pte_vs_et_export"))
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker and args.threads == 0:
        return worker_cpu(args.worker, args.gen, args.prompt_tokens)
    if args.worker:
        return worker(args.worker, args.threads, args.gen, args.prompt_tokens)
    stages = args.stages.split(",")
    res = {}
    if os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            res = json.load(f)
    import platform
    res.update(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
               reps=args.reps, gen=args.gen)
    if args.threads:
        res["threads_runner"] = args.threads
    if "export" in stages:
        sec, cmd = et_export(args.et_dir, args.et_flags.split())
        res.setdefault("et_exports", {})[args.et_dir] = {"seconds": sec, "cmd": cmd}
    ptes = dict(p.split("=", 1) for p in args.pte)
    ptes = {k: os.path.expanduser(v) for k, v in ptes.items()}
    res.setdefault("sizes", {}).update(
        {k: os.path.getsize(os.path.join(v, "model.pte")) for k, v in ptes.items()})
    if "ops" in stages:
        res.setdefault("ops", {}).update({k: op_histogram(v) for k, v in ptes.items()})
    if "speed" in stages:
        res["speed" if args.threads else "speed_cpu1"] = speed(ptes, args.threads, args.reps, args.gen, args.prompt_tokens)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(args.out + ".md", "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
