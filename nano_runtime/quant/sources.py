"""fp weight sources, streamed one tensor (and for big tensors one row chunk) at a time.

``open_source(MODEL)`` accepts what every command accepts: a .gguf file (read through the
cached fp import), a checkpoint directory, a .nano file (dequantized) or a model-card name
(package-backed cards are imported once; config-only cards such as nano-1 are generated
from their seed exactly as ``loader.build_model(cfg, None)`` / ``model.init_weights`` would,
but tensor by tensor and row chunk by row chunk, so a 1.8B model never sits in memory).

``Source.stream()`` yields (name, shape, chunks) in the reference model's parameter order;
``chunks`` is an iterator of float32 torch row blocks that must be consumed before the next
tensor is requested.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import ModelConfig
from ..errors import NanoError

CHUNK_ELEMS = 1 << 20  # 1M floats (4 MB) per row chunk


def rows_per_chunk(k: int) -> int:
    return max(1, CHUNK_ELEMS // max(k, 1))


def param_shapes(cfg: ModelConfig) -> list:
    """[(name, shape)] of the reference model's parameters, in named_parameters() order."""
    from ..model import Transformer
    with torch.device("meta"):
        m = Transformer(cfg)
    return [(n, tuple(p.shape)) for n, p in m.named_parameters()]


@dataclass
class Source:
    kind: str                 # checkpoint | nano | random
    config: ModelConfig
    tokenizer: object
    where: object             # directory / path / card dict
    seed: int = 0
    gguf_path: Optional[str] = None   # the original GGUF, for exact import

    def stream(self):
        if self.kind == "checkpoint":
            yield from self._stream_checkpoint()
        elif self.kind == "nano":
            yield from self._stream_nano()
        else:
            yield from self._stream_random()

    def _stream_checkpoint(self):
        from safetensors import safe_open
        path = os.path.join(self.where, "model.safetensors")
        try:
            f = safe_open(path, framework="pt")
        except Exception as e:
            raise NanoError(f"{path}: cannot read weights ({e})") from None
        with f:
            names = set(f.keys())
            for name, shape in param_shapes(self.config):
                if name not in names:
                    raise NanoError(f"{path}: tensor {name} is missing")
                sl = f.get_slice(name)
                if tuple(sl.get_shape()) != shape:
                    raise NanoError(f"{path}: tensor {name} has shape {sl.get_shape()}, "
                                    f"config says {list(shape)}")

                def chunks(sl=sl, shape=shape):
                    if len(shape) == 1:
                        yield sl[:].float()
                        return
                    r = rows_per_chunk(shape[1])
                    for r0 in range(0, shape[0], r):
                        yield sl[r0:r0 + r].float()
                yield name, shape, chunks()

    def _stream_nano(self):
        nf = self.where
        for name, shape in param_shapes(self.config):
            if name.endswith("norm.weight"):
                v = torch.from_numpy(nf.norm(name))
            else:
                v = torch.from_numpy(nf.weight(name[:-len(".weight")]))
            yield name, shape, iter([v])

    def _stream_random(self):
        """The exact values of model.init_weights(Transformer(cfg), seed), streamed."""
        from ..model import init_weights  # noqa: F401  (the rule mirrored here)
        cfg = self.config
        g = torch.Generator().manual_seed(self.seed)
        std = 0.02
        for name, shape in param_shapes(cfg):
            if len(shape) == 1:
                v = torch.zeros(shape) if cfg.norm_unit_offset else torch.ones(shape)
                yield name, shape, iter([v])
                continue
            s = std / math.sqrt(2 * cfg.n_layers) if name.endswith(("wo.weight", "w_down.weight")) \
                else std
            r = rows_per_chunk(shape[1])

            def chunks(shape=shape, s=s, r=r):
                for r0 in range(0, shape[0], r):
                    n = min(r, shape[0] - r0)
                    yield torch.randn((n, shape[1]), generator=g, dtype=torch.float32) * s
            yield name, shape, chunks()

    def load_model(self, dtype=torch.float32):
        """The whole fp reference model (for the calibrated methods on small models)."""
        from ..loader import build_model
        state = {}
        for name, shape, chunks in self.stream():
            state[name] = torch.cat(list(chunks)) if len(shape) == 2 else next(chunks)
        return build_model(self.config, state, dtype=dtype)


def open_source(spec: str, seed: int = 0) -> Source:
    from .. import cards, loader
    gguf_path = None
    if os.path.isfile(spec) and (spec.endswith(".gguf") or loader._magic(spec) == b"GGUF"):
        gguf_path = spec
    elif not os.path.exists(spec) and os.path.sep not in spec and cards.is_card_name(spec):
        card = cards.get_card(spec)
        if "source" in card and card["source"].get("format") == "gguf":
            gguf_path = cards.card_weights_path(card)
    kind, where = loader.resolve(spec)
    if kind == "checkpoint":
        from ..formats import checkpoint
        cfg = checkpoint.load_checkpoint_config(where)
        tok = loader.load_tokenizer(where) if os.path.isfile(os.path.join(where, "tokenizer.json")) \
            else None
        return Source("checkpoint", cfg, tok, where, seed, gguf_path)
    if kind == "nano":
        from ..formats.nano_file import open_nano
        nf = open_nano(where)
        return Source("nano", nf.config, nf.tokenizer(), nf, seed)
    if kind == "card-config":
        cfg = ModelConfig.from_dict(dict(where["config"], name=where["name"]))
        src = where.get("tokenizer_from")
        tok = loader.load_tokenizer(src) if src else None
        return Source("random", cfg, tok, where, seed)
    raise NanoError(f"cannot read weights from {spec}")
