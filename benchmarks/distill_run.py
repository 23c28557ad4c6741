"""Prune SmolLM2-135M-Instruct to a <= 50% student and recover it: KD against CE.

    python benchmarks/distill_run.py --prep                     # prune, score teacher + student
    python benchmarks/distill_run.py --arm kd --topk-cache 64 --ce-weight 0.5 &
    python benchmarks/distill_run.py --arm cew &
    wait; python benchmarks/distill_run.py --arm ce              # KD's steps, after the pair
    python benchmarks/distill_run.py --report                    # table + plot
    python benchmarks/distill_run.py --paired                    # per-window KD vs CE
    python benchmarks/distill_run.py --export --arm kd --quant-method gptq

(the session-7 run, benchmarks/results/distill.md: 1 thread per arm, kd and cew side by side
on the 2 cores for 45 minutes, then ce alone; an arm started on a busy machine compares
nothing.)

--prep prunes the teacher once (calibration: the "calib" split) and saves the
student, the teacher's held-out perplexity and its top-1 predictions. The three
arms then run side by side, under the same machine load, from that same student
over the same sequences in the same order:

    kd   forward KL against the live teacher (or its cached top-k with --topk-cache);
         times its first step and sizes its cosine schedule to the budget
    ce   cross-entropy only, the same number of steps (same tokens, same schedule)
    cew  cross-entropy only, as many steps as fit in the same wall clock (the
         teacher's cost counted): its cosine schedule follows training time and it
         stops when the budget is spent

Text: CPython's reference docs (nano_runtime.data): "train" for training, "eval"
(disjoint topics) held out, scored in windows of 256 tokens (BOS + 255) like
`nano eval ppl --ctx 256`; --held-seqs windows of it are used throughout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")


def held_eval(model, held, top1=None, batch=4):
    """(ppl, agreement with top1 [M, T-1] or None, argmax) over held [M, T]."""
    import torch
    nll, n, agree, preds = 0.0, 0, 0, []
    with torch.no_grad():
        for s in range(0, len(held), batch):
            b = held[s:s + batch]
            lg = model(b[:, :-1]).float()
            nll += float(torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))
            n += b[:, 1:].numel()
            am = lg.argmax(-1)
            preds.append(am)
            if top1 is not None:
                agree += int((am == top1[s:s + len(b)]).sum())
    return math.exp(nll / n), (agree / n if top1 is not None else None), torch.cat(preds)


def load_data(a, tok):
    from nano_runtime.data import english_text
    from nano_runtime.distill.data import prepare
    data = prepare(tok, english_text("train"), a.seq_len, held_text=english_text("eval"))
    data.held = data.held[:a.held_seqs]
    return data


def prep(a):
    import torch
    torch.set_num_threads(a.threads)
    from safetensors.torch import save_file
    from nano_runtime.data import english_text
    from nano_runtime.distill.prune import prune_model
    from nano_runtime.formats.checkpoint import save_checkpoint
    from nano_runtime.loader import build_model, load_model
    t0 = time.perf_counter()
    lm = load_model("smollm2-135m-instruct")
    teacher, tok = lm.model.eval(), lm.tokenizer
    cfg, state, kept = prune_model(teacher, tok, a.spec, english_text("calib"), n_seqs=a.calib_seqs)
    save_checkpoint(os.path.join(a.work, "pruned"), cfg, state, tok)
    t_prune = time.perf_counter() - t0
    data = load_data(a, tok)
    tppl, _, top1 = held_eval(teacher, data.held)
    sppl, sagree, _ = held_eval(build_model(cfg, state).eval(), data.held, top1)
    save_file({"top1": top1.contiguous()}, os.path.join(a.work, "teacher_top1.safetensors"))
    doc = {"spec": a.spec, "kept_layers": kept, "nonembed_params": cfg.num_params(False),
           "teacher_nonembed": teacher.cfg.num_params(False),
           "ratio": cfg.num_params(False) / teacher.cfg.num_params(False),
           "teacher_ppl": tppl, "pruned_ppl": sppl, "pruned_agreement": sagree,
           "held_tokens": int(data.held[:, 1:].numel()), "train_tokens": int(data.train[:, 1:].numel()),
           "prune_seconds": t_prune, "prep_seconds": time.perf_counter() - t0}
    with open(os.path.join(a.work, "prep.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(doc))


def run_arm(a):
    import torch
    torch.set_num_threads(a.threads)
    from safetensors.torch import load_file
    from nano_runtime.distill.data import TopKCache, build_topk_cache
    from nano_runtime.distill.trainer import DistillConfig, Trainer
    from nano_runtime.loader import load_model

    teacher = load_model("smollm2-135m-instruct").model.eval() if a.arm == "kd" else None
    while not os.path.exists(os.path.join(a.work, "prep.json")):   # arms may start before --prep ends
        time.sleep(5)
    pre = json.load(open(os.path.join(a.work, "prep.json")))
    st = load_model(os.path.join(a.work, "pruned"))
    student, tok = st.model, st.tokenizer
    data = load_data(a, tok)
    out = os.path.join(a.work, a.arm)
    t_ready = time.perf_counter()
    cache = None
    if a.arm == "kdmix":    # KD + CE mix from the kd arm's top-k cache (its teacher time counted)
        while not os.path.exists(os.path.join(a.work, "plan.json")):
            time.sleep(5)
        cache = TopKCache(os.path.join(a.work, "kd", "teacher_topk.safetensors"), data.train,
                          a.temperature)
    if a.arm == "kd" and a.topk_cache:
        path = os.path.join(out, "teacher_topk.safetensors")
        os.makedirs(out, exist_ok=True)
        build_topk_cache(teacher, data.train, path, k=a.topk_cache, temperature=a.temperature)
        cache = TopKCache(path, data.train, a.temperature)
    cache_s = time.perf_counter() - t_ready
    if a.arm == "kdmix":
        cache_s = json.load(open(os.path.join(a.work, "plan.json")))["cache_s"]
    dc = DistillConfig(steps=10 ** 6, batch=a.batch, lr=a.lr, warmup=a.warmup, loss=a.loss,
                       temperature=a.temperature, ce_weight=a.ce_weight if a.arm in ("kd", "kdmix") else 1.0,
                       eval_every=0, ckpt_every=0, seed=0, freeze_embeddings=True)
    tr = Trainer(student, dc, data, out, teacher=teacher, cache=cache, tokenizer=tok)
    tr.held_teacher_top1 = load_file(os.path.join(a.work, "teacher_top1.safetensors"))["top1"]
    budget = a.minutes * 60 - cache_s
    plan = os.path.join(a.work, "plan.json")
    if a.arm in ("ce", "kdmix"):
        while not os.path.exists(plan):
            time.sleep(5)
        steps = json.load(open(plan))["steps"]
    else:
        _one_step(tr)                      # a real warmup step, timed
        steps = max(2, int(budget / tr.seconds))
        if a.arm == "kd":
            with open(plan + ".tmp", "w") as f:
                json.dump({"steps": steps, "step_s": tr.seconds, "cache_s": cache_s}, f)
            os.replace(plan + ".tmp", plan)
    dc.steps, dc.eval_every = steps, a.eval_every or max(1, steps // a.evals)
    dc.max_minutes = budget / 60 * 1.15 if a.arm == "kd" else 0
    if a.arm == "cew":      # the whole budget, whatever the load does to step times:
        dc.steps, dc.schedule_minutes = 10 ** 6, budget / 60   # cosine over time, not steps
    print(f"{a.arm}: {steps} steps, budget {budget / 60:.1f} min", flush=True)
    cpu0 = time.process_time()
    res = tr.train()
    res["cpu_seconds"] = time.process_time() - cpu0     # includes evaluations
    tr.save_student(os.path.join(out, "student"), tok)
    doc = {"arm": a.arm, "cache_seconds": cache_s, "history": tr.history, "result": res,
           "threads": a.threads, "settings": vars(a), "prep": pre}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"distill_{a.arm}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps({"arm": a.arm, "result": res, "last_eval": tr.history["eval"][-1:]}))


def export(a):
    """Distilled student -> nano quantize -> .nano -> nano eval ppl, against the fp student."""
    import subprocess
    import torch
    from nano_runtime.data import write_text
    from nano_runtime.distill.prune import pad_hidden
    from nano_runtime.formats.checkpoint import load_checkpoint_config, load_checkpoint_tensors, \
        save_checkpoint
    from nano_runtime.tokenizer import Tokenizer
    src = os.path.join(a.work, a.arm, "student")
    cfg, sd = pad_hidden(load_checkpoint_config(src), load_checkpoint_tensors(src), 32)
    fp = os.path.join(a.work, a.arm, "student32")
    save_checkpoint(fp, cfg, sd, Tokenizer.load(src))
    text = write_text("eval", os.path.join(a.work, "eval.txt"))
    nano = os.path.join(a.work, a.arm, "student.nano")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "nano_runtime", *args], capture_output=True,
                           text=True, env=env)
        if r.returncode:
            raise SystemExit(f"nano {' '.join(args)} failed: {r.stderr.strip()[-500:]}")
        return r.stdout
    t0 = time.perf_counter()
    q = cli("quantize", fp, "-o", nano, "--method", a.quant_method, "--json")
    tq = time.perf_counter() - t0
    win = ["--ctx", str(a.seq_len), "--max-windows", str(a.held_seqs), "--json"]
    res = {"student": src, "quantize": json.loads(q.strip().splitlines()[-1]), "quantize_seconds": tq,
           "fp": json.loads(cli("eval", "ppl", fp, "--text", text, "--backend", "torch", *win))}
    res["nano_native"] = json.loads(cli("eval", "ppl", nano, "--text", text, "--backend", "native", *win))
    res["generate_native"] = json.loads(cli("generate", nano, "--prompt", "The for statement",
                                            "--max-tokens", "24", "--backend", "native", "--json"))
    res["nano_bytes"] = os.path.getsize(nano)
    with open(os.path.join(RESULTS, f"distill_export_{a.arm}.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


def paired(a):
    """Per-window held-out NLL of the final students, KD against each CE arm: in how many
    of the windows KD is better, and a bootstrap 95% interval of the perplexity ratio."""
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    from nano_runtime.loader import load_model
    arms = [n for n in ("kd", "ce", "cew") if os.path.isdir(os.path.join(a.work, n, "student"))]
    if "kd" not in arms:
        raise SystemExit(f"error: no KD student under {a.work}/kd/student")
    st = load_model(os.path.join(a.work, "kd", "student"))
    held = load_data(a, st.tokenizer).held
    nll = {}
    for n in arms:
        m = load_model(os.path.join(a.work, n, "student")).model.eval()
        with torch.no_grad():
            nll[n] = np.array([float(torch.nn.functional.cross_entropy(
                m(w[None, :-1])[0].float(), w[1:], reduction="mean")) for w in held])
    rng = np.random.default_rng(0)
    boot = rng.integers(0, len(held), (10000, len(held)))
    out = {"windows": len(held), "seq_len": a.seq_len,
           "ppl": {n: float(np.exp(v.mean())) for n, v in nll.items()}}
    for n in arms[1:]:
        d = nll["kd"] - nll[n]
        lo, hi = np.percentile(np.exp(d[boot].mean(1)), [2.5, 97.5])
        out[n] = {"kd_better_windows": int((d < 0).sum()), "ratio": float(np.exp(d.mean())),
                  "ci95": [float(lo), float(hi)]}
    with open(os.path.join(RESULTS, "distill_paired.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(paired_table(out))


def paired_table(doc: dict) -> str:
    lines = ["", f"Paired, per held-out window ({doc['windows']} windows of {doc['seq_len']}; "
             "the final students):", "",
             "| KD vs | KD better in windows | ppl ratio KD / CE | bootstrap 95% interval |",
             "|---|---|---|---|"]
    for n, label in (("ce", "CE, same tokens"), ("cew", "CE, same wall-clock (its end)")):
        if n in doc:
            r = doc[n]
            lines.append(f"| {label} | {r['kd_better_windows']} / {doc['windows']} | "
                         f"{r['ratio']:.3f} | {r['ci95'][0]:.3f} - {r['ci95'][1]:.3f} |")
    return "\n".join(lines)


def _one_step(tr):
    """Advance a trainer by exactly one step."""
    want, tr.c.steps = tr.c.steps, tr.step + 1
    tr.train()
    tr.c.steps = want


def _at(ev, key, value):
    """The last eval row with row[key] <= value."""
    rows = [r for r in ev if r[key] <= value + 1e-9]
    return rows[-1] if rows else None


def _best(ev, key, value):
    """The lowest-perplexity eval row with row[key] <= value."""
    rows = [r for r in ev if r[key] <= value + 1e-9]
    return min(rows, key=lambda r: r[3]) if rows else None


def _at_least(ev, key, value, slack=0.02):
    """The first eval row with row[key] >= value (less `slack`), else the last one: the CE
    arm gets at least the KD arm's wall clock."""
    rows = [r for r in ev if r[key] >= value * (1 - slack)]
    return rows[0] if rows else (ev[-1] if ev else None)


