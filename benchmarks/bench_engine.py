"""Native engine vs llama.cpp, ExecuTorch and ONNX Runtime GenAI: load, prefill, decode, TTFT,
peak RSS, file size and perplexity; memory checks.

    python benchmarks/bench_engine.py [--models smollm2-135m-instruct,gemma3-270m,nano-1,nano-2]
        [--threads 1,2] [--repeats 3] [--peers native,llama,et,ort] [--artifacts DIR]
        [--decode-tokens 64] [--ppl-windows 3] [--out benchmarks/results]

Every measurement runs in a fresh process (clean peak RSS); runtimes (rotated: each goes
first in turn), models and thread counts are interleaved inside each repeat; medians and
best are reported. Runtimes (--peers):
  native  our engine on the .nano (exact conversions of the real GGUFs; RTN int4 g32 with
          random weights for nano-1 / nano-2);
  llama   llama.cpp (llama-cpp-python) on the real GGUFs (SmolLM2-135M Q4_1, Gemma 3 270M
          Q4_K_M) and on Q4_0 GGUFs with random blocks for nano-1 / nano-2 (gguf package);
  et      ExecuTorch: the 8da4w-g32 XNNPACK .pte in --artifacts/{model}-pte run by its own
          LLM runner (TextLLMRunner; text prompts of exactly 128 / 512 tokens; timed by the
          runner's Stats). `et-fwd` (opt-in) drives forward() from Python through
          executorch.runtime instead, as the runner does (whole prompt in one dynamic-shape
          call, then one token per call): it shows the Python binding's per-call overhead;
  ort     ONNX Runtime GenAI: the int4 folder --artifacts/{model}-onnx.
et / ort run on the two real models only. The perplexity section (--ppl-windows, once per
runtime, not per thread count) scores english_text("eval") at ctx 512 on the same windows:
`nano eval ppl --backend native`, llama.cpp with logits_all on its GGUF, the .pte and the
ONNX folder (bench_export.perplexities), plus the fp32 reference. Then the memory section
(nano-1 decoding at 2,048 context vs file + KV + 100 MB; the low/high profiles).
engine.json and engine.md are rewritten after every measurement (a killed run keeps what
it had; --report-only redraws from engine.json); engine.png at the end.
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


# ----------------------------------------------------------------------------- peers
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _random_prompts(V: int, prompt_lens) -> dict:
    import numpy as np
    rng = np.random.RandomState(0)           # the same ids as measure_native / measure_llama
    return {n: [int(x) for x in rng.randint(10, min(V, 30000), n)] for n in prompt_lens}


def measure_et(folder: str, threads: int, prompt_lens=(128, 512), n_decode: int = 64) -> dict:
    """The .pte through ExecuTorch's runtime, the way its LLM runner drives it.

    The export has enable_dynamic_shape and get_max_seq_len 1024, so the runner's
    prefiller feeds the whole prompt to forward(tokens [1, T], input_pos [1]) in one call
    (chunks of max_seq_len otherwise); decode is forward() with one token. Threads: the
    XNNPACK/extension threadpool, reset with portable_lib._unsafe_reset_threadpool.
    """
    import numpy as np
    from executorch.extension.pybindings import portable_lib

    from nano_runtime.engine import peak_rss_mb
    from nano_runtime.export import runtimes as R
    t0 = time.perf_counter()
    m = R.PteModule(folder, threads=threads)
    out = {"load_s": time.perf_counter() - t0, "threads": threads,
           "pool_threads": int(portable_lib._threadpool_get_thread_count())}
    ctx = int(m.meta.get("get_max_context_len", 0))
    if max(prompt_lens) + n_decode + 1 > ctx:
        raise RuntimeError(f"{folder}: context {ctx} < {max(prompt_lens)} + {n_decode} tokens")
    ids = _random_prompts(int(m.meta["get_vocab_size"]), prompt_lens)
    m.step(ids[prompt_lens[0]][:8], 0)                  # warm-up (page in, spin up threads)
    for n in prompt_lens:
        t = time.perf_counter()
        m.step(ids[n], 0)                               # one forward: the runner's prefill
        out[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    tok = int(np.argmax(m.step(ids[prompt_lens[0]], 0)))
    out["ttft_s"] = time.perf_counter() - t
    pos = prompt_lens[0]
    t = time.perf_counter()
    for _ in range(n_decode):
        tok = int(np.argmax(m.step([tok], pos)))
        pos += 1
    out["decode_tok_s"] = n_decode / (time.perf_counter() - t)
    out["os_threads"] = _os_threads()
    out["peak_rss_mb"] = peak_rss_mb()
    out["file_mb"] = os.path.getsize(os.path.join(folder, "model.pte")) / 2**20
    return out


def measure_et_runner(folder: str, threads: int, prompt_lens=(128, 512), n_decode: int = 64) -> dict:
    """The .pte through ExecuTorch's own LLM runner (TextLLMRunner: its tokenizer, prefiller,
    decode loop and sampler), timed by the runner's own Stats (ms resolution).

    The runner takes text: each prompt is the first n tokens of english_text("eval")
    (tokenizer.json of the artifact) decoded back to text; the runner's token count is
    recorded (prompt{n}_tokens) and used for the rate. Prefill: prompt_eval_end -
    inference_start of a generate(max_new_tokens=1); TTFT: first_token - inference_start
    on the first prompt; decode: generated tokens / (inference_end - prompt_eval_end) of a
    generate(max_new_tokens=n_decode + 1). Threads: the extension threadpool.
    """
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    from executorch.extension.pybindings import portable_lib
    from tokenizers import Tokenizer

    from nano_runtime.data import english_text
    from nano_runtime.engine import peak_rss_mb
    from nano_runtime.export import runtimes as R
    R.set_pte_threads(threads)
    hf = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    all_ids = hf.encode(english_text("eval"), add_special_tokens=False).ids
    texts = {n: hf.decode(all_ids[:n]) for n in prompt_lens}
    t0 = time.perf_counter()
    runner = TextLLMRunner(os.path.join(folder, "model.pte"), os.path.join(folder, "tokenizer.json"))
    ctor_s = time.perf_counter() - t0

    def gen(text, n_new):
        stats = []
        runner.reset()
        cfg = GenerationConfig(echo=False, max_new_tokens=n_new, temperature=0.0, num_bos=0,
                               num_eos=0)
        runner.generate(text, cfg, token_callback=lambda s: None, stats_callback=stats.append)
        return stats[-1]
    st = gen(texts[prompt_lens[0]][:40], 1)                # loads the model; warm-up
    out = {"load_s": ctor_s + (st.model_load_end_ms - st.model_load_start_ms) / 1000,
           "threads": threads, "pool_threads": int(portable_lib._threadpool_get_thread_count())}
    for n in prompt_lens:
        st = gen(texts[n], 1)
        out[f"prompt{n}_tokens"] = st.num_prompt_tokens
        out[f"prefill{n}_tok_s"] = st.num_prompt_tokens / max(
            (st.prompt_eval_end_ms - st.inference_start_ms) / 1000, 1e-3)
        if n == prompt_lens[0]:
            out["ttft_s"] = (st.first_token_ms - st.inference_start_ms) / 1000
    st = gen(texts[prompt_lens[0]], n_decode + 1)
    out["decode_tokens"] = st.num_generated_tokens
    out["decode_tok_s"] = st.num_generated_tokens / max(
        (st.inference_end_ms - st.prompt_eval_end_ms) / 1000, 1e-3)
    out["os_threads"] = _os_threads()
    out["peak_rss_mb"] = peak_rss_mb()
    out["file_mb"] = os.path.getsize(os.path.join(folder, "model.pte")) / 2**20
    return out


def measure_ort(folder: str, threads: int, prompt_lens=(128, 512), n_decode: int = 64) -> dict:
    """The ONNX Runtime GenAI folder: one Generator per sequence, append_tokens() for the
    prefill (one session run over the prompt) and for each decoded token; greedy argmax
    on get_logits() as for the other runtimes. Threads: the decoder session's
    intra_op_num_threads, set through an in-memory og.Config overlay (the artifact's
    genai_config.json is not touched). Prefill times exclude creating the Generator (it
    allocates the KV buffers, like the other runtimes' reset outside the timing); TTFT
    includes it."""
    import numpy as np

    from nano_runtime.engine import peak_rss_mb
    from nano_runtime.export import runtimes as R
    with open(os.path.join(folder, "genai_config.json")) as f:
        gcfg = json.load(f)["model"]
    need = max(prompt_lens) + n_decode + 8
    if need > gcfg["context_length"]:
        raise RuntimeError(f"{folder}: context {gcfg['context_length']} < {need} tokens")
    t0 = time.perf_counter()
    m = R.GenaiModel(folder, threads=threads, max_length=min(gcfg["context_length"], max(need, 1024)))
    out = {"load_s": time.perf_counter() - t0, "threads": threads}
    ids = _random_prompts(int(gcfg["vocab_size"]), prompt_lens)
    g = m._generator()
    g.append_tokens(ids[prompt_lens[0]][:8])            # warm-up
    g.get_logits()
    for n in prompt_lens:
        g = m._generator()
        t = time.perf_counter()
        g.append_tokens(ids[n])
        g.get_logits()
        out[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t)
    del g
    t = time.perf_counter()
    g = m._generator()
    g.append_tokens(ids[prompt_lens[0]])
    tok = int(np.argmax(g.get_logits()))
    out["ttft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n_decode):
        g.append_tokens([tok])
        tok = int(np.argmax(g.get_logits()))
    out["decode_tok_s"] = n_decode / (time.perf_counter() - t)
    out["os_threads"] = _os_threads()
    out["peak_rss_mb"] = peak_rss_mb()
    out["file_mb"] = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                         if f.startswith("model.onnx")) / 2**20
    return out


def _preimport(fn: str):
    """Import what a worker's runtime needs, so that rss_base_mb is the process before loading
    the model (the Python interpreter plus the runtime's libraries)."""
    import numpy  # noqa: F401
    import nano_runtime.engine  # noqa: F401
    if fn == "measure_llama":
        import llama_cpp  # noqa: F401
    elif fn in ("measure_et", "measure_et_runner"):
        from nano_runtime.export import runtimes as R
        R._load_et_ops()
        from executorch.runtime import Runtime  # noqa: F401
    elif fn == "measure_ort":
        import onnxruntime_genai  # noqa: F401


def worker_main(fn: str, spec_json: str):
    if fn == "measure_native":
        from nano_runtime.commands.bench import measure_native as f
    else:
        f = globals()[fn]
    _preimport(fn)
    base = _rss_mb()
    r = f(**json.loads(spec_json))
    r["rss_base_mb"] = base
    r["loadavg"] = os.getloadavg()[0]
    print(json.dumps(r))


def run_py_worker(fn: str, spec: dict, timeout: float = 1800) -> dict:
    """fn(**spec) of this module in a fresh Python process; its last stdout line is the JSON."""
    code = ("import sys; sys.path.insert(0, %r); from benchmarks.bench_engine import worker_main; "
            "worker_main(sys.argv[1], sys.argv[2])" % ROOT)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", code, fn, json.dumps(spec)], capture_output=True,
                       text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- perplexity
def ppl_native(path: str, ctx: int, windows: int, threads: int) -> dict:
    """`nano eval ppl X.nano --backend native` on english_text("eval") (the CLI itself)."""
    import tempfile

    from nano_runtime.data import english_text
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(english_text("eval"))
    try:
        r = subprocess.run([sys.executable, "-m", "nano_runtime.cli", "eval", "ppl", path,
                            "--text", f.name, "--backend", "native", "--ctx", str(ctx),
                            "--max-windows", str(windows), "--threads", str(threads), "--json"],
                           capture_output=True, text=True, cwd=ROOT)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])


