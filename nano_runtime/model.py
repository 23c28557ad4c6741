"""The PyTorch reference decoder: the spec every other path is tested against.

One module covers the Llama family (SmolLM2, nano-1/nano-2) and the Gemma 3
family through ModelConfig flags. It follows, for Llama, Meta's reference
``model.py`` and gpt-fast; for Gemma 3, Hugging Face's ``modeling_gemma3``:

    x = embed(tokens) [* sqrt(dim)]                               [B, T, D]
    per layer i:
        h = attn(norm(x))   [-> post_attn_norm]    ; x = x + h
        h = mlp(norm(x))    [-> post_mlp_norm]     ; x = x + h
    logits = norm(x) @ head.T                                     [B, T, V]

Attention uses half-split RoPE ("rotate_half", the HF layout; Llama GGUF q/k
weights are un-permuted on import), grouped-query attention, optional QK-norm,
and for Gemma 3 a sliding window on local layers (a query at position p sees
keys at positions p - window < k <= p) with its own RoPE base.

The KV cache is a pair of registered buffers per layer written at
``input_pos`` (gpt-fast style), so a forward over the cache exports cleanly.
Cached incremental decoding equals full recomputation (tests/test_model.py).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32; multiplies by w, or by (1 + w) for Gemma."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False):
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.weight.float()
        y = y * (1.0 + w if self.unit_offset else w)
        return y.type_as(x)


def rope_tables(head_dim: int, theta: float, positions: torch.Tensor):
    """cos, sin of shape [T, head_dim] for half-split RoPE at `positions` [T]."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32,
                                        device=positions.device) / head_dim))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]          # [T, hd/2]
    ang = torch.cat([ang, ang], dim=-1)                                 # [T, hd]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd] rotated in halves: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot.float() * sin).type_as(x)


class KVCache(nn.Module):
    """Static per-layer cache [B, n_kv, S, hd], written at input_pos."""

    def __init__(self, batch: int, n_kv: int, seq_len: int, head_dim: int, dtype):
        super().__init__()
        shape = (batch, n_kv, seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.window = cfg.layer_window(layer)
        self.theta = cfg.layer_rope_theta(layer)
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.wq = nn.Linear(cfg.dim, cfg.q_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_dim, bias=False)
        self.wo = nn.Linear(cfg.q_dim, cfg.dim, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.norm_eps, cfg.norm_unit_offset)
            self.k_norm = RMSNorm(self.hd, cfg.norm_eps, cfg.norm_unit_offset)
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.hd).transpose(1, 2)   # [B, H, T, hd]
        k = self.wk(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)      # [B, Hkv, T, hd]
        v = self.wv(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_tables(self.hd, self.theta, pos)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if self.kv_cache is not None:
            k, v = self.kv_cache.update(pos, k, v)
            kpos = torch.arange(k.shape[2], device=x.device)
        else:
            kpos = pos
        # mask [T, S]: causal, and inside the window for local layers
        allowed = kpos[None, :] <= pos[:, None]
        if self.window:
            allowed = allowed & (pos[:, None] - kpos[None, :] < self.window)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w_up = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w_down = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.gelu = cfg.activation == "gelu_tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.w_gate(x)
        g = F.gelu(g, approximate="tanh") if self.gelu else F.silu(g)
        return self.w_down(g * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        eps, off = cfg.norm_eps, cfg.norm_unit_offset
        self.attn_norm = RMSNorm(cfg.dim, eps, off)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.dim, eps, off)
        self.mlp = MLP(cfg)
        self.post_norms = cfg.post_norms
        if cfg.post_norms:
            self.post_attn_norm = RMSNorm(cfg.dim, eps, off)
            self.post_mlp_norm = RMSNorm(cfg.dim, eps, off)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.attn(self.attn_norm(x), pos)
        if self.post_norms:
            h = self.post_attn_norm(h)
        x = x + h
        h = self.mlp(self.mlp_norm(x))
        if self.post_norms:
            h = self.post_mlp_norm(h)
        return x + h


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)
        if not cfg.tie_embeddings:
            self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.embed_scale = math.sqrt(cfg.dim) if cfg.embed_scale else 1.0
        self.gradient_checkpointing = False

    # ----------------------------------------------------------------- cache
    def setup_cache(self, batch: int = 1, seq_len: Optional[int] = None, dtype=None):
        """Allocate a static KV cache; forward() then needs input_pos."""
        seq_len = seq_len or self.cfg.max_seq_len
        dtype = dtype or self.embed.weight.dtype
        dev = self.embed.weight.device
        for blk in self.layers:
            blk.attn.kv_cache = KVCache(batch, self.cfg.n_kv_heads, seq_len,
                                        self.cfg.head_dim, dtype).to(dev)

    def clear_cache(self):
        for blk in self.layers:
            blk.attn.kv_cache = None

    # --------------------------------------------------------------- forward
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.cfg.tie_embeddings else self.output.weight

    def forward(self, tokens: torch.Tensor, input_pos: Optional[torch.Tensor] = None,
                output_hidden_states: bool = False):
        """tokens [B, T] -> logits [B, T, V] (and the hidden state after each layer).

        input_pos [T] gives the positions of `tokens`; it defaults to 0..T-1 and is
        required once a cache is set up.
        """
        B, T = tokens.shape
        if input_pos is None:
            input_pos = torch.arange(T, device=tokens.device)
        x = self.embed(tokens)
        if self.embed_scale != 1.0:
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        hidden = []
        for blk in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(blk, x, input_pos, use_reentrant=False)
            else:
                x = blk(x, input_pos)
            if output_hidden_states:
                hidden.append(x)
        x = self.norm(x)
        logits = F.linear(x, self.head_weight())
        return (logits, hidden) if output_hidden_states else logits


def init_weights(model: Transformer, seed: int = 0, std: float = 0.02):
    """Deterministic random init (normal(0, std), scaled-down output projections)."""
    g = torch.Generator().manual_seed(seed)
    n_layers = model.cfg.n_layers
    for name, p in model.named_parameters():
        with torch.no_grad():
            if p.ndim == 1:
                p.zero_() if model.cfg.norm_unit_offset else p.fill_(1.0)
            else:
                s = std / math.sqrt(2 * n_layers) if name.endswith(("wo.weight", "w_down.weight")) else std
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * s)
    return model
