"""Decode speed against the memory-bandwidth bound, measured side by side in one process.

    python benchmarks/decode_bound.py [--model nano-1] [--threads 2] [--rounds 30]
        [--tokens 4] [--modes mmap,no-mmap] [--out benchmarks/results]

Decode is memory-bound: each step streams every weight once, so its ceiling is the machine's
DRAM read bandwidth divided by the bytes a step reads (bench_engine.decode_bytes: all tensors,
a tied embedding read whole as the output head, plus the f16 KV rows attended to). This
machine's bandwidth drifts by +-15% within minutes (other tenants of the host), so a bound
measured a minute apart from the decode run is a poor yardstick. Here every round runs the
DRAM read probe (benchmarks/membw.c: wide loads over 1 GiB with the same thread count, one
timed pass by default, --probe-passes N takes the best of N), then per load mode (the order
alternates) `--tokens` greedy decode steps followed by the probe again, and the figure is
the per-batch ratio decode GB/s / mean of the probes just before and just after the batch,
median over rounds (the ratio to the probe before alone is reported too).

Load modes: `mmap` (default engine: the .nano mapped from the page cache, 4 KiB pages) and
`no-mmap` (Engine(no_mmap=True): the file read into anonymous memory advised for transparent
huge pages, as numpy's 1 GiB probe buffer is).
Output: a markdown table on stdout and OUT/decode_bound.md, raw rounds in decode_bound.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nano-1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=4, help="decode steps per mode per round")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens before decoding")
    ap.add_argument("--modes", default="mmap,no-mmap")
    ap.add_argument("--probe-passes", type=int, default=1,
                    help="DRAM probe passes over 1 GiB per round, best taken (default 1: one timed "
                         "sample each side, like the decode batch it is compared with)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    if not modes or any(m not in ("mmap", "no-mmap") for m in modes):
        print("error: --modes takes mmap and/or no-mmap", file=sys.stderr)
        return 2
    if a.rounds < 1 or a.tokens < 1 or a.threads < 1 or a.prompt < 1:
        print("error: --rounds, --tokens, --threads and --prompt must be >= 1", file=sys.stderr)
        return 2
    import numpy as np

    from bench_engine import decode_bytes, dram_probe
    from nano_runtime.engine import Engine, resolve_nano
    from nano_runtime.progress import progress_bar
    path = resolve_nano(a.model)
    engines = {}
    for m in modes:
        t0 = time.perf_counter()
        e = Engine(path, threads=a.threads, tokenizer=False, no_mmap=(m == "no-mmap"),
                   n_ctx=a.prompt + a.rounds * a.tokens + 16)
        engines[m] = (e, time.perf_counter() - t0)   # load only (no-mmap: reads the file)
        e.reset()
        e.eval([int(x) for x in np.random.RandomState(0).randint(10, 30000, a.prompt)])
    pos = a.prompt + a.rounds * a.tokens // 2
    nbytes = decode_bytes(path, pos)
    rounds = []
    with progress_bar(total=a.rounds, desc="rounds", unit="round") as bar:
        for r in range(a.rounds):
            probes = [dram_probe(a.threads, a.probe_passes)]
            rec = {"dram_gb_s": probes[0]}
            for m in (modes if r % 2 == 0 else modes[::-1]):
                e = engines[m][0]
                t = time.perf_counter()
                for _ in range(a.tokens):
                    e.eval([int(np.argmax(e.last_logits()))])
                dt = time.perf_counter() - t
                probes.append(dram_probe(a.threads, a.probe_passes))
                # the bound for this decode batch: the probes just before and just after it
                # (the host's bandwidth drifts within seconds; one side alone is a noisier
                # yardstick, kept as "of_probe_before")
                bound = (probes[-2] + probes[-1]) / 2
                rec[m] = {"tok_s": a.tokens / dt, "gb_s": nbytes["total"] * a.tokens / dt / 1e9,
                          "dram_gb_s": bound}
                rec[m]["of_bound"] = rec[m]["gb_s"] / bound
                rec[m]["of_probe_before"] = rec[m]["gb_s"] / probes[-2]
            rec["probes"] = probes
            rounds.append(rec)
            bar.update(1)
    for e, _ in engines.values():
        e.close()
    dram = [p for r in rounds for p in r["probes"]]
    md = [f"# Decode vs the memory-bandwidth bound: {a.model}, {a.threads} thread(s)", "",
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at start "
          f"{os.getloadavg()[0]:.1f}. {a.rounds} rounds; each: the DRAM read probe "
          f"(best of {a.probe_passes} pass(es) over 1 GiB), then per load mode (order "
          f"alternating) {a.tokens} greedy decode steps and the probe again; the bound for a "
          f"decode batch is the mean of the probes either side of it. After a "
          f"{a.prompt}-token prompt. Bytes per step: {nbytes['total'] / 1e6:.0f} MB "
          f"(weights {nbytes['weights'] / 1e6:.0f} MB + KV {nbytes['kv'] / 1e6:.1f} MB at "
          f"position {pos}).", "",
          f"DRAM read probe: median {statistics.median(dram):.1f} GB/s "
          f"(min {min(dram):.1f}, max {max(dram):.1f}).", "",
          "| load mode | load s | decode tok/s median (min-max) | decode GB/s median | "
          "% of bound, median of per-round ratios (quartiles) | % of bound, best round | "
          "% of the probe before only, median |",
          "|---|---|---|---|---|---|---|"]
    for m in modes:
        ts = [r[m]["tok_s"] for r in rounds]
        gb = [r[m]["gb_s"] for r in rounds]
        ob = [r[m]["of_bound"] for r in rounds]
        q = statistics.quantiles(ob, n=4) if len(ob) > 1 else [ob[0]] * 3
        pb = [r[m]["of_probe_before"] for r in rounds]
        md.append(f"| {m} | {engines[m][1]:.2f} | {statistics.median(ts):.2f} ({min(ts):.2f}-"
                  f"{max(ts):.2f}) | {statistics.median(gb):.1f} | {statistics.median(ob):.0%} "
                  f"({q[0]:.0%}-{q[2]:.0%}) | {max(ob):.0%} | {statistics.median(pb):.0%} |")
    if len(modes) == 2:
        rel = [r["no-mmap"]["tok_s"] / r["mmap"]["tok_s"] for r in rounds]
        md += ["", f"no-mmap / mmap decode, per round: median {statistics.median(rel):.2f}x "
                   f"(min {min(rel):.2f}x, max {max(rel):.2f}x; no-mmap faster in "
                   f"{sum(x > 1 for x in rel)} of {len(rel)} rounds)."]
    text = "\n".join(md) + "\n"
    print(text)
    os.makedirs(a.out, exist_ok=True)
    for name, data in (("decode_bound.md", text),
                       ("decode_bound.json", json.dumps({"args": vars(a), "bytes": nbytes,
                                                         "rounds": rounds}, indent=1))):
        tmp = os.path.join(a.out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, os.path.join(a.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