def ppl_llama(gguf_path: str, nano_path: str, ctx: int, windows: int, threads: int) -> dict:
    """llama.cpp on the GGUF (logits_all), the same windows as the engine: token ids from
    the .nano's tokenizer (the GGUF's own vocabulary, converted exactly)."""
    import llama_cpp
    import numpy as np

    from nano_runtime.data import english_text
    from nano_runtime.evaluate import perplexity, ppl_windows
    from nano_runtime.formats.nano_file import read_tokenizer
    tok = read_tokenizer(nano_path)
    ids = tok.encode(english_text("eval"), add_bos=False)
    wins = ppl_windows(ids, ctx, tok.bos_id if tok.add_bos else None)[:windows]
    llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                          n_threads=threads, n_threads_batch=threads, logits_all=True,
                          verbose=False)

    def logits(w):
        llm.reset()
        llm.eval(w)
        return np.array(llm.scores[:len(w)], dtype=np.float32)
    r = perplexity(wins, logits)
    return {"ppl": r["ppl"], "tokens": r["tokens"]}


def ppl_export(model: str, arts: dict, ctx: int, windows: int) -> dict:
    """The .pte and the ONNX folder (and the fp32 reference), bench_export.perplexities."""
    import warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_export as B

    from nano_runtime.loader import load_model
    lm = load_model(model)
    r = B.perplexities(lm, arts, {}, windows, ctx)
    names = {"reference_fp32": "torch fp32 (reference)", "pte_executorch": "executorch",
             "onnx_genai": "ort-genai"}
    return {names.get(k, k): v for k, v in r.items()}


