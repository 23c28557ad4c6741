"""Native engine vs llama.cpp (llama-cpp-python): prefill, decode, TTFT, peak RSS; memory.

    python benchmarks/bench_engine.py [--models smollm2-135m-instruct,gemma3-270m,nano-1,nano-2]
        [--threads 1,2] [--repeats 3] [--decode-tokens 64] [--out benchmarks/results]

Every measurement runs in a fresh process (clean peak RSS); runtimes, models and thread
counts are interleaved inside each repeat; medians and best are reported. Models:
the real GGUFs for SmolLM2-135M (Q4_1) and Gemma 3 270M (Q4_K_M) on llama.cpp, their exact
.nano conversions on the engine; nano-1 / nano-2 with random weights: RTN int4 g32 .nano on
the engine, a Q4_0 GGUF (random blocks, Q8_0 embeddings, written with the gguf package)
on llama.cpp. Peers from other engineers (ExecuTorch, ORT GenAI) plug in through PEERS.
Also: the memory section (nano-1 decoding at 2,048 context vs file + KV + 100 MB; the
low/high profiles). Writes engine.md, engine.json and engine.png to --out.
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

from nano_runtime.commands.bench import run_worker  # noqa: E402

CACHE = os.environ.get("NANO_CACHE") or os.path.expanduser("~/.cache/nano_runtime")


# ----------------------------------------------------------------------------- llama.cpp
def measure_llama(path: str, threads: int, prompt_lens=(128, 512), n_decode: int = 64,
                  n_ctx: int = 0) -> dict:
    import llama_cpp
    import numpy as np
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx or max(max(prompt_lens) + n_decode + 8, 1024),
                          n_threads=threads, n_threads_batch=threads, n_batch=512,
                          verbose=False, logits_all=False)
    out = {"load_s": time.perf_counter() - t0, "threads": threads}
    V = llm.n_vocab()
    rng = np.random.RandomState(0)
    ids = {n: [int(x) for x in rng.randint(10, min(V, 30000), n)] for n in prompt_lens}
    llm.eval(ids[prompt_lens[0]][:8])
    for n in prompt_lens:
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids[n])
        out[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t)
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids[prompt_lens[0]])
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out["ttft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out["decode_tok_s"] = n_decode / (time.perf_counter() - t)
    from nano_runtime.engine import peak_rss_mb
    out["peak_rss_mb"] = peak_rss_mb()
    out["file_mb"] = os.path.getsize(path) / 2**20
    return out


def run_llama_worker(spec: dict) -> dict:
    code = ("import json,sys; sys.path.insert(0, %r); from benchmarks.bench_engine import "
            "measure_llama as m; a=json.loads(sys.argv[1]); print(json.dumps(m(**a)))" % ROOT)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def write_q4_0_gguf(card: str, out: str):
    """A llama-architecture GGUF of a config-only card with random Q4_0 blocks (Q8_0
    embeddings), with SmolLM2's tokenizer metadata: a speed/memory peer for nano-1/2."""
    import gguf
    import numpy as np

    from nano_runtime import cards
    from nano_runtime.config import ModelConfig
    cfg = ModelConfig.from_name(card)
    src = gguf.GGUFReader(cards.card_weights_path(cards.get_card("smollm2-135m-instruct")))
    tmp = out + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(2)  # MOSTLY_Q4_0
    for name, f in src.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            vals = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") if sub == gguf.GGUFValueType.STRING
                    else f.parts[i][0].item() for i in f.data]
            w.add_key_value(name, vals, vt, sub_type=sub)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(name, bytes(f.parts[f.data[0]]).decode("utf-8"), vt)
        else:
            w.add_key_value(name, f.parts[f.data[0]][0].item(), vt)
    rng = np.random.default_rng(0)
    Q = gguf.GGMLQuantizationType

    def q4_0(n, k):
        b = rng.integers(0, 256, size=(n, k // 32, 18), dtype=np.uint8)
        b[:, :, 0:2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
        return b.reshape(n, -1)

    def q8_0(n, k):
        b = rng.integers(-127, 128, size=(n, k // 32, 34), dtype=np.int16).astype(np.int8).view(np.uint8)
        b[:, :, 0:2] = np.frombuffer(np.float16(0.0002).tobytes(), np.uint8)
        return b.reshape(n, -1)
    w.add_tensor("token_embd.weight", q8_0(cfg.vocab_size, cfg.dim), raw_dtype=Q.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(cfg.dim, np.float32))
    qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(cfg.dim, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(cfg.dim, np.float32))
        for nm, n, k in (("attn_q", qd, cfg.dim), ("attn_k", kvd, cfg.dim), ("attn_v", kvd, cfg.dim),
                         ("attn_output", cfg.dim, qd), ("ffn_gate", cfg.hidden_dim, cfg.dim),
                         ("ffn_up", cfg.hidden_dim, cfg.dim), ("ffn_down", cfg.dim, cfg.hidden_dim)):
            w.add_tensor(p + nm + ".weight", q4_0(n, k), raw_dtype=Q.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    os.replace(tmp, out)


def gguf_for(model: str) -> str:
    from nano_runtime import cards
    card = cards.get_card(model)
    if "source" in card:
        return cards.card_weights_path(card)
    out = os.path.join(CACHE, f"{model}-random-q4_0.gguf")
    if not os.path.exists(out):
        print(f"writing {out}", file=sys.stderr)
        write_q4_0_gguf(model, out)
    return out


# ----------------------------------------------------------------------------- main
PEERS = {}  # name -> callable(model, threads, prompt_lens, n_decode) -> dict (export engineer)
COLS = ["prefill128_tok_s", "prefill512_tok_s", "decode_tok_s", "ttft_s", "peak_rss_mb"]


def med_best(rows, key):
    vals = [r[key] for r in rows if r and key in r]
    if not vals:
        return None, None
    low = key in ("ttft_s", "peak_rss_mb")
    return statistics.median(vals), (min(vals) if low else max(vals))


def memory_section(threads: int) -> list:
    """nano-1 at 2,048 context; profiles low/high on nano-1/nano-2."""
    from nano_runtime.engine import resolve_nano
    rows = []
    n1 = resolve_nano("nano-1", show_progress=False)
    r = run_worker({"path": n1, "threads": threads, "prompt_lens": [128], "n_decode": 16,
                    "n_ctx": 2048})
    bound = r["file_mb"] + r["kv_mb"] + 100
    rows.append(("nano-1 decode, ctx 2048 (f16 KV)", f"{r['peak_rss_mb']:.0f} MB",
                 f"<= file {r['file_mb']:.0f} + KV {r['kv_mb']:.0f} + 100 = {bound:.0f} MB",
                 "met" if r["peak_rss_mb"] <= bound else "missed"))
    for model, prof in (("nano-1", "low"), ("nano-2", "high"), ("nano-2", "low")):
        code = ("import sys,json; sys.path.insert(0,%r)\nfrom nano_runtime.engine import Engine, "
                "resolve_nano\ntry:\n e=Engine(resolve_nano(%r, show_progress=False), threads=%d, "
                "profile=%r, tokenizer=False)\n e.eval([1,2,3,4]); print(json.dumps({'ok':1,'plan':e.plan}))\n"
                "except Exception as x: print(json.dumps({'ok':0,'err':str(x)}))"
                % (ROOT, model, threads, prof))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if res["ok"]:
            p = res["plan"]
            rows.append((f"{model} --profile {prof}", "runs",
                         f"ctx {p['n_ctx']}, KV {p['kv_type']}, plan {p['total_bytes'] / 2**20:.0f} MB "
                         f"of {p['budget_bytes'] / 2**20:.0f} MB", "ok"))
        else:
            rows.append((f"{model} --profile {prof}", "refused", res["err"], "ok"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m,nano-1,nano-2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--big-repeats", type=int, default=1, help="repeats for nano-1/nano-2")
    ap.add_argument("--big-decode-tokens", type=int, default=16)
    ap.add_argument("--big-prompt-lens", default="128,512", help="prompt lengths for nano-1/nano-2")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    a = ap.parse_args()
    from nano_runtime.engine import resolve_nano
    if a.memory_only:
        md = ["## Memory", "", "| check | measured | bound / detail | goal |", "|---|---|---|---|"]
        md += [f"| {a_} | {b_} | {c_} | {d_} |" for a_, b_, c_, d_ in memory_section(1)]
        print("\n".join(md))
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "engine_memory.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        return
    models = a.models.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    nano_paths = {m: resolve_nano(m) for m in models}
    gguf_paths = {m: gguf_for(m) for m in models}
    res = {}
    big = {"nano-1", "nano-2"}
    for rep in range(max(a.repeats, a.big_repeats)):
        for m in models:
            if rep >= (a.big_repeats if m in big else a.repeats):
                continue
            nd = a.big_decode_tokens if m in big else a.decode_tokens
            for t in threads:
                order = [("nano", None), ("llama.cpp", None)]
                if rep % 2:
                    order.reverse()               # alternate who goes first
                for rt, _ in order:
                    lens = [int(x) for x in a.big_prompt_lens.split(",")] if m in big else [128, 512]
                    spec = {"threads": t, "prompt_lens": lens, "n_decode": nd}
                    try:
                        r = (run_worker(dict(spec, path=nano_paths[m])) if rt == "nano"
                             else run_llama_worker(dict(spec, path=gguf_paths[m])))
                    except Exception as e:  # report, keep going
                        print(f"{rt} {m} t={t}: {str(e)[-300:]}", file=sys.stderr)
                        r = None
                    res.setdefault((m, t, rt), []).append(r)
                    print(f"rep {rep} {m} t={t} {rt}: " + (json.dumps({k: round(v, 2) for k, v in r.items()
                          if isinstance(v, float)}) if r else "failed"), file=sys.stderr)
                for name, fn in PEERS.items():
                    res.setdefault((m, t, name), []).append(fn(m, t, [128, 512], nd))
    lines = ["| model | threads | runtime | prefill 128 tok/s | prefill 512 tok/s | decode tok/s "
             "| TTFT (128) s | peak RSS MB | runs |", "|---|---|---|---|---|---|---|---|---|"]
    for (m, t, rt), rows in res.items():
        cells = []
        for c in COLS:
            md, b = med_best(rows, c)
            cells.append("-" if md is None else (f"{md:.3g} / {b:.3g}" if c != "peak_rss_mb" else f"{md:.0f}"))
        lines.append(f"| {m} | {t} | {rt} | " + " | ".join(cells) + f" | {sum(r is not None for r in rows)} |")
    ratio = ["", "| model | threads | prefill 128 nano/llama.cpp | prefill 512 | decode |", "|---|---|---|---|---|"]
    for m in models:
        for t in threads:
            a_, b_ = res.get((m, t, "nano"), []), res.get((m, t, "llama.cpp"), [])
            cells = []
            for c in ("prefill128_tok_s", "prefill512_tok_s", "decode_tok_s"):
                x, y = med_best(a_, c)[0], med_best(b_, c)[0]
                cells.append(f"{x / y:.2f}x" if x and y else "-")
            ratio.append(f"| {m} | {t} | " + " | ".join(cells) + " |")
    md = ["# Native engine vs llama.cpp", "", "cells: median / best over interleaved runs "
          "(fresh process each)", ""] + lines + ratio
    if not a.no_memory:
        md += ["", "## Memory", "", "| check | measured | bound / detail | goal |", "|---|---|---|---|"]
        md += [f"| {a_} | {b_} | {c_} | {d_} |" for a_, b_, c_, d_ in memory_section(threads[0])]
    text = "\n".join(md)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "engine.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "engine.json"), "w") as f:
        json.dump([{"model": m, "threads": t, "runtime": rt, "runs": rows}
                   for (m, t, rt), rows in res.items()], f, indent=1)
    plot(res, models, threads, os.path.join(a.out, "engine.png"))


def plot(res, models, threads, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    runtimes = sorted({rt for (_, _, rt) in res})
    labels = [f"{m}\nt={t}" for m in models for t in threads]
    for ax, c in zip(axes, ("prefill128_tok_s", "prefill512_tok_s", "decode_tok_s")):
        w = 0.8 / max(len(runtimes), 1)
        for i, rt in enumerate(runtimes):
            vals = [med_best(res.get((m, t, rt), []), c)[0] or 0 for m in models for t in threads]
            ax.bar([j + i * w for j in range(len(labels))], vals, w, label=rt)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(c + " (median)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
