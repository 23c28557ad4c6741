"""Benchmark of the native int4 kernels against the peers, on real model layer shapes.

A program, not a test:  python benchmarks/bench_kernels.py [--quick] [--out DIR]

Measured, per thread count (1 and 2), on the linear-layer shapes of SmolLM2-135M,
Gemma 3 270M, nano-1 and nano-2 (weights random, int4 group 32 symmetric):

* memory read bandwidth (benchmarks/membw.c, wide loads over 1 GiB = DRAM, 8 MiB = cache);
* GEMV (one activation row = decode) as effective GB/s = packed int4 bytes of the layer
  (codes + fp16 scales, 0.5625 B/weight) / time, for every contender, so the column compares
  the same logical layer (torch fp32 really reads 7.1x more bytes):
    hot  = the same matrix again and again (resident in cache),
    cold = rotating through >= 1 GiB of copies (far beyond the 32 MiB L3), as real decode;
* GEMM (prefill, M = 128 and 512 rows) as GFLOP/s = 2 M N K / time.

Contenders: ours per compiled+supported variant, with int8 activations (`q8`: activation
quantization included in the time) and with fp32 activations (`f32`); torch fp32
`F.linear`; torch's int4 CPU kernel `aten._weight_int4pack_mm_for_cpu` (bf16 activations);
ExecuTorch XNNPACK 8da4w group 32 (torchao `Int8DynamicActivationIntxWeightConfig`, exported
with a dynamic M, run through `executorch.runtime`); ONNX Runtime `MatMulNBits` (block 32,
accuracy_level 4 = int8 compute, its fastest CPU path). Cold GEMV is measured for ours and the
torch contenders only (a thousand ExecuTorch/ORT programs would take too long to build).

Timing: contenders are interleaved round-robin, each sample times a batch of calls, the
figure is the median over rounds (the machine is shared and noisy: +-30%). The DRAM bound
drifts too (+-15% within minutes), so each cold sweep is preceded by a DRAM probe run and the
cold table compares with the median of those probes as well as with the start-up figure. Each thread count
runs in its own subprocess (ExecuTorch's thread pool can be set once per process).
Output: a markdown table on stdout and in OUT/kernels.md, raw numbers in OUT/kernels.json,
a plot OUT/kernels.png.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nano_runtime import kernels as K  # noqa: E402

MODELS = {  # dim, ffn, heads, kv heads, head_dim
    "smollm2-135m": (576, 1536, 9, 3, 64),
    "gemma3-270m": (640, 2048, 4, 1, 256),
    "nano-1": (2048, 9856, 16, 4, 128),
    "nano-2": (2560, 10624, 20, 4, 128),
}
GROUP = 32
GIB = 1 << 30


def layer_shapes(quick: bool):
    out = []
    for model, (dim, ffn, h, kv, hd) in MODELS.items():
        layers = {"qkv": ((h + 2 * kv) * hd, dim), "o": (dim, h * hd), "up": (ffn, dim),
                  "down": (dim, ffn)}
        for name, (n, k) in layers.items():
            if quick and name not in ("up", "down"):
                continue
            out.append((f"{model}.{name}", n, k))
    return out


def q4_bytes(n, k):
    return n * k // 2 + n * (k // GROUP) * 2


# ----------------------------------------------------------------------------- timing
SETTLE_S = float(os.environ.get("NANO_BENCH_SETTLE_MS", "0")) / 1000.0


def settle():
    """--settle-ms: idle before a timed batch, so the thread pools of the contender timed just
    before (OpenMP, ORT, XNNPACK and ours spin for a while after a call) have gone to sleep and
    do not compete with this one for the 2 cores. 0 (default): back to back, as before."""
    if SETTLE_S > 0:
        time.sleep(SETTLE_S)


def timeit_interleaved(fns: dict, rounds: int, target_s: float = 0.02) -> dict:
    """Median seconds per call of each callable, sampled round-robin."""
    inner = {}
    for name, fn in fns.items():
        fn()
        t = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t, 1e-7)
        inner[name] = max(1, min(1000, int(target_s / dt)))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = inner[name]
            settle()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


# ----------------------------------------------------------------------------- ours
class Ours:
    """Direct ctypes calls (no per-call Python wrapping) on prebuilt structs."""

    def __init__(self, n, k, threads, copies=1, seed=0):
        r = np.random.default_rng(seed)
        self.lib = K._lib()
        self.pool = K._pool(threads)
        self.n, self.k = n, k
        base_q = r.integers(0, 256, (n, k // 2), dtype=np.uint8)
        base_s = (0.002 + 0.01 * r.random((n, k // GROUP))).astype(np.float16)
        self.keep = []
        self.ws = []
        for c in range(copies):
            q = base_q if c == 0 else base_q.copy()
            s = base_s if c == 0 else base_s.copy()
            self.keep.append((q, s))
            self.ws.append(K._Q4Matrix(q.ctypes.data, s.ctypes.data, None, n, k, GROUP))
        self.acts = {}

    def fn(self, m, act, variant_id, copy_index=None):
        lib, pool = self.lib, self.pool
        x = np.random.default_rng(1).standard_normal((m, self.k)).astype(np.float32)
        y = np.empty((m, self.n), np.float32)
        a = K.Q8Act(m, self.k)
        self.acts[(m, act, variant_id, copy_index)] = (x, y, a)
        xp, yp, ap = x.ctypes.data, y.ctypes.data, ctypes.byref(a.struct)
        set_v = lib.nano_kernel_set_variant
        ws = self.ws
        q8, f32, quant = lib.nano_q4_matmul_q8act, lib.nano_q4_matmul_f32, lib.nano_quantize_act_q8
        k = self.k
        state = {"i": 0}

        def call_one(w):
            if act == "q8":
                quant(xp, m, k, ap, pool)
                q8(ctypes.byref(w), ap, yp, pool)
            else:
                f32(ctypes.byref(w), xp, yp, m, pool)

        if copy_index is None:  # hot: always copy 0
            w0 = ws[0]

            def run():
                set_v(variant_id)
                call_one(w0)
        else:  # cold: one call per copy, round-robin
            def run():
                set_v(variant_id)
                i = state["i"]
                call_one(ws[i])
                state["i"] = (i + 1) % len(ws)
        return run


# ----------------------------------------------------------------------------- peers
def torch_fp32(n, k, m, copies=1):
    import torch
    ws = [torch.randn(n, k) * 0.02 for _ in range(copies)]
    x = torch.randn(m, k)
    st = {"i": 0}

    def run():
        i = st["i"]
        torch.nn.functional.linear(x, ws[i])
        st["i"] = (i + 1) % copies
    return run


def torch_int4(n, k, m, copies=1):
    import torch
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    sz = torch.stack([torch.rand(k // GROUP, n) * 0.01, torch.zeros(k // GROUP, n)], -1).to(torch.bfloat16)
    ps = [packed] + [packed.clone() for _ in range(copies - 1)]
    x = torch.randn(m, k, dtype=torch.bfloat16)
    st = {"i": 0}

    def run():
        i = st["i"]
        torch.ops.aten._weight_int4pack_mm_for_cpu(x, ps[i], GROUP, sz)
        st["i"] = (i + 1) % copies
    return run


_ET_CACHE = {}


def executorch_8da4w(n, k, m):
    import torch
    key = (n, k)
    cache = os.path.join(tempfile.gettempdir(), f"nano_bench_et_{n}x{k}.pte")
    if key not in _ET_CACHE and os.path.exists(cache):  # exported by the other thread count's run
        from executorch.runtime import Runtime
        with open(cache, "rb") as f:
            prog = f.read()
        program = Runtime.get().load_program(prog)
        _ET_CACHE[key] = (prog, program, program.load_method("forward"))
    if key not in _ET_CACHE:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerGroup
        mod = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).eval()
        quantize_(mod, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                             weight_granularity=PerGroup(GROUP)))
        dim_m = torch.export.Dim("M", min=1, max=512)
        ex = torch.export.export(mod, (torch.randn(2, k),), dynamic_shapes=({0: dim_m},))
        prog = to_edge_transform_and_lower(ex, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
        program = Runtime.get().load_program(prog)  # must outlive its method
        _ET_CACHE[key] = (prog, program, program.load_method("forward"))
        with open(cache + ".tmp", "wb") as f:
            f.write(prog)
        os.replace(cache + ".tmp", cache)
    meth = _ET_CACHE[key][2]
    x = torch.randn(m, k)
    return lambda: meth.execute([x])


def ort_matmulnbits(n, k, m, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.default_rng(2)
    nb = k // GROUP
    b = r.integers(0, 256, (n, nb, GROUP // 2), dtype=np.uint8)
    s = (r.random(n * nb) * 0.01).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=4, block_size=GROUP, accuracy_level=4)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializer=[numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = r.standard_normal((m, k)).astype(np.float32)
    return lambda: sess.run(None, {"A": x})


def peers(n, k, m, threads, enabled):
    out = {}
    for name, make in (("torch-fp32", lambda: torch_fp32(n, k, m)),
                       ("torch-int4", lambda: torch_int4(n, k, m)),
                       ("et-xnnpack-8da4w", lambda: executorch_8da4w(n, k, m)),
                       ("ort-matmulnbits", lambda: ort_matmulnbits(n, k, m, threads))):
        if name.split("-")[0] in enabled or name in enabled:
            try:
                out[name] = make()
            except Exception as e:  # a peer that cannot run here is reported, not fatal
                print(f"  [{name} unavailable: {type(e).__name__}: {str(e)[:120]}]", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- membw
_MEMBW_LIB = []


def membw_lib():
    """benchmarks/membw.c compiled once per process (nano_membw_read)."""
    if not _MEMBW_LIB:
        import shutil
        cc = shutil.which("cc") or shutil.which("gcc")
        so = os.path.join(tempfile.mkdtemp(), "membw.so")
        subprocess.run([cc, "-O2", "-march=native", "-shared", "-fPIC", "-pthread",
                        os.path.join(HERE, "membw.c"), "-o", so], check=True)
        lib = ctypes.CDLL(so)
        lib.nano_membw_read.restype = ctypes.c_double
        lib.nano_membw_read.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
        _MEMBW_LIB.append(lib)
    return _MEMBW_LIB[0]


def membw(threads_list):
    lib = membw_lib()
    big = np.ones(GIB, dtype=np.uint8)
    small = np.ones(8 << 20, dtype=np.uint8)
    res = {}
    for t in threads_list:
        res[t] = {"dram": lib.nano_membw_read(big.ctypes.data, big.nbytes, t, 7),
                  "cache8m": lib.nano_membw_read(small.ctypes.data, small.nbytes, t, 300)}
    return res


# ----------------------------------------------------------------------------- one thread count
def run_threads(threads, quick, enabled):
    import torch
    torch.set_num_threads(threads)
    if "et" in enabled:
        try:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
            _unsafe_reset_threadpool(threads)
        except Exception as e:
            print(f"  [executorch threadpool: {e}]", file=sys.stderr)
    variants = [v for v in K.variants() if v in os.environ.get("NANO_BENCH_VARIANTS", ",".join(K.VARIANTS)).split(",")]
    vid = {v: K.VARIANTS.index(v) for v in variants}
    best_v = variants[-1]
    rounds = 5 if quick else 7
    results = []
    for (name, n, k) in layer_shapes(quick):
        t0 = time.time()
        row = {"layer": name, "n": n, "k": k, "threads": threads, "bytes": q4_bytes(n, k)}
        ours = Ours(n, k, threads)
        # GEMV hot
        fns = {}
        for v in variants:
            for act in ("q8", "f32"):
                if v == "scalar" and n * k > 8_000_000 and quick:
                    continue
                fns[f"ours-{v}-{act}"] = ours.fn(1, act, vid[v])
        fns.update(peers(n, k, 1, threads, enabled))
        row["gemv_hot_s"] = timeit_interleaved(fns, rounds)
        # GEMV cold: rotate through >= 1 GiB
        copies = max(2, -(-GIB // row["bytes"]))
        cold = Ours(n, k, threads, copies=copies)
        cf = {f"ours-{best_v}-q8": cold.fn(1, "q8", vid[best_v], 0),
              f"ours-{best_v}-f32": cold.fn(1, "f32", vid[best_v], 0)}
        if "torch" in enabled:
            cf["torch-fp32"] = torch_fp32(n, k, 1, copies=max(2, -(-GIB // (4 * n * k))))
            cf["torch-int4"] = torch_int4(n, k, 1, copies=max(2, -(-GIB // (n * k // 2))))
        row["gemv_cold_s"] = {}
        row["dram_gb_s"] = []     # the DRAM probe, once per sweep: the bound next to the GEMVs
        probe_buf = np.ones(GIB, dtype=np.uint8)
        for _ in range(3 if quick else 5):  # interleave whole sweeps
            settle()
            row["dram_gb_s"].append(membw_lib().nano_membw_read(probe_buf.ctypes.data, GIB, threads, 2))
            for cname, fn in cf.items():
                reps = copies if cname.startswith("ours") else (
                    max(2, -(-GIB // (4 * n * k))) if cname == "torch-fp32" else max(2, -(-GIB // (n * k // 2))))
                settle()
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                row["gemv_cold_s"].setdefault(cname, []).append((time.perf_counter() - t) / reps)
        row["gemv_cold_s"] = {c: statistics.median(v) for c, v in row["gemv_cold_s"].items()}
        del cold, cf, probe_buf
        # GEMM
        for m in (128, 512):
            fns = {}
            for v in variants:
                if v == "scalar":
                    continue
                for act in ("q8", "f32"):
                    fns[f"ours-{v}-{act}"] = ours.fn(m, act, vid[v])
            fns.update(peers(n, k, m, threads, enabled))
            row[f"gemm{m}_s"] = timeit_interleaved(fns, rounds, target_s=0.0)
        results.append(row)
        print(f"  {name:22s} threads={threads} done in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        partial = os.environ.get("NANO_BENCH_PARTIAL", os.path.join(HERE, "results", "kernels.partial.jsonl"))
        os.makedirs(os.path.dirname(partial), exist_ok=True)
        with open(partial, "a") as f:  # rows as they finish, in case a long run is cut short
            f.write(json.dumps(row) + "\n")
    K.set_variant(None)
    return results


# ----------------------------------------------------------------------------- report
def fmt(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def report(data):
    bw, rows = data["membw"], data["rows"]
    lines = ["# Kernel benchmark", "",
             f"machine: {data['machine']}; variants: {', '.join(data['variants'])}; weights int4 g{GROUP} "
             "symmetric; effective GB/s = packed int4 bytes of the layer / time (same for every "
             "contender); ours-*-q8 includes quantizing the activations.", "",
             "## Memory read bandwidth (benchmarks/membw.c)", "", "| threads | DRAM (1 GiB) GB/s | 8 MiB (L3) GB/s |",
             "|---|---|---|"]
    for t, v in sorted(bw.items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {t} | {v['dram']:.1f} | {v['cache8m']:.1f} |")
    for t in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == t]
        dram = bw[str(t)]["dram"] if str(t) in bw else bw[t]["dram"]
        names = list(dict.fromkeys(c for r in rs for c in r["gemv_hot_s"]))
        lines += ["", f"## GEMV hot, {t} thread(s): effective GB/s (higher is better)", "",
                  "| layer | N×K | " + " | ".join(names) + " | ours best / best peer |",
                  "|---|---|" + "---|" * (len(names) + 1)]
        for r in rs:
            gbs = {c: r["bytes"] / s / 1e9 for c, s in r["gemv_hot_s"].items()}
            ob = max(v for c, v in gbs.items() if c.startswith("ours"))
            pb = max([v for c, v in gbs.items() if not c.startswith("ours")], default=None)
            lines.append(f"| {r['layer']} | {r['n']}×{r['k']} | " + " | ".join(fmt(gbs.get(c)) for c in names)
                         + f" | {fmt(ob / pb if pb else None, 2)} |")
        names = list(rs[0]["gemv_cold_s"])
        lines += ["", f"## GEMV cold (rotating ≥ 1 GiB), {t} thread(s): effective GB/s; DRAM read = {dram:.1f} GB/s "
                  "at the start; 'DRAM next to it' = the probe run before each sweep of this shape (median)", "",
                  "| layer | " + " | ".join(names) + " | DRAM next to it GB/s | ours q8 / DRAM next to it | "
                  "ours q8 / DRAM at start |", "|---|" + "---|" * (len(names) + 3)]
        for r in rs:
            gbs = {c: r["bytes"] / s / 1e9 for c, s in r["gemv_cold_s"].items()}
            oq = max(v for c, v in gbs.items() if c.endswith("-q8"))
            near = statistics.median(r["dram_gb_s"]) if r.get("dram_gb_s") else None
            lines.append(f"| {r['layer']} | " + " | ".join(fmt(gbs.get(c)) for c in names)
                         + f" | {fmt(near)} | " + (f"{100 * oq / near:.0f}%" if near else "–")
                         + f" | {100 * oq / dram:.0f}% |")
        for m in (128, 512):
            names = list(rs[0][f"gemm{m}_s"])
            lines += ["", f"## GEMM M={m}, {t} thread(s): GFLOP/s", "",
                      "| layer | " + " | ".join(names) + " | ours best / best peer |", "|---|" + "---|" * (len(names) + 1)]
            for r in rs:
                gf = {c: 2 * m * r["n"] * r["k"] / s / 1e9 for c, s in r[f"gemm{m}_s"].items()}
                ob = max(v for c, v in gf.items() if c.startswith("ours"))
                pb = max([v for c, v in gf.items() if not c.startswith("ours")], default=None)
                lines.append(f"| {r['layer']} | " + " | ".join(fmt(gf.get(c)) for c in names)
                             + f" | {fmt(ob / pb if pb else None, 2)} |")
    return "\n".join(lines) + "\n"


def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = data["rows"]
    threads = sorted({r["threads"] for r in rows})
    panels = [("gemv_hot_s", "GEMV hot (eff. GB/s)", None), ("gemv_cold_s", "GEMV cold (eff. GB/s)", None),
              ("gemm512_s", "GEMM M=512 (GFLOP/s)", 512)]
    fig, axes = plt.subplots(len(threads), len(panels), figsize=(7 * len(panels), 4.5 * len(threads)), squeeze=False)
    for ti, t in enumerate(threads):
        rs = [r for r in rows if r["threads"] == t]
        for pi, (key, title, m) in enumerate(panels):
            ax = axes[ti][pi]
            names = list(dict.fromkeys(c for r in rs for c in r[key]))
            width = 0.8 / len(names)
            for ci, c in enumerate(names):
                vals = [(2 * m * r["n"] * r["k"] if m else r["bytes"]) / r[key][c] / 1e9 if c in r[key] else 0.0
                        for r in rs]
                ax.bar(np.arange(len(rs)) + ci * width, vals, width, label=c)
            if key == "gemv_cold_s":
                ax.axhline(data["membw"][str(t)]["dram"], color="k", ls="--", label="DRAM read BW")
            ax.set_xticks(np.arange(len(rs)) + 0.4)
            ax.set_xticklabels([r["layer"] for r in rs], rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{title}, {t} thread(s)")
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer layers and rounds")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--peers", default="torch,et,ort", help="comma list of torch, et, ort (or none)")
    ap.add_argument("--variants", default=",".join(K.VARIANTS), help="our variants to measure (if available)")
    ap.add_argument("--from-partial", metavar="JSONL", help="only render the report from the rows a "
                    "(possibly interrupted) run appended to JSONL, plus --membw-json")
    ap.add_argument("--membw-json", metavar="JSON", help="with --from-partial: a kernels.json for membw")
    ap.add_argument("--settle-ms", type=float, default=None,
                    help="idle this long before each timed batch so the previous contender's spinning "
                         "thread pool has gone to sleep (default 0: back to back)")
    ap.add_argument("--_worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.settle_ms is not None:  # the workers read it from the environment
        os.environ["NANO_BENCH_SETTLE_MS"] = str(args.settle_ms)
        global SETTLE_S
        SETTLE_S = args.settle_ms / 1000.0
    enabled = set(args.peers.split(",")) if args.peers != "none" else set()
    warnings.filterwarnings("ignore")
    if args._worker:
        json.dump(run_threads(args._worker, args.quick, enabled), sys.stdout)
        return
    os.makedirs(args.out, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")]
    if args.from_partial:
        rows = [json.loads(l) for l in open(args.from_partial) if l.strip()]
        bw = json.load(open(args.membw_json))["membw"] if args.membw_json else {
            str(t): v for t, v in membw(threads).items()}
        data = {"machine": f"{os.cpu_count()} CPUs, {K.current_variant()} selected", "variants": K.variants(),
                "membw": bw, "rows": rows}
        md = report(data)
        print(md)
        with open(os.path.join(args.out, "kernels.md"), "w") as f:
            f.write(md)
        with open(os.path.join(args.out, "kernels.json"), "w") as f:
            json.dump(data, f, indent=1)
        plot(data, os.path.join(args.out, "kernels.png"))
        return
    print("measuring memory bandwidth ...", file=sys.stderr)
    data = {"machine": f"{os.cpu_count()} CPUs, {K.current_variant()} selected", "variants": K.variants(),
            "membw": {str(t): v for t, v in membw(threads).items()}, "rows": []}
    # workers load a private copy of libnano, so rebuilding the tree cannot crash a long run
    import shutil
    libcopy = os.path.join(tempfile.mkdtemp(), "libnano.so")
    shutil.copy(K._native.lib_path(), libcopy)
    os.environ["NANO_LIB"] = libcopy
    os.environ["NANO_BENCH_VARIANTS"] = args.variants
    os.environ.setdefault("NANO_BENCH_PARTIAL", os.path.join(os.path.abspath(args.out), "kernels.partial.jsonl"))
    for t in threads:
        print(f"threads={t} ...", file=sys.stderr)
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", str(t), "--peers", args.peers or "none"]
        if args.quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write("".join(l + "\n" for l in out.stderr.splitlines() if l.startswith("  ")))
        sys.stderr.flush()
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"worker for {t} threads failed")
        data["rows"] += json.loads(out.stdout.strip().splitlines()[-1])
    md = report(data)
    print(md)
    with open(os.path.join(args.out, "kernels.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "kernels.json"), "w") as f:
        json.dump(data, f, indent=1)
    plot(data, os.path.join(args.out, "kernels.png"))
    print(f"wrote {args.out}/kernels.md, kernels.json, kernels.png", file=sys.stderr)


if __name__ == "__main__":
    main()
