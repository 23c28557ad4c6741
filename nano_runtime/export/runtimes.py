"""Run exported artifacts in their own runtimes, and their same-quantization references.

Every runner exposes the same two calls, so tests and benchmarks compare them
one against another:

    step(ids, pos) -> logits [V] of the last of `ids`, placed at positions pos..pos+len-1
    reset()        -> empty the KV cache

* ``PteModule``      the .pte through ExecuTorch's runtime (``executorch.runtime``),
                     calling forward(tokens, input_pos) as the LLM runner does.
* ``pte_llm_generate`` the .pte through ExecuTorch's own LLM runner binding
                     (``executorch.extension.llm.runner.TextLLMRunner``), text in, text out.
* ``GenaiModel``     the ONNX folder through ``onnxruntime_genai``.
* ``RefStepper``     a PyTorch module with the reference cache (the quantized eager
                     PteDecoder, or the reference Transformer with the ONNX int4 weights).

``greedy(runner, ids, n)`` and ``teacher_forced_top1(runner, ids)`` work on any of them.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from .pte import PTE_NAME


def set_pte_threads(n: int):
    from executorch.extension.pybindings import portable_lib
    portable_lib._unsafe_reset_threadpool(int(n))


def _load_et_ops():
    # custom ops (custom_sdpa/update_cache) and quantized kernels must be registered
    # before a program that uses them is loaded
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    try:
        from executorch.kernels import quantized  # noqa: F401
    except Exception:
        pass


class PteModule:
    """model.pte through ExecuTorch's Python runtime (forward + metadata methods)."""

    def __init__(self, folder: str, threads: int = 1):
        _load_et_ops()
        from executorch.runtime import Runtime
        set_pte_threads(threads)
        t0 = time.perf_counter()
        self.program = Runtime.get().load_program(os.path.join(folder, PTE_NAME))
        self.forward = self.program.load_method("forward")
        self.load_s = time.perf_counter() - t0
        self.meta = {name: self.program.load_method(name).execute([])[0]
                     for name in self.program.method_names if name.startswith(("get_", "use_",
                                                                                 "enable_"))}

    def reset(self):
        pass   # positions overwrite the cache; attention masks keys beyond pos

    def step(self, ids, pos: int) -> np.ndarray:
        toks = torch.tensor([list(ids)], dtype=torch.long)
        out = self.forward.execute([toks, torch.tensor([pos], dtype=torch.long)])[0]
        return out.reshape(-1, out.shape[-1])[-1].float().numpy()


class GenaiModel:
    """An ORT GenAI folder; each sequence is a fresh Generator (the KV cache)."""

    def __init__(self, folder: str, threads: int = 1, max_length: int = 0):
        import onnxruntime_genai as og
        self.og = og
        cfg = og.Config(folder)
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}}}))
        t0 = time.perf_counter()
        self.model = og.Model(cfg)
        self.load_s = time.perf_counter() - t0
        self.tokenizer = og.Tokenizer(self.model)
        with open(os.path.join(folder, "genai_config.json")) as f:
            self.context = json.load(f)["model"]["context_length"]
        self.max_length = max_length or self.context
        self.gen = None

    def reset(self):
        self.gen = None

    def _generator(self):
        p = self.og.GeneratorParams(self.model)
        p.set_search_options(max_length=self.max_length, do_sample=False)
        return self.og.Generator(self.model, p)

    def step(self, ids, pos: int) -> np.ndarray:
        if self.gen is None or pos == 0:
            self.gen = self._generator()
        self.gen.append_tokens(list(ids))
        return np.asarray(self.gen.get_logits()).reshape(-1)

    def all_logits(self, ids) -> np.ndarray:
        """[len(ids), V] logits of a fresh sequence in one prefill (for perplexity)."""
        self.gen = self._generator()
        self.gen.append_tokens(list(ids))
        out = np.asarray(self.gen.get_output("logits"))
        self.gen = None
        return out.reshape(len(ids), -1)


