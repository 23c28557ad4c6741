"""Perplexity: the windowing shared by every backend and by the llama.cpp recorder.

The text is tokenized once without BOS and cut into non-overlapping windows
of `ctx` tokens. When the tokenizer adds a BOS, each window is BOS followed by
ctx - 1 text tokens. In each window every token after the first position is
scored (predicted from the tokens before it in the same window).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .errors import NanoError


def ppl_windows(ids: list, ctx: int, bos_id) -> list:
    """Windows (lists of ids) as described in the module docstring."""
    if ctx < 2:
        raise NanoError(f"--ctx must be >= 2, got {ctx}")
    step = ctx - 1 if bos_id is not None else ctx
    wins = []
    for s in range(0, len(ids), step):
        chunk = ids[s:s + step]
        w = ([bos_id] if bos_id is not None else []) + chunk
        if len(w) >= 2:
            wins.append(w)
    if not wins:
        raise NanoError("the text is too short to score (fewer than 2 tokens)")
    return wins


def nll_of_window(logits: np.ndarray, window: list) -> np.ndarray:
    """Negative log-likelihood [len(window)-1] of window[1:] given logits [len(window), V]."""
    lg = logits[:-1].astype(np.float64)
    m = lg.max(-1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(lg - m).sum(-1)))
    tgt = lg[np.arange(len(window) - 1), window[1:]]
    return lse - tgt


def perplexity(windows: Iterable[list], logits_fn: Callable[[list], np.ndarray],
               progress=None) -> dict:
    """{"ppl", "tokens", "nll"} over windows, logits_fn(window) -> [len, V] logits."""
    total, n = 0.0, 0
    for w in windows:
        nll = nll_of_window(logits_fn(w), w)
        total += float(nll.sum())
        n += len(nll)
        if progress is not None:
            progress.update(1)
    return {"ppl": math.exp(total / n), "tokens": n, "nll": total / n}


def torch_logits_fn(model):
    import torch

    @torch.no_grad()
    def fn(window):
        return model(torch.tensor([window]))[0].float().numpy()
    return fn


def top1_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    return float((logits_a.argmax(-1) == logits_b.argmax(-1)).mean())
