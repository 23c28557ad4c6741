"""Prune SmolLM2-135M-Instruct to a <= 50% student and recover it: KD against CE.

One arm per process, so the arms can run side by side under the same machine
load (that is how the figures in benchmarks/results/distill.md were made):

    nice -n 5 python benchmarks/distill_run.py --arm kd --minutes 45 --threads 1 &
    nice -n 5 python benchmarks/distill_run.py --arm ce --minutes 45 --threads 1 &
    wait; python benchmarks/distill_run.py --report

Both arms start from the same pruned student (same spec, same calibration
text) and see the same sequences in the same order. Their wall-clock budget is
the same and counts everything after pruning: for KD that includes building
the teacher's top-k cache once. Text: CPython's reference docs
(nano_runtime.data): the "train" split for training, "calib" for the pruning
statistics, "eval" (disjoint topics) for held-out perplexity, scored in
windows of 256 tokens (BOS + 255) exactly like `nano eval ppl --ctx 256`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")

DEFAULTS = dict(spec="prune:hidden=640,heads=6,kv_heads=3", seq_len=256, batch=8, lr=1e-3,
                warmup=10, temperature=1.0, topk=64, loss="forward_kl")


def run_arm(a):
    import torch
    torch.set_num_threads(a.threads)
    from nano_runtime.data import english_text
    from nano_runtime.distill.data import build_topk_cache, prepare, TopKCache
    from nano_runtime.distill.prune import prune_model
    from nano_runtime.distill.trainer import DistillConfig, Trainer
    from nano_runtime.loader import build_model, load_model

    t_start = time.perf_counter()
    lm = load_model("smollm2-135m-instruct")
    teacher, tok = lm.model.eval(), lm.tokenizer
    cfg, state, kept = prune_model(teacher, tok, a.spec, english_text("calib"))
    student = build_model(cfg, state)
    data = prepare(tok, english_text("train"), a.seq_len, held_text=english_text("eval"))
    ratio = cfg.num_params(False) / teacher.cfg.num_params(False)
    out = os.path.join(a.work, a.arm)
    os.makedirs(out, exist_ok=True)
    t_ready = time.perf_counter()
    cache = None
    if a.arm == "kd":
        path = os.path.join(out, "teacher_topk.safetensors")
        build_topk_cache(teacher, data.train, path, k=a.topk, temperature=a.temperature)
        cache = TopKCache(path, data.train, a.temperature)
    cache_s = time.perf_counter() - t_ready
    # steps sized so the cosine schedule ends near the budget; the time cap stops the run
    dc = DistillConfig(steps=a.steps, batch=a.batch, lr=a.lr, warmup=a.warmup,
                       loss=a.loss, temperature=a.temperature,
                       ce_weight=1.0 if a.arm == "ce" else a.ce_weight,
                       eval_every=a.eval_every, ckpt_every=a.eval_every, seed=0,
                       freeze_embeddings=True, max_minutes=max(0.5, a.minutes - cache_s / 60))
    tr = Trainer(student, dc, data, out, teacher=teacher, cache=cache, kept_layers=kept,
                 tokenizer=tok)
    tr.resume()
    base = tr.evaluate() if tr.step == 0 else None
    teacher_ppl = None
    if a.arm == "kd":
        # the teacher's own held-out figures, on the same windows
        import math
        nll, n = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(data.held), 8):
                b = data.held[s:s + 8]
                lg = teacher(b[:, :-1]).float()
                nll += float(torch.nn.functional.cross_entropy(
                    lg.reshape(-1, lg.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))
                n += b[:, 1:].numel()
        teacher_ppl = math.exp(nll / n)
    res = tr.train()
    tr.save_student(os.path.join(out, "student"), tok)
    doc = {"arm": a.arm, "spec": a.spec, "kept_layers": kept, "student_config": cfg.to_dict(),
           "nonembed_params": cfg.num_params(False), "teacher_nonembed": teacher.cfg.num_params(False),
           "ratio": ratio, "cache_seconds": cache_s, "pruned_eval": base, "teacher_ppl": teacher_ppl,
           "train_tokens_unique": int(data.train[:, 1:].numel()), "held_tokens": int(data.held[:, 1:].numel()),
           "threads": a.threads, "history": tr.history, "result": res,
           "settings": {k: getattr(a, k) for k in DEFAULTS}, "total_seconds": time.perf_counter() - t_start}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"distill_{a.arm}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps({k: doc[k] for k in ("arm", "ratio", "cache_seconds", "pruned_eval", "teacher_ppl",
                                          "result")}))


def _at(ev, key, value):
    """The last eval row with row[key] <= value."""
    rows = [r for r in ev if r[key] <= value + 1e-9]
    return rows[-1] if rows else None


def report():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kd = json.load(open(os.path.join(RESULTS, "distill_kd.json")))
    ce = json.load(open(os.path.join(RESULTS, "distill_ce.json")))
    tppl = kd["teacher_ppl"]
    pre = kd["pruned_eval"]
    kd_ev, ce_ev = kd["history"]["eval"], ce["history"]["eval"]
    kd_last = kd_ev[-1]
    # wall clock counts the KD arm's teacher cache
    kd_wall = kd_last[2] + kd["cache_seconds"]
    ce_tok = _at(ce_ev, 1, kd_last[1])
    ce_wall = _at([[r[0], r[1], r[2] + ce["cache_seconds"]] + r[3:] for r in ce_ev], 2, kd_wall)
    rows = [("teacher SmolLM2-135M-Instruct", tppl, 1.0, None, None, None),
            ("pruned student, untrained", pre["ppl"], pre.get("agreement"), 0, 0, None),
            ("pruned + KD (top-k cache)", kd_last[3], kd_last[4], kd_last[1], kd_wall, kd_last[0]),
            ("pruned + CE, same tokens", ce_tok[3], ce_tok[4], ce_tok[1], ce_tok[2], ce_tok[0]) if ce_tok else None,
            ("pruned + CE, same wall-clock", ce_wall[3], ce_wall[4], ce_wall[1], ce_wall[2], ce_wall[0]) if ce_wall else None]
    lines = [f"Student `{kd['spec']}`: {kd['nonembed_params'] / 1e6:.1f}M non-embedding parameters "
             f"= {kd['ratio'] * 100:.1f}% of the teacher's {kd['teacher_nonembed'] / 1e6:.1f}M; "
             f"{kd['train_tokens_unique']} unique training tokens, {kd['held_tokens']} held-out tokens "
             f"(windows of {kd['settings']['seq_len']}); {kd['threads']} thread(s) per arm, arms run side by side.",
             "", "| model | held-out ppl | x teacher | top-1 agreement | tokens | wall s | steps |",
             "|---|---|---|---|---|---|---|"]
    for r in filter(None, rows):
        name, p, ag, toks, wall, st = r
        lines.append(f"| {name} | {p:.2f} | {p / tppl:.2f} | "
                     f"{'-' if ag is None else f'{ag:.3f}'} | {'-' if toks is None else toks} | "
                     f"{'-' if wall is None else f'{wall:.0f}'} | {'-' if st is None else st} |")
    lines.append("")
    lines.append(f"KD teacher top-k cache: {kd['cache_seconds']:.0f} s (counted in KD's wall clock).")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(RESULTS, "distill.md"), "w") as f:
        f.write(text + "\n")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for doc, name, off in ((kd, "KD", kd["cache_seconds"]), (ce, "CE only", ce["cache_seconds"])):
        ev = doc["history"]["eval"]
        ax[0].plot([0] + [r[1] for r in ev], [pre["ppl"]] + [r[3] for r in ev], marker="o", ms=3, label=name)
        ax[1].plot([off] + [r[2] + off for r in ev], [pre["ppl"]] + [r[3] for r in ev], marker="o", ms=3, label=name)
    for x in ax:
        x.axhline(tppl, color="k", ls="--", lw=1, label="teacher")
        x.axhline(2 * tppl, color="r", ls=":", lw=1, label="2x teacher")
        x.set_yscale("log")
        x.set_ylabel("held-out perplexity")
        x.legend()
    ax[0].set_xlabel("training tokens")
    ax[1].set_xlabel("wall-clock seconds (KD includes the teacher cache)")
    fig.suptitle(f"SmolLM2-135M -> {kd['spec']} ({kd['ratio'] * 100:.0f}% non-embedding params)")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "distill.png"), dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arm", choices=["kd", "ce"])
    p.add_argument("--report", action="store_true")
    p.add_argument("--minutes", type=float, default=45)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--ce-weight", type=float, default=0.0)
    p.add_argument("--work", default="/tmp/nano_distill_bench")
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = p.parse_args()
    if a.report:
        report()
    elif a.arm:
        run_arm(a)
    else:
        p.error("give --arm kd|ce or --report")


if __name__ == "__main__":
    main()
