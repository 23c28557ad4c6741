"""Record llama.cpp's outputs on the real models, as golden files for the tests.

    pip install llama-cpp-python        # builds llama.cpp (~6 min on 2 cores)
    python tests/golden/record_llamacpp.py [smollm2-135m-instruct gemma3-270m]

For each model it writes tests/golden/<model>.llamacpp.json with
* "tokenizer": >= 1,000 varied lines (prose, code, numbers, whitespace runs,
  accents, CJK, emoji, other scripts) and llama.cpp's ids for each
  (``Llama.tokenize(line, add_bos=False, special=False)``);
* "eval": llama.cpp's tokens of the held-out English text
  (nano_runtime.data.english_text("eval")), its argmax next token at every
  scored position and its perplexity, over the windows of
  nano_runtime.evaluate.ppl_windows (ctx 512; BOS first when the model adds one);
* "long": for models with a sliding window, one window twice as long as the
  window with llama.cpp's argmax at every position (exercises local layers).

The tests compare the reference model and tokenizer against these files, so CI
needs no llama.cpp build. Rerunning this script reproduces them.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from nano_runtime import cards  # noqa: E402
from nano_runtime.data import english_text  # noqa: E402
from nano_runtime.evaluate import nll_of_window, ppl_windows  # noqa: E402

N_EVAL_WINDOWS = 5
CTX = 512

SNIPPETS = {
    "accents": ["café", "naïve", "résumé", "Ångström", "façade", "Zürich", "São Paulo", "coöperate",
                "Crème brûlée", "Dvořák", "Łódź", "Ærøskøbing", "jalapeño", "Citroën", "Øresund"],
    "cjk": ["我们今天去公园散步。", "東京は日本の首都です。", "한국어를 배우고 있어요.",
            "机器学习模型", "ありがとうございます", "中华人民共和国", "漢字とひらがな", "서울특별시"],
    "emoji": ["👍", "🎉", "❤️", "👨‍👩‍👧‍👦", "🚀", "😂", "🇫🇷", "👍🏽", "✨", "🤖", "☕"],
    "scripts": ["Привет, как дела?", "Καλημέρα κόσμε", "مرحبا بالعالم", "שלום עולם",
                "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới", "Γειά σου", "Здравствуйте"],
    "code": ["def f(x): return x ** 2", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
             "if __name__ == '__main__':", "const x = arr.map((v) => v * 2);", "SELECT * FROM t;",
             "#include <stdio.h>", "    return {\"key\": [1, 2, 3]}", "x = y if z else w  # note",
             "fn main() { println!(\"hi\"); }", "<div class=\"a\">text</div>", "a->b = c->d;"],
}


def varied_lines(n: int = 1200, seed: int = 0) -> list:
    """Deterministic mix of real prose lines, code, numbers, whitespace and scripts."""
    rng = random.Random(seed)
    prose = [ln for ln in english_text("all").split("\n") if ln.strip()]
    src_lines = []
    import textwrap, json as _json  # real code from the standard library
    for mod in (textwrap, _json.decoder):
        with open(mod.__file__, encoding="utf-8") as f:
            src_lines += [ln.rstrip("\n") for ln in f if ln.strip()]
    lines = []
    for i in range(n):
        kind = i % 8
        if kind in (0, 1, 2):
            ln = rng.choice(prose)
        elif kind == 3:
            ln = rng.choice(src_lines) if rng.random() < 0.6 else rng.choice(SNIPPETS["code"])
        elif kind == 4:
            ln = (f"{rng.randint(0, 10**rng.randint(1, 9))} items cost ${rng.randint(0, 9999)}."
                  f"{rng.randint(0, 99):02d} on {rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-"
                  f"{rng.randint(1, 28):02d}, i.e. {rng.random() * 1000:.3f}% or 1e{rng.randint(-9, 9)}")
        elif kind == 5:
            words = rng.sample(prose, 1)[0].split()[:6] or ["a", "b"]
            ln = "".join(w + " " * rng.randint(1, 5) + ("\t" * rng.randint(0, 2)) for w in words)
            ln = " " * rng.randint(0, 6) + ln
        elif kind == 6:
            parts = [rng.choice(SNIPPETS[k]) for k in
                     rng.sample(["accents", "cjk", "emoji", "scripts"], rng.randint(1, 3))]
            ln = " ".join(parts)
        else:
            base = rng.choice(prose).split()
            for _ in range(rng.randint(1, 3)):
                if base:
                    base.insert(rng.randrange(len(base) + 1),
                                rng.choice(SNIPPETS[rng.choice(["accents", "emoji", "cjk", "scripts"])]))
            ln = " ".join(base)
        lines.append(ln)
    return lines


def record(card_name: str, n_threads: int = 2) -> dict:
    from llama_cpp import Llama
    card = cards.get_card(card_name)
    path = cards.card_weights_path(card)
    out = {"model": card_name, "gguf": os.path.basename(path), "llama_cpp_version": None}
    import llama_cpp
    out["llama_cpp_version"] = llama_cpp.__version__

    vocab = Llama(model_path=path, vocab_only=True, verbose=False)
    lines = varied_lines()
    out["tokenizer"] = {"lines": lines, "ids": [vocab.tokenize(ln.encode("utf-8"), add_bos=False,
                                                               special=False) for ln in lines]}
    add_bos = bool(vocab.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true")
    bos = vocab.token_bos() if add_bos else None
    text = english_text("eval")
    ids = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    del vocab

    llm = Llama(model_path=path, n_ctx=2 * CTX, n_batch=2 * CTX, logits_all=True,
                n_threads=n_threads, verbose=False)
    wins = ppl_windows(ids, CTX, bos)[:N_EVAL_WINDOWS]
    total, n, argmax = 0.0, 0, []
    for w in wins:
        llm.reset()
        llm.eval(w)
        logits = np.array(llm.scores[:len(w)], dtype=np.float32)
        nll = nll_of_window(logits, w)
        total += float(nll.sum())
        n += len(nll)
        argmax.append(logits[:-1].argmax(-1).tolist())
    out["eval"] = {"ctx": CTX, "text_ids": ids, "windows": wins, "argmax": argmax,
                   "ppl": math.exp(total / n), "tokens": n}
    swa = llm.metadata.get(f"{llm.metadata.get('general.architecture')}.attention.sliding_window")
    if swa:
        w = ([bos] if bos is not None else []) + ids[:2 * CTX - 1]
        llm.reset()
        llm.eval(w)
        logits = np.array(llm.scores[:len(w)], dtype=np.float32)
        out["long"] = {"window": w, "argmax": logits[:-1].argmax(-1).tolist()}
    return out


def main(argv):
    names = argv or ["smollm2-135m-instruct", "gemma3-270m"]
    for name in names:
        res = record(name)
        path = os.path.join(HERE, f"{name}.llamacpp.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(res, f, ensure_ascii=False)
        os.replace(tmp, path)
        print(f"{name}: llama.cpp ppl {res['eval']['ppl']:.4f} over {res['eval']['tokens']} tokens; "
              f"{len(res['tokenizer']['lines'])} tokenizer lines -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
