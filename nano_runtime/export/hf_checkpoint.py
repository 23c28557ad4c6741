"""Write our reference weights as a Hugging Face-format checkpoint directory.

ONNX Runtime GenAI's model builder reads HF checkpoints (config.json +
model.safetensors + tokenizer files), so the ONNX exporter goes through one.
Naming conventions (ours -> HF):

    embed.weight                          model.embed_tokens.weight
    layers.i.attn_norm.weight             model.layers.i.input_layernorm.weight
    layers.i.attn.w{q,k,v,o}.weight       model.layers.i.self_attn.{q,k,v,o}_proj.weight
    layers.i.attn.{q,k}_norm.weight       model.layers.i.self_attn.{q,k}_norm.weight        (gemma3)
    layers.i.post_attn_norm.weight        model.layers.i.post_attention_layernorm.weight    (gemma3)
    layers.i.mlp_norm.weight              llama: model.layers.i.post_attention_layernorm.weight
                                          gemma3: model.layers.i.pre_feedforward_layernorm.weight
    layers.i.post_mlp_norm.weight         model.layers.i.post_feedforward_layernorm.weight  (gemma3)
    layers.i.mlp.w_{gate,up,down}.weight  model.layers.i.mlp.{gate,up,down}_proj.weight
    norm.weight                           model.norm.weight
    output.weight                         lm_head.weight (only when untied)

No value changes: our q/k rows are already in HF's half-split RoPE order and
Gemma norm weights are stored as w (the model multiplies by 1 + w), as in HF.
"""
from __future__ import annotations

import json
import os

import torch

_LAYER_MAP_COMMON = {
    "attn_norm": "input_layernorm",
    "attn.wq": "self_attn.q_proj",
    "attn.wk": "self_attn.k_proj",
    "attn.wv": "self_attn.v_proj",
    "attn.wo": "self_attn.o_proj",
    "attn.q_norm": "self_attn.q_norm",
    "attn.k_norm": "self_attn.k_norm",
    "mlp.w_gate": "mlp.gate_proj",
    "mlp.w_up": "mlp.up_proj",
    "mlp.w_down": "mlp.down_proj",
}
_LAYER_MAP = {
    "llama": dict(_LAYER_MAP_COMMON, mlp_norm="post_attention_layernorm"),
    "gemma3": dict(_LAYER_MAP_COMMON, mlp_norm="pre_feedforward_layernorm",
                   post_attn_norm="post_attention_layernorm",
                   post_mlp_norm="post_feedforward_layernorm"),
}


def hf_name(ours: str, family: str) -> str:
    """HF tensor name of one of our parameter names."""
    if ours == "embed.weight":
        return "model.embed_tokens.weight"
    if ours == "norm.weight":
        return "model.norm.weight"
    if ours == "output.weight":
        return "lm_head.weight"
    parts = ours.split(".")
    if parts[0] != "layers" or parts[-1] != "weight":
        raise KeyError(ours)
    i, mid = parts[1], ".".join(parts[2:-1])
    return f"model.layers.{i}.{_LAYER_MAP[family][mid]}.weight"


def hf_config(cfg, tokenizer, max_seq_len: int) -> dict:
    """config.json of the HF architecture matching `cfg`."""
    eos = list(tokenizer.stop_ids) if tokenizer is not None and tokenizer.stop_ids else None
    common = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": tokenizer.bos_id if tokenizer is not None else None,
        "eos_token_id": eos if eos and len(eos) > 1 else (eos[0] if eos else None),
        "pad_token_id": None, "torch_dtype": "float32", "attention_bias": False,
    }
    if cfg.family == "llama":
        return dict(common, architectures=["LlamaForCausalLM"], model_type="llama",
                    hidden_act="silu", rope_theta=cfg.rope_theta, mlp_bias=False)
    layer_types = ["full_attention" if cfg.is_global_layer(i) else "sliding_attention"
                   for i in range(cfg.n_layers)]
    return dict(common, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text",
                hidden_activation="gelu_pytorch_tanh", rope_theta=cfg.rope_theta,
                rope_local_base_freq=cfg.rope_theta_local,
                query_pre_attn_scalar=_int_if_whole(cfg.query_pre_attn_scalar),
                sliding_window=cfg.sliding_window or None,
                sliding_window_pattern=cfg.sliding_window_pattern, layer_types=layer_types,
                attn_logit_softcapping=None, final_logit_softcapping=None)


def _int_if_whole(x):
    return int(x) if float(x).is_integer() else float(x)   # transformers 5 wants an int here


def hf_tokenizer_config(tokenizer) -> dict:
    """tokenizer_config.json in HF's PreTrainedTokenizerFast form."""
    tok = tokenizer.hf.id_to_token
    d = {"tokenizer_class": "PreTrainedTokenizerFast",
         "add_bos_token": bool(tokenizer.add_bos), "add_eos_token": False,
         "clean_up_tokenization_spaces": False, "model_max_length": 1 << 30}
    if tokenizer.bos_id is not None:
        d["bos_token"] = tok(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        d["eos_token"] = tok(tokenizer.eos_id)
    if tokenizer.chat_template:
        d["chat_template"] = tokenizer.chat_template
    return d


def hf_tokenizer_json(tokenizer) -> str:
    """tokenizer.json with BOS added by a post-processor when the model adds one.

    Runtimes that only read tokenizer.json (ORT GenAI's tokenizer among them) then
    encode prompts exactly as Tokenizer.encode does.
    """
    tj = json.loads(tokenizer.tokenizer_json)
    if tokenizer.add_bos and tokenizer.bos_id is not None and not tj.get("post_processor"):
        bos = tokenizer.hf.id_to_token(tokenizer.bos_id)
        tj["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [tokenizer.bos_id], "tokens": [bos]}},
        }
    return json.dumps(tj, ensure_ascii=False)


def write_hf_checkpoint(model, cfg, tokenizer, directory: str, max_seq_len: int):
    """config.json + model.safetensors + tokenizer files of `model` (a reference Transformer)."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for name, p in model.state_dict().items():
        tensors[hf_name(name, cfg.family)] = p.detach().to(torch.float32).contiguous()
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(cfg, tokenizer, max_seq_len), f, indent=2)
    with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(hf_tokenizer_json(tokenizer))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_tokenizer_config(tokenizer), f, indent=2, ensure_ascii=False)
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": tokenizer.bos_id, "eos_token_id": list(tokenizer.stop_ids),
                   "do_sample": False}, f, indent=2)
