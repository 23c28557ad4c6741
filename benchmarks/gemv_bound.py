"""The int4 GEMV kernels alone against the DRAM read probe: how much of decode's gap to the
memory-bandwidth bound is in the kernels rather than in the engine around them.

    python benchmarks/gemv_bound.py [--threads 2] [--rounds 30] [--layers 16] [--out DIR]

Compiles benchmarks/gemv_bound.c against the built libnano and benchmarks/membw.c, then runs
it: nano-1-shaped int4 layers (group 32, fp16 scales and mins; --layers of them, 44 MB each,
far beyond the L3), one decode-shaped GEMV pass over all of them per round (the same fused
dispatches as the engine's forward pass, nothing else), each pass between two runs of the
DRAM probe that benchmarks/decode_bound.py uses. Compare its "% of bound" with
decode_bound.py's on nano-1: equal figures mean the engine loses nothing around its kernels.
Each round also reads the same weight buffers with plain wide loads (no arithmetic), with and
without the GEMV's software prefetch, in a rotating order with the GEMV pass: the GEMV's rate
as a share of a plain read of the very same pages, and what the prefetch alone costs a plain
read. Output: a markdown table on stdout and OUT/gemv_bound.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    if a.threads < 1 or a.rounds < 1 or a.layers < 1:
        print("error: --threads, --rounds and --layers must be >= 1", file=sys.stderr)
        return 2
    from nano_runtime._native import lib_path
    cc = shutil.which("cc") or shutil.which("gcc")
    lib = lib_path()
    exe = os.path.join(tempfile.mkdtemp(), "gemv_bound")
    subprocess.run([cc, "-O2", "-march=native", "-I", os.path.join(ROOT, "kernels", "include"),
                    os.path.join(HERE, "gemv_bound.c"), os.path.join(HERE, "membw.c"), lib,
                    "-Wl,-rpath," + os.path.dirname(lib), "-pthread", "-o", exe], check=True)
    t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    p = subprocess.run([exe, str(a.threads), str(a.rounds), str(a.layers)], capture_output=True,
                       text=True)
    if p.returncode:
        print(p.stderr.strip() or f"error: gemv_bound exited with {p.returncode}", file=sys.stderr)
        return 1
    lines = p.stdout.split("\n")
    nbytes = float(lines[0].split()[1])
    rows = [tuple(map(float, ln.split())) for ln in lines[1:] if ln.strip()]
    g, pr, ratio, plain, plain_pf = zip(*rows)

    def quart(v):
        q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
        return f"{statistics.median(v):.0%} ({q[0]:.0%}-{q[2]:.0%})"

    of_plain = [a / b for a, b in zip(g, plain)]
    pf_cost = [a / b for a, b in zip(plain_pf, plain)]
    text = "\n".join([
        f"# int4 GEMV kernels alone vs the DRAM read probe, {a.threads} thread(s)", "",
        f"{t0}, load average at start {load:.1f}. {a.layers} nano-1-shaped layers "
        f"({nbytes / 1e6:.0f} MB of codes, scales and mins), {a.rounds} rounds; each: one GEMV "
        "pass, one plain read of the same buffers and one plain read with the GEMV's software "
        "prefetch (order rotating), then the probe (1 GiB, wide loads). Ratios are per round, "
        "medians (quartiles).", "",
        "| GEMV GB/s median (min-max) | probe GB/s median | GEMV % of bound | best round | "
        "plain read GB/s | plain read + prefetch GB/s | GEMV / plain read | "
        "plain + prefetch / plain |", "|---|---|---|---|---|---|---|---|",
        f"| {statistics.median(g):.1f} ({min(g):.1f}-{max(g):.1f}) | {statistics.median(pr):.1f} "
        f"| {quart(ratio)} | {max(ratio):.0%} | {statistics.median(plain):.1f} | "
        f"{statistics.median(plain_pf):.1f} | {quart(of_plain)} | {quart(pf_cost)} |", ""])
    print(text)
    os.makedirs(a.out, exist_ok=True)
    tmp = os.path.join(a.out, "gemv_bound.md.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(a.out, "gemv_bound.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
