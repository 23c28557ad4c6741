"""Re-score quant_quality rows on every window of the held-out eval split (the table uses the
first 4): the fp reference and the given rows' .nano files from quant_quality's work dir.

    python benchmarks/quant_eval_all.py --model smollm2 --rows REGEX [--work DIR] [--windows 18]

Prints one line per row (perplexity, change vs fp, per-window ratio statistics) and writes
benchmarks/results/quant_eval_all-MODEL.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from quant_quality import MODELS, ROWS, eval_windows  # noqa: E402
from nano_runtime.formats import nano_file as nf  # noqa: E402
from nano_runtime.loader import load_model  # noqa: E402


def window_nll(model, windows) -> list:
    """Per-window (sum of token NLL, tokens), scored like quant_quality.perplexity."""
    out = []
    with torch.no_grad():
        for w in windows:
            t = torch.as_tensor(w)[None]
            logits = model(t)[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, t[0, 1:], reduction="sum")
            out.append((float(nll), t.shape[1] - 1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    ap.add_argument("--rows", required=True, help="regex over quant_quality row labels")
    ap.add_argument("--work", default="/tmp/nano_quant_quality")
    ap.add_argument("--windows", type=int, default=10 ** 6, help="at most this many windows")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--student", default=None, help="checkpoint directory of --model student")
    a = ap.parse_args()
    if a.student:
        MODELS["student"] = os.path.abspath(a.student)
    name = MODELS[a.model]
    tok = load_model(name, with_model=False).tokenizer
    windows = eval_windows(tok, a.windows, a.ctx)
    res = {"windows": len(windows), "ctx": a.ctx, "rows": {}}
    fp = window_nll(load_model(name).model, windows)
    tot = lambda r: math.exp(sum(n for n, _ in r) / sum(t for _, t in r))
    res["rows"]["fp"] = {"ppl": tot(fp), "tokens": sum(t for _, t in fp)}
    print(f"{len(windows)} windows x {a.ctx}: fp {tot(fp):.4f}", flush=True)
    for label, kind, _ in ROWS[a.model]:
        if kind != "nano" or not re.search(a.rows, label):
            continue
        path = os.path.join(a.work, f"{a.model}-{re.sub(r'[^a-z0-9]+', '-', label.lower())}.nano")
        if not os.path.exists(path):
            print(f"skip {label}: {path} not found", flush=True)
            continue
        r = window_nll(nf.load_reference(path, use_kernels=False).model, windows)
        ratios = sorted(math.exp((n - nf_) / t) for (n, t), (nf_, _) in zip(r, fp))
        better = sum(x < 1 for x in ratios)
        res["rows"][label] = {"ppl": tot(r), "vs_fp": tot(r) / tot(fp) - 1,
                              "windows_better_than_fp": better,
                              "window_ratio_min": ratios[0], "window_ratio_max": ratios[-1]}
        print(f"{label}: {tot(r):.4f} ({100 * (tot(r) / tot(fp) - 1):+.2f}% vs fp); "
              f"better than fp in {better}/{len(r)} windows, per-window ratio "
              f"{ratios[0]:.3f}-{ratios[-1]:.3f}", flush=True)
    out = os.path.join(HERE, "results", f"quant_eval_all-{a.model}.json")
    prev = json.load(open(out)) if os.path.exists(out) else {}
    if prev.get("windows") == res["windows"] and prev.get("ctx") == res["ctx"]:
        prev["rows"].update(res["rows"])
        res = prev
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
