"""nano bench [MODEL ...] [--threads 1,2] [--json]: speed and memory of the native engine.

Each (model, threads) point runs in a fresh process (so peak RSS is that run's): prefill
tok/s at 128 and 512-token prompts, time to first token (128-token prompt: prefill plus
the first sampled token), decode tok/s (single-token steps after the 128-token prompt),
peak RSS. Repeats are interleaved; medians and best are reported.
benchmarks/bench_engine.py runs the same measurement next to llama.cpp.
"""
import json
import os
import subprocess
import sys

from ..errors import NanoError

NAME = "bench"
HELP = "measure prefill / decode speed, time to first token and memory of the native engine"
ORDER = 80

DEFAULT_MODELS = ["smollm2-135m-instruct"]


def add_arguments(p):
    p.add_argument("models", nargs="*", help=f"models (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--prompt-lens", default="128,512")
    p.add_argument("--no-mmap", dest="no_mmap", action="store_true",
                   help="load the weights into (huge-page) memory instead of mapping the file")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")


def measure_native(path: str, threads: int, prompt_lens=(128, 512), n_decode: int = 64,
                   n_ctx: int = 0, profile=None, precise=False, no_mmap=False) -> dict:
    """One measurement in this process (call it in a fresh process for a clean RSS)."""
    import time

    import numpy as np

    from ..engine import Engine, peak_rss_mb
    t0 = time.perf_counter()
    eng = Engine(path, threads=threads, n_ctx=n_ctx or max(max(prompt_lens) + n_decode + 8, 1024),
                 profile=profile, precise=precise, no_mmap=no_mmap, tokenizer=False)
    load_s = time.perf_counter() - t0
    V = eng.vocab_size
    rng = np.random.RandomState(0)
    out = {"load_s": load_s, "threads": threads}
    ids = {n: [int(x) for x in rng.randint(10, min(V, 30000), n)] for n in prompt_lens}
    eng.eval(ids[prompt_lens[0]][:8])  # warm-up: page in weights, spin up threads
    for n in prompt_lens:
        eng.reset()
        t = time.perf_counter()
        eng.eval(ids[n])
        out[f"prefill{n}_tok_s"] = n / (time.perf_counter() - t)
    # time to first token on the first prompt length: prefill + one sampled token
    eng.reset()
    t = time.perf_counter()
    got, _, _ = eng.generate_ids(ids[prompt_lens[0]], 1, None, stop_ids=[], reset=False)
    out["ttft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tok = got[0]
    for _ in range(n_decode):
        lg = eng.eval([tok])
        tok = int(lg.argmax())
    out["decode_tok_s"] = n_decode / (time.perf_counter() - t)
    out["peak_rss_mb"] = peak_rss_mb()
    out["file_mb"] = os.path.getsize(path) / 2**20
    out["kv_mb"] = eng.plan["kv_bytes"] / 2**20
    out["n_ctx"] = eng.n_ctx
    out["kernel"] = eng.stats()["kernel"]
    eng.close()
    return out


def run_worker(spec: dict) -> dict:
    """Run measure_native (or another worker) in a fresh Python process."""
    code = ("import json,sys; from nano_runtime.commands.bench import measure_native as m; "
            "a=json.loads(sys.argv[1]); print(json.dumps(m(**a)))")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        raise NanoError(f"benchmark worker failed: {lines[-1] if lines else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarize(rows: list, key: str):
    import statistics
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return None, None
    lower_is_better = key in ("ttft_s", "peak_rss_mb", "load_s")
    best = min(vals) if lower_is_better else max(vals)
    return statistics.median(vals), best


def run(args):
    from ..engine import resolve_nano
    models = args.models or DEFAULT_MODELS
    try:
        threads = [int(t) for t in args.threads.split(",")]
        lens = tuple(int(x) for x in args.prompt_lens.split(","))
    except ValueError:
        raise NanoError("--threads and --prompt-lens take comma-separated integers") from None
    if any(t < 1 or t > 256 for t in threads):
        raise NanoError("--threads values must be between 1 and 256")
    if args.repeats < 1 or args.decode_tokens < 1 or any(n < 1 for n in lens):
        raise NanoError("--repeats, --decode-tokens and --prompt-lens must be >= 1")
    paths = {m: resolve_nano(m) for m in models}
    res = {(m, t): [] for m in models for t in threads}
    for _ in range(args.repeats):          # interleaved repeats
        for m in models:
            for t in threads:
                res[(m, t)].append(run_worker({"path": paths[m], "threads": t,
                                               "prompt_lens": list(lens),
                                               "n_decode": args.decode_tokens,
                                               "no_mmap": args.no_mmap}))
    if args.json:
        print(json.dumps([{"model": m, "threads": t, "runs": rows} for (m, t), rows in res.items()]))
        return 0
    cols = [f"prefill{n}_tok_s" for n in lens] + ["decode_tok_s", "ttft_s", "peak_rss_mb"]
    print("| model | threads | " + " | ".join(c + " (median / best)" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (m, t), rows in res.items():
        cells = []
        for c in cols:
            med, best = summarize(rows, c)
            cells.append(f"{med:.3g} / {best:.3g}" if med is not None else "-")
        print(f"| {m} | {t} | " + " | ".join(cells) + " |")
    return 0
