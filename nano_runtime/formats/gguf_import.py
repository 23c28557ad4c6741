"""GGUF import: config, dequantized weights and tokenizer from a .gguf file.

Supported architectures: ``llama`` (SmolLM2 and other Llama-family models)
and ``gemma3``. Supported tensor types: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0, Q4_K, Q5_K, Q6_K (dequantized with the ``gguf`` package, whose
``dequantize`` already returns [out, in]).

Two layout traps are handled here and nowhere else:

* llama.cpp's converter permutes Llama q/k weights for adjacent-pair RoPE;
  they are permuted back to the half-split layout of the reference model.
  Gemma 3 GGUFs keep the half-split layout.
* Gemma GGUF norm weights already include the +1 of Gemma's (1 + w) RMSNorm;
  it is subtracted so the checkpoint holds Hugging Face's convention.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..errors import ModelFormatError

SUPPORTED_ARCHS = ("llama", "gemma3")
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                   "Q4_K", "Q5_K", "Q6_K")

# GGUF tensor name (after "blk.N.") -> reference model name (after "layers.N.")
LAYER_NAMES = {
    "attn_norm.weight": "attn_norm.weight",
    "attn_q.weight": "attn.wq.weight",
    "attn_k.weight": "attn.wk.weight",
    "attn_v.weight": "attn.wv.weight",
    "attn_output.weight": "attn.wo.weight",
    "attn_q_norm.weight": "attn.q_norm.weight",
    "attn_k_norm.weight": "attn.k_norm.weight",
    "post_attention_norm.weight": "post_attn_norm.weight",
    "ffn_norm.weight": "mlp_norm.weight",
    "ffn_gate.weight": "mlp.w_gate.weight",
    "ffn_up.weight": "mlp.w_up.weight",
    "ffn_down.weight": "mlp.w_down.weight",
    "post_ffw_norm.weight": "post_mlp_norm.weight",
}
TOP_NAMES = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight",
             "output.weight": "output.weight"}


def gguf_to_ref_name(name: str) -> str:
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"layers.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    raise ModelFormatError(f"unexpected tensor {name!r} in GGUF")


def _field_value(field):
    """Python value of a GGUF metadata field (str, number, bool or list)."""
    from gguf import GGUFValueType
    t = field.types[0] if field.types else None
    if t == GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if t == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return field.parts[field.data[0]].tolist()[0]


@dataclass
class GGUFFile:
    """An opened GGUF file: metadata dict, tensor list and the mmap reader."""
    path: str
    meta: dict
    reader: object

    @property
    def arch(self) -> str:
        return self.meta.get("general.architecture", "?")

    def tensor_names(self):
        return [t.name for t in self.reader.tensors]

    def tensor(self, name):
        for t in self.reader.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


def open_gguf(path: str) -> GGUFFile:
    """Open and validate a GGUF file; raises ModelFormatError with a clear message."""
    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFormatError(f"{path}: is a directory, not a GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFormatError(f"{path}: not a GGUF file (bad magic {magic!r})")
    from gguf import GGUFReader
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the gguf package raises many kinds on a damaged header
        raise ModelFormatError(f"{path}: corrupt or truncated GGUF ({type(e).__name__}: {e})") from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise ModelFormatError(f"{path}: truncated GGUF (tensor {t.name} runs past the end "
                                   f"of the file)")
    meta = {}
    for k, f in reader.fields.items():
        try:
            meta[k] = _field_value(f)
        except Exception:
            raise ModelFormatError(f"{path}: corrupt GGUF metadata field {k!r}") from None
    g = GGUFFile(path, meta, reader)
    if g.arch not in SUPPORTED_ARCHS:
        raise ModelFormatError(f"{path}: unsupported architecture {g.arch!r} "
                               f"(supported: {', '.join(SUPPORTED_ARCHS)})")
    for t in reader.tensors:
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise ModelFormatError(f"{path}: tensor {t.name} has unsupported type "
                                   f"{t.tensor_type.name} (supported: {', '.join(SUPPORTED_TYPES)})")
    return g


def config_from_gguf(g: GGUFFile, name: str = "custom") -> ModelConfig:
    m, a = g.meta, g.arch

    def key(k, default=None):
        v = m.get(f"{a}.{k}", default)
        if v is None:
            raise ModelFormatError(f"{g.path}: GGUF metadata lacks {a}.{k}")
        return v

    n_heads = int(key("attention.head_count"))
    dim = int(key("embedding_length"))
    names = set(g.tensor_names())
    common = dict(
        name=name, vocab_size=len(m.get("tokenizer.ggml.tokens") or []) or int(key("vocab_size")),
        dim=dim, n_layers=int(key("block_count")), n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        hidden_dim=int(key("feed_forward_length")),
        norm_eps=float(key("attention.layer_norm_rms_epsilon")),
        max_seq_len=int(min(key("context_length", 2048), 8192)),
        tie_embeddings="output.weight" not in names,
        extra={"source": os.path.basename(g.path), "gguf_name": m.get("general.name", "")})
    if a == "llama":
        return ModelConfig(family="llama", activation="silu",
                           head_dim=int(key("rope.dimension_count", dim // n_heads)),
                           rope_theta=float(key("rope.freq_base", 10000.0)), **common)
    hd = int(key("attention.key_length"))
    return ModelConfig(family="gemma3", activation="gelu_tanh", head_dim=hd,
                       rope_theta=float(key("rope.freq_base", 1e6)),
                       rope_theta_local=float(m.get(f"{a}.rope.freq_base_swa", 10000.0)),
                       qk_norm=True, post_norms=True, norm_unit_offset=True, embed_scale=True,
                       sliding_window=int(key("attention.sliding_window", 512)),
                       sliding_window_pattern=6, query_pre_attn_scalar=float(hd), **common)


def _unpermute_llama(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation (adjacent pairs -> half-split RoPE)."""
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantize_tensor(t) -> np.ndarray:
    """fp32 [out, in] (or [n]) values of one GGUF tensor."""
    from gguf.quants import dequantize
    arr = dequantize(t.data, t.tensor_type)
    return np.ascontiguousarray(arr, dtype=np.float32)


def iter_reference_tensors(g: GGUFFile, cfg: ModelConfig, progress=None):
    """Yield (reference name, fp32 array) for every tensor, one at a time (streamed)."""
    for t in g.reader.tensors:
        name = gguf_to_ref_name(t.name)
        w = dequantize_tensor(t)
        if cfg.family == "llama" and t.name.endswith("attn_q.weight"):
            w = _unpermute_llama(w, cfg.n_heads)
        elif cfg.family == "llama" and t.name.endswith("attn_k.weight"):
            w = _unpermute_llama(w, cfg.n_kv_heads)
        if cfg.norm_unit_offset and t.name.endswith("norm.weight"):
            w = w - 1.0
        if progress is not None:
            progress.update(1)
        yield name, w


def tokenizer_from_gguf(g: GGUFFile, chat_template_override=None):
    from ..tokenizer import Tokenizer
    from .gguf_tokenizer import tokenizer_json_from_gguf
    m = g.meta
    tj = tokenizer_json_from_gguf(m)
    add_bos = bool(m.get("tokenizer.ggml.add_bos_token", g.arch == "gemma3"))
    tmpl = m.get("tokenizer.chat_template") or chat_template_override
    return Tokenizer(tj, m.get("tokenizer.ggml.bos_token_id"), m.get("tokenizer.ggml.eos_token_id"),
                     add_bos, tmpl)
