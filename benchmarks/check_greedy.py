"""Greedy agreement of the native engine with the PyTorch reference on the same packed weights.

    python benchmarks/check_greedy.py [--models smollm2-135m-instruct,gemma3-270m,tiny-llama,tiny-gemma3]
        [--prompts 20] [--tokens 64] [--long 4] [--int8] [--out benchmarks/results]

For each model: N prompts (chat questions and real-text continuations from
nano_runtime.data; for Gemma 3 270M `--long` of them longer than its 512-token sliding
window), 64 greedy tokens from the engine with fp32 activations (`precise`, the semantics
the issue compares: the reference runs the same packed weights in fp32; `--int8` adds the
default int8-activation rows), then the reference scores prompt + the engine's tokens in one forward
(teacher forcing): the sequences are identical exactly when each engine token is the
reference's argmax. A disagreement is reported with its reference margin (top logit minus
the logit of the engine's token): a near-tie, or a real difference. Also the max |logit|
difference on the prompt. Writes greedy.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nano_runtime.data import english_text  # noqa: E402
from nano_runtime.engine import Engine, resolve_nano  # noqa: E402
from nano_runtime.formats.nano_file import load_reference  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Give me three tips for staying healthy.",
             "Explain photosynthesis in simple terms.", "Write a haiku about the sea.",
             "What is a prime number?", "How do I boil an egg?", "Name three planets.",
             "Why is the sky blue?", "Translate 'good morning' into Spanish.",
             "What does a compiler do?"]


def prompts_for(tok, n: int, n_long: int, chat: bool):
    text = english_text("eval")
    paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 200]
    out = []
    for i in range(n - n_long):
        if chat and i % 2 == 0 and tok.chat_template:
            out.append(tok.encode_chat([{"role": "user", "content": QUESTIONS[(i // 2) % len(QUESTIONS)]}]))
        else:
            out.append(tok.encode(paras[i % len(paras)])[:120])
    ids = tok.encode(text)
    for j in range(n_long):                      # longer than a 512-token window
        s = 1000 + 900 * j
        out.append(([tok.bos_id] if tok.add_bos and tok.bos_id is not None else []) + ids[s:s + 700])
    return out


LONG_FIRST = False
THREADS = 2


def check(model: str, n: int, n_tok: int, n_long: int, modes=(True,)) -> list:
    path = resolve_nano(model)
    ref = load_reference(path, use_kernels=False)
    tok = ref.tokenizer
    rows = []
    for precise in modes:
        eng = Engine(path, threads=THREADS, precise=precise, n_ctx=1024)
        exact, tie_div, real_div, worst_margin, max_diff = 0, 0, 0, 0.0, 0.0
        ps = prompts_for(tok, n, n_long, "instruct" in model)
        if LONG_FIRST:                          # the window-crossing prompts first
            ps = ps[n - n_long:] + ps[:n - n_long]
        for ids in ps:
            got, _, _ = eng.generate_ids(ids, n_tok, None, stop_ids=[])
            with torch.no_grad():
                lg = ref.model(torch.tensor([ids + got]))[0].float().numpy()
            eng_lg = eng.logits_of(ids)
            max_diff = max(max_diff, float(np.abs(eng_lg - lg[:len(ids)]).max()))
            gl = lg[len(ids) - 1:len(ids) - 1 + len(got)]
            mism = [float(gl[i].max() - gl[i][got[i]]) for i in range(len(got))
                    if int(gl[i].argmax()) != got[i]]
            if not mism:
                exact += 1
            else:
                worst_margin = max(worst_margin, max(mism))
                if max(mism) < 0.05 * float(np.abs(gl).max()) * 0.1:
                    tie_div += 1
                else:
                    real_div += 1
            print(f"{model} precise={precise} len={len(ids)}: "
                  f"{'identical' if not mism else f'{len(mism)} steps differ, margins {mism[:3]}'}",
                  file=sys.stderr)
        eng.close()
        rows.append((model, "fp32 act" if precise else "int8 act", n, n_tok, exact, tie_div,
                     real_div, worst_margin, max_diff))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m,tiny-llama,tiny-gemma3")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--long", type=int, default=4, help="prompts of 700 tokens (Gemma window 512)")
    ap.add_argument("--int8", action="store_true", help="also the int8-activation rows")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long-first", action="store_true",
                    help="run the long prompts first (a run cut short still covers them)")
    a = ap.parse_args()
    global LONG_FIRST, THREADS
    LONG_FIRST, THREADS = a.long_first, a.threads
    lines = ["| model | activations | prompts | tokens | identical | differ at near-tie "
             "(margin < 0.5% max logit) | differ | worst ref margin at a differing step | "
             "max abs logit diff on prompts |", "|---|---|---|---|---|---|---|---|---|"]
    os.makedirs(a.out, exist_ok=True)
    for m in a.models.split(","):
        for r in check(m, a.prompts, a.tokens, a.long, (True, False) if a.int8 else (True,)):
            lines.append("| " + " | ".join(str(x) if not isinstance(x, float) else f"{x:.4g}"
                                           for x in r) + " |")
            print(lines[-1], file=sys.stderr)
        text = "\n".join(["# Greedy agreement: engine vs PyTorch reference (same packed weights)",
                          ""] + lines)
        tmp = os.path.join(a.out, "greedy.md.tmp")
        with open(tmp, "w") as f:                 # after every model: a partial run keeps rows
            f.write(text + "\n")
        os.replace(tmp, os.path.join(a.out, "greedy.md"))
    print(text)


if __name__ == "__main__":
    main()
