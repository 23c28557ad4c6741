"""The facts every exported artifact carries about its model, from one function.

Both exporters read `export_metadata()`: the ExecuTorch exporter writes each
entry as a constant method of the ``.pte`` (the names ExecuTorch's LLM runner
looks up, see its ``runner/constants.h``), the ONNX exporter writes the same
values into ``genai_config.json`` (``context_length``, ``bos_token_id``,
``eos_token_id``, ``vocab_size``). A fact is therefore stated once.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NanoError

# Quantization recipes of the artifacts (named once, shown in reports and tests).
PTE_SCHEME = "8da4w-g32 linears (XNNPACK), int8 per-channel embedding, 8da8w head"
ONNX_SCHEME = ("int4 MatMulNBits block 32 (symmetric, accuracy_level 4 = int8 activations); "
               "tied embedding shares the int4 head (GatherBlockQuantized)")
GROUP_SIZE = 32
DEFAULT_MAX_SEQ_LEN = 1024


@dataclass(frozen=True)
class ExportOptions:
    """What an export should produce (validated against the model in check_supported)."""
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    group_size: int = GROUP_SIZE

    def __post_init__(self):
        if not isinstance(self.max_seq_len, int) or self.max_seq_len < 2:
            raise NanoError(f"--max-seq-len must be an integer >= 2, got {self.max_seq_len!r}")
        if self.group_size not in (32, 64, 128):
            raise NanoError(f"--group-size must be one of 32, 64, 128, got {self.group_size}")


def export_metadata(cfg, tokenizer, max_seq_len: int) -> dict:
    """Metadata of an exported model, keyed by the ExecuTorch LLM runner's method names.

    The ONNX exporter maps the same dict onto genai_config.json keys.
    """
    if tokenizer is None:
        raise NanoError(f"{cfg.name} has no tokenizer; export needs one to ship beside the model")
    eos = list(tokenizer.stop_ids) or ([tokenizer.eos_id] if tokenizer.eos_id is not None else [])
    if not eos:
        raise NanoError(f"{cfg.name}: the tokenizer defines no end-of-sequence token")
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else -1
    return {
        "get_max_seq_len": int(max_seq_len),          # longest forward() call (prefill)
        "get_max_context_len": int(max_seq_len),      # KV cache capacity
        "get_bos_id": int(bos),
        "get_eos_ids": [int(i) for i in eos],
        "get_vocab_size": int(cfg.vocab_size),
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,              # cache update is inside forward()
        "enable_dynamic_shape": True,                 # prefill takes the prompt in one call
        # not read by the runner, kept for humans and our own tools
        "get_n_layers": int(cfg.n_layers),
        "get_add_bos": bool(tokenizer.add_bos),
    }


def check_supported(cfg, opts: ExportOptions, target: str):
    """Raise NanoError naming the first feature the `target` artifact cannot express."""
    g = opts.group_size
    if opts.max_seq_len > cfg.max_seq_len:
        raise NanoError(f"--max-seq-len {opts.max_seq_len} exceeds the model's context of "
                        f"{cfg.max_seq_len} tokens")
    for name, k in (("dim", cfg.dim), ("hidden_dim", cfg.hidden_dim),
                    ("n_heads * head_dim", cfg.q_dim)):
        if k % g:
            raise NanoError(f"{target} export: 4-bit group size {g} does not divide "
                            f"{name}={k} (unsupported shape for grouped int4 weights)")
    if target == "onnx":
        if cfg.family == "llama" and (cfg.qk_norm or cfg.post_norms or cfg.norm_unit_offset
                                      or cfg.embed_scale or cfg.sliding_window):
            raise NanoError("onnx export: gemma-style features (qk_norm, post_norms, "
                            "norm_unit_offset, embed_scale, sliding_window) on a llama-family "
                            "model are not supported by ONNX Runtime GenAI's llama graph")
        if cfg.family == "llama" and cfg.query_pre_attn_scalar != cfg.head_dim:
            raise NanoError("onnx export: query_pre_attn_scalar != head_dim on a llama-family "
                            "model is not supported")
        if cfg.family == "gemma3" and cfg.activation != "gelu_tanh":
            raise NanoError(f"onnx export: activation {cfg.activation!r} on a gemma3-family "
                            "model is not supported (Gemma 3 graphs use gelu_tanh)")
        if cfg.family == "llama" and cfg.activation != "silu":
            raise NanoError(f"onnx export: activation {cfg.activation!r} on a llama-family "
                            "model is not supported (Llama graphs use silu)")
