"""Text generation with the PyTorch reference model (the `--backend torch` path).

Prefill runs the prompt through a static KV cache in one forward; decode then
feeds one token at a time. Sampling: greedy (temperature 0), temperature,
top-k, top-p, min-p and repetition penalty, seeded by a torch.Generator so
the same seed gives the same text.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from .errors import NanoError
from .sampling import GenerationResult, SamplingParams, peak_rss_mb  # noqa: F401 (re-exported)


def sample_next(logits: torch.Tensor, p: SamplingParams, history: list,
                gen: torch.Generator) -> int:
    """Next token id from logits [V] (fp32)."""
    logits = logits.float().clone()
    if p.repetition_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history)), dtype=torch.long)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / p.repetition_penalty,
                                  vals * p.repetition_penalty)
    if p.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / p.temperature
    if p.top_k > 0 and p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if p.min_p > 0:
        probs[probs < p.min_p * probs.max()] = 0
    if p.top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        cum = torch.cumsum(sp, 0)
        cut = (cum - sp) > p.top_p          # keep the smallest prefix reaching top_p
        sp[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, si, sp)
    probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.no_grad()
def generate_ids(model, prompt_ids: list, max_tokens: int, params: SamplingParams,
                 stop_ids=(), on_token: Optional[Callable[[int], None]] = None,
                 max_seq_len: Optional[int] = None):
    """Generate up to max_tokens ids after prompt_ids; returns (ids, stop_reason, timings)."""
    if not prompt_ids:
        raise NanoError("the prompt is empty")
    cfg = model.cfg
    seq_len = max_seq_len or cfg.max_seq_len
    if len(prompt_ids) >= seq_len:
        raise NanoError(f"prompt of {len(prompt_ids)} tokens does not fit the context of "
                        f"{seq_len} tokens")
    if max_tokens < 1:
        raise NanoError(f"--max-tokens must be >= 1, got {max_tokens}")
    budget = min(max_tokens, seq_len - len(prompt_ids))
    model.setup_cache(1, len(prompt_ids) + budget)
    gen = torch.Generator().manual_seed(params.seed)
    out, history = [], list(prompt_ids)
    t0 = time.perf_counter()
    x = torch.tensor([prompt_ids])
    logits = model(x, torch.arange(len(prompt_ids)))[0, -1]
    t1 = time.perf_counter()
    reason = "length"
    pos = len(prompt_ids)
    for i in range(budget):
        nxt = sample_next(logits, params, history, gen)
        if nxt in stop_ids:
            reason = "stop"
            break
        out.append(nxt)
        history.append(nxt)
        if on_token:
            on_token(nxt)
        if i == budget - 1:
            break
        logits = model(torch.tensor([[nxt]]), torch.tensor([pos]))[0, 0]
        pos += 1
    t2 = time.perf_counter()
    if budget < max_tokens and reason == "length":
        reason = "context"
    model.clear_cache()
    n_dec = max(len(out) - 1, 0)
    timings = {"prefill_s": t1 - t0, "decode_s": t2 - t1,
               "prefill_tok_s": len(prompt_ids) / max(t1 - t0, 1e-9),
               "decode_tok_s": n_dec / max(t2 - t1, 1e-9) if n_dec else 0.0}
    return out, reason, timings


def generate_text(loaded, prompt: str, max_tokens: int = 64, params: Optional[SamplingParams] = None,
                  chat: bool = False, system: Optional[str] = None,
                  on_text: Optional[Callable[[str], None]] = None) -> GenerationResult:
    """Generate from a prompt string with a LoadedModel (reference backend)."""
    params = params or SamplingParams()
    tok = loaded.tokenizer
    if tok is None:
        raise NanoError("this model has no tokenizer")
    if chat:
        msgs = ([{"role": "system", "content": system}] if system else []) + \
               [{"role": "user", "content": prompt}]
        prompt_ids = tok.encode_chat(msgs)
    else:
        prompt_ids = tok.encode(prompt)
    emitted = [""]
    out_ids = []

    def on_token(t):
        out_ids.append(t)
        if on_text:  # stream whole characters only
            text = tok.decode(out_ids)
            if not text.endswith("\ufffd"):
                on_text(text[len(emitted[0]):])
                emitted[0] = text

    ids, reason, tm = generate_ids(loaded.model, prompt_ids, max_tokens, params,
                                   set(tok.stop_ids), on_token)
    text = tok.decode(ids)
    if on_text and len(text) > len(emitted[0]):
        on_text(text[len(emitted[0]):])
    return GenerationResult(ids, text, len(prompt_ids), tm["prefill_tok_s"], tm["decode_tok_s"],
                            peak_rss_mb(), reason, tm)