class RefStepper:
    """A PyTorch module with a reference static cache behind the step() contract.

    `module(tokens [1, T], input_pos)` where input_pos is [1] (PteDecoder) or [T]
    (the reference Transformer after setup_cache).
    """

    def __init__(self, module, start_pos_only: bool):
        self.module = module.eval()
        self.start_pos_only = start_pos_only

    def reset(self):
        pass

    @torch.no_grad()
    def step(self, ids, pos: int) -> np.ndarray:
        toks = torch.tensor([list(ids)], dtype=torch.long)
        if self.start_pos_only:
            ip = torch.tensor([pos], dtype=torch.long)
        else:
            ip = torch.arange(pos, pos + len(ids), dtype=torch.long)
        out = self.module(toks, ip)
        return out.reshape(-1, out.shape[-1])[-1].float().numpy()


def onnx_reference(lm, folder: str, max_seq_len: int) -> RefStepper:
    """The reference Transformer holding exactly the ONNX folder's int4 weights."""
    from ..loader import build_model
    from .onnx_genai import dequantized_state_dict
    state = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    for k, w in dequantized_state_dict(folder, lm.config).items():
        state[k] = torch.from_numpy(w)
    m = build_model(lm.config, state)
    m.setup_cache(1, max_seq_len)
    return RefStepper(m, start_pos_only=False)


# ------------------------------------------------------------------ comparisons
def greedy(runner, ids, n: int) -> list:
    """n greedy tokens after prompt `ids` (the first from the prefill logits)."""
    runner.reset()
    logits = runner.step(ids, 0)
    out, pos = [], len(ids)
    for _ in range(n):
        t = int(np.argmax(logits))
        out.append(t)
        if len(out) == n:
            break
        logits = runner.step([t], pos)
        pos += 1
    return out


def time_prefill_decode(runner, ids, gen: int, clock) -> tuple:
    """(prefill tok/s, decode tok/s): one prefill of `ids` from position 0, then `gen`
    greedy single-token steps, timed with `clock` (time.perf_counter or process_time)."""
    t0 = clock()
    logits = runner.step(ids, 0)
    t1 = clock()
    pos, t = len(ids), int(np.argmax(logits))
    for _ in range(gen):
        logits = runner.step([t], pos)
        t, pos = int(np.argmax(logits)), pos + 1
    t2 = clock()
    return len(ids) / (t1 - t0), gen / (t2 - t1)


def teacher_forced_logits(runner, ids, prefix: int = 1) -> np.ndarray:
    """[len(ids) - prefix + 1, V]: logits after ids[:prefix], then after each next token."""
    runner.reset()
    rows = [runner.step(ids[:prefix], 0)]
    for p in range(prefix, len(ids)):
        rows.append(runner.step([ids[p]], p))
    return np.stack(rows)


def first_divergence(a: list, b: list) -> int:
    """Number of leading tokens on which two sequences agree."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pte_llm_generate(folder: str, prompt: str, max_new_tokens: int, threads: int = 1,
                     num_bos: int = 0, runner=None, bos_text: str = ""):
    """Greedy text from ExecuTorch's own LLM runner: (pieces, stats, runner).

    pieces: the text of each generated token, as the runner's callback yields it.
    bos_text: the BOS token's text (e.g. "<bos>"), put in front of the prompt. The runner's
    HF tokenizer (executorch 1.5.1) adds no BOS for GenerationConfig.num_bos, but it parses
    special tokens in the text, which is how chat templates ({{ bos_token }}) carry it.
    """
    prompt = bos_text + prompt
    _load_et_ops()
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    set_pte_threads(threads)
    if runner is None:
        runner = TextLLMRunner(os.path.join(folder, PTE_NAME),
                               os.path.join(folder, "tokenizer.json"))
    else:
        runner.reset()
    pieces, stats = [], []
    cfg = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0,
                           num_bos=num_bos, num_eos=0)
    runner.generate(prompt, cfg, token_callback=pieces.append, stats_callback=stats.append)
    return pieces, (stats[-1] if stats else None), runner
