"""ONNX export: a model folder that ONNX Runtime GenAI loads.

We write our reference weights as a Hugging Face checkpoint (hf_checkpoint.py)
and drive ONNX Runtime GenAI's own model builder
(``onnxruntime_genai.models.builder``, through _genai_builder.py) on it, in a subprocess, into
a temp directory that is renamed into place only when everything succeeded:

    OUT/genai_config.json       context_length, bos/eos ids, vocab size from export_metadata()
    OUT/model.onnx (+ .data)    MatMulNBits int4 (block 32, symmetric) linears,
                                GroupQueryAttention (fused RoPE, KV cache, sliding
                                window on Gemma 3 local layers), the tied embedding
                                shared with the head through GatherBlockQuantized
    OUT/tokenizer.json, tokenizer_config.json, chat_template.jinja

Attention windows: ORT's GroupQueryAttention with ``local_window_size = w``
lets a query see w keys (distances 0..w-1), as our reference and HF Gemma 3 do
(checked in tests/test_export.py on tiny-gemma3, window 16, 40 positions);
every layer keeps a full-length cache (``windowed_kv_cache=false``).

``dequantized_state_dict`` reads the int4 weights back out of model.onnx so the
reference can run "the same quantization" (weight-only; the artifact also
quantizes activations to int8, accuracy_level 4, the CPU default).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from ..errors import NanoError
from .metadata import ExportOptions, export_metadata

ACCURACY_LEVEL = 4   # int8 activations in MatMulNBits: ORT's CPU default, fastest on ARM


def export_onnx(lm, out_dir: str, opts: ExportOptions, show_progress: bool = True) -> dict:
    """Write the ORT GenAI folder for `lm` into out_dir atomically; returns a summary."""
    from ..formats.checkpoint import AtomicDir
    from ..progress import progress_bar
    from .hf_checkpoint import write_hf_checkpoint
    from .metadata import ONNX_SCHEME, check_supported
    from .pte import _require, _write_json
    cfg = lm.config
    check_supported(cfg, opts, "onnx")
    meta = export_metadata(cfg, lm.tokenizer, opts.max_seq_len)
    for mod, pip in (("onnxruntime_genai", "onnxruntime-genai"), ("onnx", "onnx"),
                     ("onnx_ir", "onnx-ir"), ("transformers", "transformers")):
        _require(mod, pip)
    with progress_bar(total=3, desc=f"export onnx {cfg.name}", unit="step",
                      disable=not show_progress) as bar, \
            tempfile.TemporaryDirectory(prefix="nano-onnx-") as work, \
            AtomicDir(out_dir) as tmp:
        hf_dir = os.path.join(work, "hf")
        bar.set_postfix_str("HF checkpoint")
        write_hf_checkpoint(lm.model, cfg, lm.tokenizer, hf_dir, opts.max_seq_len)
        bar.update(1)
        bar.set_postfix_str("ORT GenAI model builder")
        _run_builder(hf_dir, tmp, os.path.join(work, "cache"), opts)
        bar.update(1)
        bar.set_postfix_str("genai_config")
        _finish_genai_config(os.path.join(tmp, "genai_config.json"), meta)
        if cfg.embed_scale:
            _exact_embed_scale(os.path.join(tmp, "model.onnx"), cfg.dim)
        _write_tokenizer(lm.tokenizer, tmp)
        _write_json(os.path.join(tmp, "export_config.json"),
                    {"format": "onnxruntime-genai", "model": cfg.name, "family": cfg.family,
                     "quantization": ONNX_SCHEME, "group_size": opts.group_size,
                     "accuracy_level": ACCURACY_LEVEL, "metadata": meta,
                     "config": cfg.to_dict(),
                     "tokenizer": lm.tokenizer.config_dict()})
        bar.update(1)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    return {"path": out_dir, "bytes": size, "metadata": meta}


def _run_builder(hf_dir: str, out: str, cache: str, opts: ExportOptions):
    extra = ["hf_token=false", f"accuracy_level={ACCURACY_LEVEL}",
             f"block_size={opts.group_size}", "windowed_kv_cache=false"]
    cmd = [sys.executable, "-m", "nano_runtime.export._genai_builder", hf_dir, out, cache, *extra]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()][-1:] or ["?"]
        raise NanoError(f"onnx export: ONNX Runtime GenAI's model builder failed: {tail[0]}")


def _finish_genai_config(path: str, meta: dict):
    """Make genai_config.json agree with export_metadata() (the shared source)."""
    with open(path, encoding="utf-8") as f:
        gc = json.load(f)
    m = gc["model"]
    m["context_length"] = meta["get_max_context_len"]
    m["vocab_size"] = meta["get_vocab_size"]
    m["eos_token_id"] = meta["get_eos_ids"]
    if meta["get_bos_id"] >= 0:
        m["bos_token_id"] = meta["get_bos_id"]
    gc["search"]["max_length"] = meta["get_max_context_len"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(gc, f, indent=4)


def _exact_embed_scale(path: str, dim: int):
    """Set the embedding scale to float32(sqrt(dim)), as the reference (and HF) computes it.

    The builder writes sqrt(dim) rounded to 2 decimals (25.30 for Gemma 3 270M's 25.298).
    """
    import math
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path, load_external_data=False)
    producers = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type == "Mul" and n.name == "/model/embed_tokens/Mul":
            for inp in n.input:
                c = producers.get(inp)
                if c is not None and c.op_type == "Constant":
                    val = np.array(math.sqrt(dim), dtype=np.float32)
                    for a in c.attribute:
                        if a.name == "value":
                            a.t.CopyFrom(numpy_helper.from_array(val, a.t.name))
                    onnx.save(m, path)
                    return
    raise NanoError("onnx export: embedding scale not found in the built graph")


def _write_tokenizer(tokenizer, folder: str):
    """Our tokenizer in the HF form runtimes read (replaces what the builder re-saved)."""
    from .hf_checkpoint import hf_tokenizer_config, hf_tokenizer_json
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(hf_tokenizer_json(tokenizer))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(hf_tokenizer_config(tokenizer), f, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------ read back
def _dequant_matmulnbits(q: np.ndarray, scales: np.ndarray, n: int, k: int,
                         zero_points=None) -> np.ndarray:
    """MatMulNBits B [N, blocks, bs/2] uint8 (low nibble first) -> W [N, K] float32."""
    nb = q.shape[1]
    bs = q.shape[2] * 2
    lo, hi = q & 0x0F, q >> 4
    vals = np.stack([lo, hi], axis=-1).reshape(n, nb, bs).astype(np.float32)
    zp = 8.0 if zero_points is None else zero_points  # symmetric: implicit zero point 8
    w = (vals - zp) * scales.reshape(n, nb, 1).astype(np.float32)
    return w.reshape(n, nb * bs)[:, :k]


def dequantized_state_dict(folder: str, cfg) -> dict:
    """Our parameter names -> float32 weights of every int4 matrix in the ONNX graph.

    Covers the builder's fused qkv projection and the head (shared with the
    embedding through GatherBlockQuantized when tied). Norms are not quantized and
    are left to the caller (the builder stores Gemma's as 1 + w).
    """
    import onnx
    from onnx import numpy_helper
    from .hf_checkpoint import hf_name
    model = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hf_to_ours = {}
    from ..model import Transformer
    import torch
    with torch.device("meta"):
        names = list(Transformer(cfg).state_dict().keys())
    for nm in names:
        hf_to_ours[hf_name(nm, cfg.family)] = nm
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        zp = inits.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if zp is not None:
            raise NanoError("dequantize: asymmetric MatMulNBits is not handled")
        w = _dequant_matmulnbits(inits[node.input[1]], inits[node.input[2]], attrs["N"], attrs["K"])
        base = node.input[1].rsplit(".MatMul.weight_Q4", 1)[0]       # e.g. model.layers.0.attn.qkv_proj
        if base == "lm_head":
            out["output.weight" if not cfg.tie_embeddings else "embed.weight"] = w
            continue
        layer = base.split(".")[2]
        kind = base.split(".")[-1]
        if kind == "qkv_proj":
            q, kk = cfg.q_dim, cfg.kv_dim
            for part, rows in (("wq", w[:q]), ("wk", w[q:q + kk]), ("wv", w[q + kk:])):
                out[f"layers.{layer}.attn.{part}.weight"] = rows
        else:
            hf = f"model.layers.{layer}.{'self_attn' if kind.endswith('o_proj') else 'mlp'}." \
                 f"{kind}.weight"
            out[hf_to_ours[hf]] = w
    return out