def _from_log(a, arm):
    """An arm's eval rows from its log when it did not finish (no wall-clock figures)."""
    import re
    text = open(os.path.join(a.work, f"{arm}.log"), errors="replace").read().replace("\r", "\n")
    rows = [[int(m.group(1)), int(m.group(1)) * a.batch * (a.seq_len - 1), float("nan"),
             float(m.group(2)), float(m.group(3))]
            for m in re.finditer(r"step (\d+): held-out ppl ([\d.]+), agreement ([\d.]+)", text)]
    return {"arm": arm, "cache_seconds": 0.0, "history": {"train": [], "eval": rows},
            "threads": a.threads, "settings": vars(a), "partial": True,
            "prep": json.load(open(os.path.join(a.work, "prep.json")))}


def report(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def load(n):
        p = os.path.join(RESULTS, f"distill_{n}.json")
        return json.load(open(p)) if os.path.exists(p) else _from_log(a, n)
    kd, ce, cew = (load(n) for n in ("kd", "ce", "cew"))
    kdmix = load("kdmix") if os.path.exists(os.path.join(RESULTS, "distill_kdmix.json")) else None
    pre = kd["prep"]
    tppl = pre["teacher_ppl"]
    rows = [("teacher SmolLM2-135M-Instruct", tppl, None, None, None, None),
            ("pruned student, untrained", pre["pruned_ppl"], pre["pruned_agreement"], 0, 0, 0)]
    kd_label = f"KD (forward KL, top-{kd['settings']['topk_cache'] or 'all'})"
    if kd["settings"].get("ce_weight"):
        kd_label += f" + CE, weight {kd['settings']['ce_weight']}"
    arms = [(kd, kd_label)]
    if kdmix:
        arms.append((kdmix, f"KD (forward KL top-{kd['settings']['topk_cache']}) "
                            f"+ CE, weight {kdmix['settings']['ce_weight']}"))
    for doc, label in arms:
        last = doc["history"]["eval"][-1]
        ce_tok = _at(ce["history"]["eval"], 1, last[1])
        if ce_tok[1] < last[1]:        # KD ran further than CE: compare where both evaluated
            last = _at(doc["history"]["eval"], 1, ce_tok[1])
        wall = last[2] + doc["cache_seconds"]
        ce_wall = _at_least(cew["history"]["eval"], 2, wall) if wall == wall else None
        # CE early-stopped: its best evaluation up to that point, picked on the held-out set
        # itself (an optimistic figure for CE)
        ce_tok_best = _best(ce["history"]["eval"], 1, ce_tok[1])
        ce_wall_best = _best(cew["history"]["eval"], 2, ce_wall[2]) if ce_wall else None
        rows += [(f"pruned + {label}", last[3], last[4], last[1], wall, last[0]),
                 ("pruned + CE, same tokens", *(ce_tok[3], ce_tok[4], ce_tok[1], ce_tok[2], ce_tok[0])),
                 ("pruned + CE, same tokens, best eval on the way (early-stopped on held-out)",
                  *(ce_tok_best[3], ce_tok_best[4], ce_tok_best[1], ce_tok_best[2], ce_tok_best[0]))
                 if ce_tok_best is not ce_tok else None,
                 ("pruned + CE, same wall-clock",
                  *(ce_wall[3], ce_wall[4], ce_wall[1], ce_wall[2], ce_wall[0])) if ce_wall else None,
                 ("pruned + CE, same wall-clock, best eval on the way (early-stopped on held-out)",
                  *(ce_wall_best[3], ce_wall_best[4], ce_wall_best[1], ce_wall_best[2],
                    ce_wall_best[0])) if ce_wall_best is not None and ce_wall_best is not ce_wall
                 else None]
    rows.append(("pruned + CE, longest run (" + ("partial" if cew.get("partial") else "end") + ")",
                 *(cew["history"]["eval"][-1][i] for i in (3, 4, 1, 2, 0))))
    partial = [d["arm"] for d in (kd, ce, cew, kdmix) if d and d.get("partial")]
    lines = [f"Student `{pre['spec']}`: {pre['nonembed_params'] / 1e6:.2f}M non-embedding parameters "
             f"= {pre['ratio'] * 100:.1f}% of the teacher's {pre['teacher_nonembed'] / 1e6:.2f}M. "
             f"Held-out: {pre['held_tokens']} tokens of the eval split (windows of "
             f"{kd['settings']['seq_len']}); {kd['threads']} thread per arm; the KD arm and the "
             f"same-wall-clock CE arm ran side by side, the same-tokens CE arm after them (only "
             f"its tokens are compared). Train wall s: training steps (evaluations excluded) plus, "
             f"for KD, building the teacher's top-k cache.",
             "", "| model | held-out ppl | x teacher | top-1 agreement | train tokens | train wall s | steps |",
             "|---|---|---|---|---|---|---|"]
    for name, p, ag, toks, wall, st in filter(None, rows):
        lines.append(f"| {name} | {p:.2f} | {p / tppl:.2f} | {'-' if ag is None else f'{ag:.3f}'} | "
                     f"{'-' if toks is None else toks} | {'-' if wall is None or wall != wall else f'{wall:.0f}'} | "
                     f"{'-' if st is None else st} |")
    if partial:
        lines += ["", f"Arms stopped before their end (figures from their logs, no wall clock): "
                  f"{', '.join(partial)}."]
    pj = os.path.join(RESULTS, "distill_paired.json")
    if os.path.exists(pj):
        lines.append(paired_table(json.load(open(pj))))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(RESULTS, "distill.md"), "w") as f:
        f.write(text + "\n")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for doc, name in ((kd, kd_label), (kdmix, "KD + CE"), (ce, "CE, same steps (run after)"),
                      (cew, "CE, same wall-clock")):
        if doc is None:
            continue
        ev, off = doc["history"]["eval"], doc["cache_seconds"]
        ax[0].plot([0] + [r[1] for r in ev], [pre["pruned_ppl"]] + [r[3] for r in ev], marker="o", ms=3, label=name)
        ax[1].plot([0] + [r[2] + off for r in ev], [pre["pruned_ppl"]] + [r[3] for r in ev], marker="o", ms=3,
                   label=name)
    for x in ax:
        x.axhline(tppl, color="k", ls="--", lw=1, label="teacher")
        x.axhline(2 * tppl, color="r", ls=":", lw=1, label="2x teacher")
        x.set_yscale("log")
        x.set_ylabel("held-out perplexity")
        x.legend()
    ax[0].set_xlabel("training tokens")
    ax[1].set_xlabel("training wall-clock s (KD: teacher included)")
    fig.suptitle(f"SmolLM2-135M -> {pre['spec']} ({pre['ratio'] * 100:.0f}% non-embedding params)")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "distill.png"), dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prep", action="store_true")
    p.add_argument("--arm", choices=["kd", "ce", "cew", "kdmix"])
    p.add_argument("--report", action="store_true")
    p.add_argument("--paired", action="store_true", help="per-window KD vs CE comparison of the "
                   "final students")
    p.add_argument("--export", action="store_true", help="quantize the --arm student, eval fp vs .nano")
    p.add_argument("--quant-method", default="rtn")
    p.add_argument("--spec", default="prune:hidden=504")
    p.add_argument("--minutes", type=float, default=45)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--loss", default="forward_kl")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--ce-weight", type=float, default=0.0)
    p.add_argument("--topk-cache", type=int, default=0, help="KD from a top-k cache of the train split")
    p.add_argument("--evals", type=int, default=8, help="evaluations per arm")
    p.add_argument("--eval-every", type=int, default=0, help="steps between evaluations "
                   "(default: steps / --evals)")
    p.add_argument("--held-seqs", type=int, default=32)
    p.add_argument("--calib-seqs", type=int, default=8)
    p.add_argument("--work", default="/tmp/nano_distill_bench")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.prep:
        prep(a)
    elif a.export:
        export(a)
    elif a.arm:
        run_arm(a)
    elif a.paired:
        paired(a)
    elif a.report:
        report(a)
    else:
        p.error("give --prep, --arm kd|ce|cew or --report")


if __name__ == "__main__":
    main()
