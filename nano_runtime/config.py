"""Model configuration: one dataclass for both families, validated, with presets.

The two supported families are switched by flags, not by classes:

* ``llama``  (SmolLM2, nano-1/nano-2): RMSNorm with weight w, SwiGLU MLP,
  RoPE on every layer, optional tied embeddings.
* ``gemma3`` (Gemma 3): RMSNorm with (1 + w), QK-norm, pre and post norms
  around attention and MLP, GeGLU (tanh), embeddings scaled by sqrt(dim),
  5 local sliding-window layers for every global one (global when
  ``i % sliding_window_pattern == sliding_window_pattern - 1``) with their own
  RoPE bases, and attention scaled by ``query_pre_attn_scalar ** -0.5``.

Presets live in ``models/*.json`` (model cards); ``ModelConfig.from_name``
reads them, so every preset is defined in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

FAMILIES = ("llama", "gemma3")
ACTIVATIONS = ("silu", "gelu_tanh")


@dataclass
class ModelConfig:
    name: str = "custom"
    family: str = "llama"
    vocab_size: int = 49152
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 0            # 0: dim // n_heads
    hidden_dim: int = 1536       # MLP inner width
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # global layers (every layer for llama)
    rope_theta_local: float = 10000.0  # gemma3 sliding-window layers
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    activation: str = "silu"
    # gemma3 flags
    qk_norm: bool = False
    post_norms: bool = False
    norm_unit_offset: bool = False   # RMSNorm multiplies by (1 + w)
    embed_scale: bool = False        # multiply embeddings by sqrt(dim)
    sliding_window: int = 0          # 0: no sliding-window layers
    sliding_window_pattern: int = 6  # every Nth layer is global
    query_pre_attn_scalar: float = 0.0  # 0: head_dim
    extra: dict = field(default_factory=dict)  # free-form notes (source, license)

    def __post_init__(self):
        if self.head_dim == 0:
            self.head_dim = self.dim // max(self.n_heads, 1)
        if self.query_pre_attn_scalar == 0:
            self.query_pre_attn_scalar = float(self.head_dim)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self):
        def bad(name, why):
            raise ValueError(f"ModelConfig.{name}: {why}")

        if self.family not in FAMILIES:
            bad("family", f"{self.family!r} is not one of {FAMILIES}")
        if self.activation not in ACTIVATIONS:
            bad("activation", f"{self.activation!r} is not one of {ACTIVATIONS}")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "hidden_dim", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                bad(name, f"must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            bad("n_kv_heads", f"{self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.head_dim % 2:
            bad("head_dim", f"must be even for RoPE, got {self.head_dim}")
        if not (self.norm_eps > 0):
            bad("norm_eps", f"must be > 0, got {self.norm_eps}")
        if self.rope_theta <= 0 or self.rope_theta_local <= 0:
            bad("rope_theta", "RoPE bases must be > 0")
        if self.sliding_window < 0:
            bad("sliding_window", f"must be >= 0, got {self.sliding_window}")
        if self.sliding_window and self.sliding_window_pattern < 1:
            bad("sliding_window_pattern", "must be >= 1 when sliding_window is set")

    # ------------------------------------------------------------- structure
    def is_global_layer(self, i: int) -> bool:
        """True for layers that attend to the whole context with rope_theta."""
        if not self.sliding_window:
            return True
        p = self.sliding_window_pattern
        return i % p == p - 1

    def layer_window(self, i: int) -> int:
        """Attention window of layer i in tokens (0 = unlimited)."""
        return 0 if self.is_global_layer(i) else self.sliding_window

    def layer_rope_theta(self, i: int) -> float:
        return self.rope_theta if self.is_global_layer(i) else self.rope_theta_local

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    # ------------------------------------------------------------ parameters
    def layer_params(self) -> int:
        d, h = self.dim, self.hidden_dim
        attn = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d
        mlp = 3 * d * h
        norms = 2 * d + (2 * d if self.post_norms else 0)
        norms += 2 * self.head_dim if self.qk_norm else 0
        return attn + mlp + norms

    def embedding_params(self) -> int:
        return self.vocab_size * self.dim

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count computed from the shapes (tied head counted once)."""
        n = self.n_layers * self.layer_params() + self.dim  # + final norm
        if include_embeddings:
            n += self.embedding_params() * (1 if self.tie_embeddings else 2)
        return n

    # ---------------------------------------------------------------- (de)ser
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a dict; unknown keys are dropped (forward compatible)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_name(cls, name: str) -> "ModelConfig":
        """The config of a model card that defines one (tiny, nano-1, nano-2)."""
        from .cards import get_card
        card = get_card(name)
        if "config" not in card:
            raise ValueError(f"model card {name!r} takes its config from its weights; "
                             "load the model instead")
        return cls.from_dict(dict(card["config"], name=name))