def worker_ppl(fn: str, spec_json: str):
    print(json.dumps(globals()[fn](**json.loads(spec_json))))


def run_ppl_worker(fn: str, spec: dict) -> dict:
    code = ("import sys; sys.path.insert(0, %r); from benchmarks.bench_engine import worker_ppl; "
            "worker_ppl(sys.argv[1], sys.argv[2])" % ROOT)
    r = subprocess.run([sys.executable, "-c", code, fn, json.dumps(spec)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
# --peers key -> (runtime name in the tables, worker function)
RUNTIMES = {"native": ("nano", "measure_native"), "native4": ("nano int4", "measure_native"),
            "native-nm": ("nano no-mmap", "measure_native"),
            "llama": ("llama.cpp", "measure_llama"),
            "et": ("executorch", "measure_et_runner"), "ort": ("ort-genai", "measure_ort"),
            "et-fwd": ("executorch (py forward)", "measure_et")}
OURS = ("nano", "nano int4", "nano no-mmap")
RT_ORDER = ["nano", "nano no-mmap", "nano int4", "llama.cpp", "executorch", "ort-genai", "executorch (py forward)"]
ARTIFACT_RUNTIMES = {"et": "pte", "ort": "onnx", "et-fwd": "pte"}   # real models only
PEERS = {}  # extra name -> callable(model, threads, prompt_lens, n_decode) -> dict
INT4_RECIPE = ["--method", "gptq", "--group-size", "32", "--sym", "--embed", "q4"]


def int4_nano(model: str) -> str:
    """The model re-quantized to int4 everywhere (GPTQ g32 sym linears, int4 tied
    embedding/head): the "nano int4" row, at the bits of ORT GenAI's int4 export. Made once
    with `nano quantize` (progress bar) and cached."""
    path = os.path.join(CACHE, f"{model}-gptq-g32sym-q4embed.nano")
    if not os.path.exists(path):
        print(f"writing {path} (nano quantize {model} {' '.join(INT4_RECIPE)})", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "nano_runtime.cli", "quantize", model, "-o", path]
                           + INT4_RECIPE, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"nano quantize {model} failed (exit {r.returncode})")
    return path


def speed_cols(res) -> list:
    """prefill{n}_tok_s keys present in the results (sorted by n), then decode_tok_s."""
    ns = sorted({int(k[7:-6]) for r in res for run in r["runs"] if run for k in run
                 if k.startswith("prefill") and k.endswith("_tok_s")}) or [128, 512]
    return [f"prefill{n}_tok_s" for n in ns] + ["decode_tok_s"]


def med_best(rows, key):
    vals = [r[key] for r in rows if r and key in r]
    if not vals:
        return None, None
    low = key in ("ttft_s", "peak_rss_mb", "load_s")
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

def dram_probe(threads: int, reps: int = 7) -> float:
    """DRAM read bandwidth (GB/s) by benchmarks/membw.c over 1 GiB of numpy memory (which numpy
    advises for transparent huge pages), with `threads` threads: the bound for decode."""
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from bench_kernels import membw_lib
    big = np.ones(1 << 30, dtype=np.uint8)
    gb = membw_lib().nano_membw_read(big.ctypes.data, big.nbytes, threads, reps)
    del big
    return gb


def decode_bytes(path: str, pos: int) -> dict:
    """Bytes one decode step reads at position `pos`: every tensor of the .nano except an
    untied embedding table (a tied one is read whole as the output head; the lookup reads one
    row) and the embedded tokenizer (tokenizer.*: read at load, never by a step), plus the f16
    K and V cache rows attended to."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
    cfg = json.loads(hdr["__metadata__"]["nano.config"])
    size = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in hdr.items()
            if k != "__metadata__"}
    tied = cfg.get("tie_embeddings", False)
    w = sum(b for k, b in size.items()
            if not k.startswith("tokenizer.") and (tied or not k.startswith("embed.")))
    window, pattern = cfg.get("sliding_window") or 0, cfg.get("sliding_window_pattern", 6)
    kv = 0
    for layer in range(cfg["n_layers"]):
        n_keys = pos + 1
        if window and pattern and (layer + 1) % pattern:
            n_keys = min(n_keys, window)
        kv += 2 * cfg["n_kv_heads"] * cfg["head_dim"] * n_keys * 2
    return {"weights": w, "kv": kv, "total": w + kv, "pos": pos}


def _fmt(v, key):
    if key == "peak_rss_mb":
        return f"{v:.0f}"
    if key in ("ttft_s", "load_s"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.3g}"


def report(state: dict) -> str:
    """engine.md from the saved state (partial runs included)."""
    res, ppl, meta = state["results"], state.get("ppl", {}), state.get("meta", {})
    models = meta.get("models") or sorted({r["model"] for r in res})
    threads = meta.get("threads") or sorted({r["threads"] for r in res})
    by = {(r["model"], r["threads"], r["runtime"]): r["runs"] for r in res}
    rts = [rt for rt in RT_ORDER if any(k[2] == rt for k in by)] + sorted(
        {k[2] for k in by} - set(RT_ORDER))
    speed = speed_cols(res)
    cols = speed + ["ttft_s", "peak_rss_mb"]
    ppl_ctx = meta.get("args", {}).get("ppl_ctx", 512)
    md = ["# Native engine vs llama.cpp, ExecuTorch, ONNX Runtime GenAI", "",
          "Cells: median / best over interleaved runs, each in a fresh process "
          f"({meta.get('started', '')}, load average at start {meta.get('loadavg', '?')}). "
          "Prompts: random token ids (same ids for every runtime); decode: greedy single-token "
          "steps after the first (shortest) prompt; TTFT: that prompt to the first sampled token "
          "(ort-genai: includes creating its Generator). "
          "Peak RSS: VmHWM of the worker process, and in brackets above the process after "
          "importing the runtime (ExecuTorch's Python binding imports torch). "
          f"ppl: english_text('eval'), ctx {ppl_ctx}, the same first windows for every runtime.", "",
          "| model | threads | runtime | weights | file MB | load s | "
          + " | ".join(c.replace("_tok_s", "").replace("prefill", "prefill ") + " tok/s"
                       for c in speed)
          + " | TTFT s | peak RSS MB | ppl | runs |",
          "|---|---|---|---|---|---|" + "---|" * len(speed) + "---|---|---|---|"]
    for m in models:
        for t in threads:
            for rt in rts:
                rows = by.get((m, t, rt))
                if rows is None:
                    continue
                ok = [r for r in rows if r]
                cells = []
                for c in cols:
                    md_, b = med_best(ok, c)
                    if md_ is None:
                        cells.append("-")
                    elif c == "peak_rss_mb":
                        base = statistics.median([r.get("rss_base_mb", 0) for r in ok])
                        cells.append(f"{md_:.0f} ({md_ - base:+.0f})")
                    else:
                        cells.append(f"{_fmt(md_, c)} / {_fmt(b, c)}")
                fmb = med_best(ok, "file_mb")[0]
                lds = med_best(ok, "load_s")[0]
                p = ppl.get(m, {}).get(rt)
                pc = f"{p['ppl']:.3f}" if p and "ppl" in p else "-"
                wt = meta.get("weights", {}).get(m, {}).get(rt, "")
                lines_ = (f"| {m} | {t} | {rt} | {wt} | {'-' if fmb is None else f'{fmb:.0f}'} | "
                          f"{'-' if lds is None else _fmt(lds, 'load_s')} | " + " | ".join(cells)
                          + f" | {pc} | {len(ok)}/{len(rows)} |")
                md.append(lines_)
    # engine / fastest peer, per metric (the goal: >= 1.0x)
    md += ["", "## Engine vs the fastest peer (medians; goal >= 1.00x)", "",
           "| model | threads | engine file | " + " | ".join(c.replace("_tok_s", "") for c in speed) + " |",
           "|---|---|---|" + "---|" * len(speed)]
    for m in models:
        for t in threads:
            for me in OURS:
                mine = by.get((m, t, me), [])
                if not mine:
                    continue
                cells = [me]
                for c in speed:
                    x = med_best(mine, c)[0]
                    peers = [(med_best(by[(m, t, rt)], c)[0], rt) for rt in rts
                             if rt not in OURS and (m, t, rt) in by]
                    peers = [p for p in peers if p[0]]
                    if not x or not peers:
                        cells.append("-")
                        continue
                    y, who = max(peers)
                    cells.append(f"{x / y:.2f}x (vs {who})")
                md.append(f"| {m} | {t} | " + " | ".join(cells) + " |")
    if ppl:
        md += ["", f"## Perplexity (english_text('eval'), ctx {ppl_ctx}, same windows)", "",
               "| model | runtime | weights | ppl | vs engine | tokens |", "|---|---|---|---|---|---|"]
        for m, d in ppl.items():
            ref = d.get("nano", {}).get("ppl")
            for rt, v in d.items():
                if "ppl" not in v:
                    md.append(f"| {m} | {rt} | | failed: {v.get('error', '')[:120]} | | |")
                    continue
                rel = f"{v['ppl'] / ref - 1:+.1%}" if ref and rt != "nano" else ""
                wt = meta.get("weights", {}).get(m, {}).get(rt, "")
                md.append(f"| {m} | {rt} | {wt} | {v['ppl']:.3f} | {rel} | {v['tokens']} |")
    notes = meta.get("notes", [])
    if notes:
        md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if state.get("bandwidth"):
        md += ["", "## Decode vs the memory-bandwidth bound", "",
               "bytes/token: every tensor a decode step reads (weights and the tied head, the "
               "f16 KV rows at the mid decode position); DRAM: benchmarks/membw.c read "
               "bandwidth over 1 GiB, run after each group of runs in the same repeat; "
               "bound = DRAM / bytes per token; goal: decode >= 90% of it.", "",
               "| model | threads | runtime | MB/token | decode tok/s median / best | "
               "decode GB/s median / best | DRAM probe GB/s median (min-max, n) | "
               "% of bound median / best |", "|---|---|---|---|---|---|---|---|"]
        dbytes = meta.get("decode_bytes", {})
        for m in models:
            for t in threads:
                bw = [b["dram_gb_s"] for b in state["bandwidth"] if b["model"] == m
                      and b["threads"] == t]
                if not bw or m not in dbytes:
                    continue
                dram = statistics.median(bw)
                B = dbytes[m]["total"]
                for rt in OURS:
                    rows = [r for r in by.get((m, t, rt), []) if r]
                    if not rows:
                        continue
                    med, best = med_best(rows, "decode_tok_s")
                    md.append(f"| {m} | {t} | {rt} | {B / 1e6:.0f} | {med:.3g} / {best:.3g} | "
                              f"{med * B / 1e9:.1f} / {best * B / 1e9:.1f} | {dram:.1f} "
                              f"({min(bw):.1f}-{max(bw):.1f}, {len(bw)}) | "
                              f"{med * B / 1e9 / dram:.0%} / {best * B / 1e9 / dram:.0%} |")
    if state.get("memory"):
        md += ["", "## Memory", "", "| check | measured | bound / detail | goal |", "|---|---|---|---|"]
        md += [f"| {a_} | {b_} | {c_} | {d_} |" for a_, b_, c_, d_ in state["memory"]]
    return "\n".join(md) + "\n"


def save(state: dict, out: str, png: bool = False):
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "engine.json.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, os.path.join(out, "engine.json"))
    text = report(state)
    with open(os.path.join(out, "engine.md.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, "engine.md.tmp"), os.path.join(out, "engine.md"))
    if png:
        plot(state, os.path.join(out, "engine.png"))
    return text


WEIGHTS = {
    "smollm2-135m-instruct": {"nano": "Q4_1 (exact GGUF import)", "llama.cpp": "Q4_1 GGUF",
                              "executorch": "8da4w g32", "ort-genai": "int4 g32",
                              "torch fp32 (reference)": "fp32 (dequantized GGUF)"},
    "gemma3-270m": {"nano": "Q4_K_M import (Q8_0 exact, Q5_0/Q6_K as int8, Q4_K as int4 RTN), int4 GPTQ tied head",
                    "nano int4": "GPTQ int4 g32 sym everywhere, int4 tied embedding/head", "llama.cpp": "Q4_K_M GGUF",
                    "executorch": "8da4w g32", "ort-genai": "int4 g32",
                    "torch fp32 (reference)": "fp32 (dequantized GGUF)"},
    "nano-1": {"nano": "RTN int4 g32 (random)", "llama.cpp": "Q4_0 (random)"},
    "nano-2": {"nano": "RTN int4 g32 (random)", "llama.cpp": "Q4_0 (random)"},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m,nano-1,nano-2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", default="native,llama,et,ort",
                    help="runtimes to run: native,native4,llama,et,ort (et/ort on the real models "
                         "only; native4 = the model re-quantized to int4 everywhere, for Gemma 3 "
                         "270M, whose GGUF import keeps int8 tensors)")
    ap.add_argument("--artifacts", default=os.path.join(CACHE, "export-bench"),
                    help="folder holding {model}-pte and {model}-onnx (nano_runtime.export)")
    ap.add_argument("--export-missing", action="store_true",
                    help="export a missing .pte / ONNX folder with `nano export` (minutes each)")
    ap.add_argument("--prompt-lens", default="128,512", help="prefill prompt lengths (real models)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--big-repeats", type=int, default=1, help="repeats for nano-1/nano-2")
    ap.add_argument("--big-decode-tokens", type=int, default=16)
    ap.add_argument("--big-prompt-lens", default="128,512", help="prompt lengths for nano-1/nano-2")
    ap.add_argument("--ppl-windows", type=int, default=3,
                    help="perplexity section: windows of 512 tokens per runtime (0: skip)")
    ap.add_argument("--ppl-threads", type=int, default=2)
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-only", action="store_true", help="only the perplexity section")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-bandwidth", action="store_true",
                    help="skip the DRAM read probe run after each nano-1 / nano-2 group")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite engine.md / engine.png from engine.json")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    a = ap.parse_args()
    if a.report_only:
        with open(os.path.join(a.out, "engine.json")) as f:
            print(save(json.load(f), a.out, png=True))
        return
    from nano_runtime.engine import resolve_nano
    if a.memory_only:
        md = ["## Memory", "", "| check | measured | bound / detail | goal |", "|---|---|---|---|"]
        md += [f"| {a_} | {b_} | {c_} | {d_} |" for a_, b_, c_, d_ in memory_section(1)]
        print("\n".join(md))
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "engine_memory.md"), "w") as f:
            f.write("\n".join(md) + "\n")
        return
    from nano_runtime.progress import progress_bar
    def fail(msg):
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    models = [m for m in a.models.split(",") if m]
    try:
        threads = [int(t) for t in a.threads.split(",")]
        [int(x) for x in (a.prompt_lens + "," + a.big_prompt_lens).split(",")]
    except ValueError:
        fail("--threads, --prompt-lens and --big-prompt-lens take comma-separated integers")
    if any(t < 1 for t in threads) or a.repeats < 1 or a.decode_tokens < 1:
        fail("--threads, --repeats and --decode-tokens must be >= 1")
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    bad = [p for p in peers if p not in RUNTIMES]
    if bad:
        fail(f"unknown --peers {','.join(bad)} (choose from {','.join(RUNTIMES)})")
    big = {"nano-1", "nano-2"}
    notes = []
    paths = {}                                  # (model, peer) -> path
    for m in models:
        if "native" in peers:
            paths[(m, "native")] = resolve_nano(m)
        if "native-nm" in peers:
            paths[(m, "native-nm")] = resolve_nano(m)
        if "native4" in peers and m == "gemma3-270m":
            paths[(m, "native4")] = int4_nano(m)
        if "llama" in peers:
            paths[(m, "llama")] = gguf_for(m)
        for p, kind in ARTIFACT_RUNTIMES.items():
            if p not in peers or m in big:
                continue
            d = os.path.join(a.artifacts, f"{m}-{kind}")
            if not os.path.isdir(d) and a.export_missing:
                print(f"exporting {d}", file=sys.stderr)
                subprocess.run([sys.executable, "-m", "nano_runtime.cli", "export", kind, m, "-o", d],
                               cwd=ROOT)
            if os.path.isdir(d):
                paths[(m, p)] = d
            else:
                notes.append(f"{m}: {RUNTIMES[p][0]} not measured, {d} missing "
                             f"(`nano export {kind} {m} -o {d}`, or --export-missing)")
                print(notes[-1], file=sys.stderr)
    state = {"meta": {"models": models, "threads": threads, "peers": peers,
                      "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "loadavg": round(os.getloadavg()[0], 1), "notes": notes,
                      "paths": {f"{m}|{p}": v for (m, p), v in paths.items()},
                      "weights": {m: WEIGHTS.get(m, {}) for m in models},
                      "args": vars(a)},
             "results": [], "ppl": {}}
    notes.append("threads: nano and llama.cpp n_threads; executorch: its threadpool "
                 "(portable_lib._unsafe_reset_threadpool, pool size recorded per run); "
                 "ort-genai: decoder session intra_op_num_threads (og.Config overlay).")
    if "et" in peers:
        notes.append("executorch: run by its LLM runner (TextLLMRunner) on text prompts of "
                     "exactly the prompt lengths (english text), timed by the runner's own "
                     "Stats (1 ms resolution); the others on random token ids.")
    cell = {}

    def add(m, t, rt, r):
        if (m, t, rt) not in cell:
            cell[(m, t, rt)] = {"model": m, "threads": t, "runtime": rt, "runs": []}
            state["results"].append(cell[(m, t, rt)])
        cell[(m, t, rt)]["runs"].append(r)

    plan = []                                    # (rep, model, threads, [peer, ...])
    if not a.ppl_only:
        for rep in range(max(a.repeats, a.big_repeats)):
            for m in models:
                if rep >= (a.big_repeats if m in big else a.repeats):
                    continue
                for t in threads:
                    order = [p for p in peers if (m, p) in paths]
                    k = rep % max(len(order), 1)
                    plan.append((rep, m, t, order[k:] + order[:k]))   # rotate who goes first
    total = sum(len(o) for *_, o in plan) + len(PEERS) * len(plan)
    t_start = time.time()
    with progress_bar(total=total, desc="measurements", unit="run") as bar:
        for rep, m, t, order in plan:
            nd = a.big_decode_tokens if m in big else a.decode_tokens
            lens = [int(x) for x in (a.big_prompt_lens if m in big else a.prompt_lens).split(",")]
            for p in order:
                rt, fn = RUNTIMES[p]
                spec = {"path" if p in ("native", "native4", "native-nm", "llama") else "folder":
                        paths[(m, p)], "threads": t, "prompt_lens": lens, "n_decode": nd}
                if p == "native-nm":
                    spec["no_mmap"] = True
                try:
                    r = run_py_worker(fn, spec)
                except Exception as e:  # report, keep going
                    bar.write(f"{rt} {m} t={t}: {str(e)[-300:]}")
                    r = None
                add(m, t, rt, r)
                bar.update(1)
                bar.write(f"rep {rep} {m} t={t} {rt}: " + (json.dumps(
                    {k: round(v, 2) for k, v in r.items() if isinstance(v, float)}) if r else "failed"))
                save(state, a.out)
            for name, fn in PEERS.items():
                add(m, t, name, fn(m, t, lens, nd))
                bar.update(1)
            if m in big and not a.no_bandwidth:     # the bound, measured next to the runs
                gb = dram_probe(t)
                state.setdefault("bandwidth", []).append({"model": m, "threads": t, "rep": rep,
                                                          "dram_gb_s": gb})
                state["meta"].setdefault("decode_bytes", {})[m] = decode_bytes(
                    resolve_nano(m, show_progress=False), lens[0] + nd // 2)
                bar.write(f"rep {rep} {m} t={t} DRAM read probe: {gb:.1f} GB/s")
                save(state, a.out)
    state["meta"]["speed_wall_s"] = round(time.time() - t_start)
    if a.ppl_windows > 0:
        real = [m for m in models if m not in big]
        jobs = []
        for m in real:
            for key, rt in (("native", "nano"), ("native4", "nano int4")):
                if (m, key) in paths:
                    jobs.append((m, rt, "ppl_native", {"path": paths[(m, key)], "ctx": a.ppl_ctx,
                                 "windows": a.ppl_windows, "threads": a.ppl_threads}))
            if "llama" in peers:
                jobs.append((m, "llama.cpp", "ppl_llama", {
                    "gguf_path": paths[(m, "llama")], "nano_path": resolve_nano(m, show_progress=False),
                    "ctx": a.ppl_ctx, "windows": a.ppl_windows, "threads": a.ppl_threads}))
            arts = {kind: paths[(m, p)] for p, kind in ARTIFACT_RUNTIMES.items() if (m, p) in paths}
            if arts:
                jobs.append((m, None, "ppl_export", {"model": m, "arts": arts, "ctx": a.ppl_ctx,
                                                     "windows": a.ppl_windows}))
        with progress_bar(total=len(jobs), desc="perplexity", unit="runtime") as bar:
            for m, rt, fn, spec in jobs:
                d = state["ppl"].setdefault(m, {})
                r = None
                try:
                    r = run_ppl_worker(fn, spec)
                    d.update(r if rt is None else {rt: r})
                except Exception as e:
                    bar.write(f"ppl {m} {rt or 'pte/onnx'}: {str(e)[-300:]}")
                    d[rt or "pte/onnx"] = {"error": str(e)[-300:]}
                bar.update(1)
                bar.write(f"ppl {m} {rt or 'pte/onnx'}: {json.dumps(r)}")
                save(state, a.out)
    if not a.no_memory and not a.ppl_only:
        print("memory section", file=sys.stderr)
        state["memory"] = memory_section(threads[0])
    state["meta"]["wall_s"] = round(time.time() - t_start)
    print(save(state, a.out, png=True))


def plot(state, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = {(r["model"], r["threads"], r["runtime"]): r["runs"] for r in state["results"]}
    if not res:
        return
    models = [m for m in state["meta"]["models"] if any(k[0] == m for k in res)]
    threads = state["meta"]["threads"]
    runtimes = [rt for rt in RT_ORDER if any(k[2] == rt for k in res)]
    sc = speed_cols(state["results"])
    fig, axes = plt.subplots(1, len(sc), figsize=(5.4 * len(sc), 4.5))
    short = {"smollm2-135m-instruct": "SmolLM2\n135M", "gemma3-270m": "Gemma 3\n270M"}
    labels = [f"{short.get(m, m)}\nt={t}" for m in models for t in threads]
    for ax, c in zip(axes, sc):
        w = 0.8 / max(len(runtimes), 1)
        for i, rt in enumerate(runtimes):
            vals = [med_best(res.get((m, t, rt), []), c)[0] or 0 for m in models for t in threads]
            ax.bar([j + i * w for j in range(len(labels))], vals, w, label=rt)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("tok/s (median)")
        ax.set_title(c.replace("_tok_s", "").replace("prefill", "prefill ") + " tok/s")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"engine vs peers ({state['meta'].get('started', '')}, "
                 f"load avg {state['meta'].get('loadavg', '?')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
