"""fp weight sources, streamed one tensor (and for big tensors one row chunk) at a time.

``open_source(MODEL)`` accepts what every command accepts: a .gguf file (read through the
cached fp import), a checkpoint directory, a .nano file (dequantized) or a model-card name
(package-backed cards are imported once; config-only cards such as nano-1 are generated
from their seed tensor by tensor and row chunk by row chunk, so a 1.8B model never sits in
memory).

``Source.stream_np()`` yields (name, shape, chunks) in the reference model's parameter order;
``chunks`` is an iterator of float32 numpy row blocks that must be consumed before the next
tensor is requested. ``Source.stream()`` is the same with torch tensors. Opening a source and
``stream_np()`` never import torch (the streamed RTN path stays numpy-only: ~35 MiB of
interpreter instead of ~220 MiB), except for a bf16 checkpoint or a GGUF not yet imported.

Random-init cards: every weight matrix is normal(0, std) from numpy's PCG64 Generator seeded
with --seed, drawn tensor by tensor in parameter order (std 0.02, wo / w_down
0.02 / sqrt(2 * n_layers)); norms are 1 (0 for Gemma's 1 + w). These are the values the .nano
of a random card holds and that ``Source.load_model()`` returns; they are NOT torch's
``loader.build_model(cfg, None)`` values (torch's normal generator cannot be reproduced
without torch), which is a different random model of the same distribution.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import ModelConfig
from ..errors import NanoError

CHUNK_ELEMS = 1 << 20  # 1M floats (4 MB) per row chunk


def rows_per_chunk(k: int) -> int:
    return max(1, CHUNK_ELEMS // max(k, 1))


def param_shapes(cfg: ModelConfig) -> list:
    """[(name, shape)] of the reference model's parameters, in named_parameters() order
    (tests/test_quant.py checks it against the model built on the meta device)."""
    d = cfg.dim
    out = [("embed.weight", (cfg.vocab_size, d))]
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        out += [(p + "attn_norm.weight", (d,)), (p + "attn.wq.weight", (cfg.q_dim, d)),
                (p + "attn.wk.weight", (cfg.kv_dim, d)), (p + "attn.wv.weight", (cfg.kv_dim, d)),
                (p + "attn.wo.weight", (d, cfg.q_dim))]
        if cfg.qk_norm:
            out += [(p + "attn.q_norm.weight", (cfg.head_dim,)),
                    (p + "attn.k_norm.weight", (cfg.head_dim,))]
        out += [(p + "mlp_norm.weight", (d,)), (p + "mlp.w_gate.weight", (cfg.hidden_dim, d)),
                (p + "mlp.w_up.weight", (cfg.hidden_dim, d)),
                (p + "mlp.w_down.weight", (d, cfg.hidden_dim))]
        if cfg.post_norms:
            out += [(p + "post_attn_norm.weight", (d,)), (p + "post_mlp_norm.weight", (d,))]
    out.append(("norm.weight", (d,)))
    if not cfg.tie_embeddings:
        out.append(("output.weight", (cfg.vocab_size, d)))
    return out


def param_shapes_torch(cfg: ModelConfig) -> list:
    """The same list from the reference model itself (meta device; imports torch)."""
    import torch
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

    def stream_np(self):
        """(name, shape, numpy float32 row chunks) per parameter; torch-free."""
        if self.kind == "checkpoint":
            yield from self._stream_checkpoint()
        elif self.kind == "nano":
            yield from self._stream_nano()
        else:
            yield from self._stream_random()

    def stream(self):
        """stream_np() with torch tensors (for the calibrated methods and the engine)."""
        import torch
        for name, shape, chunks in self.stream_np():
            yield name, shape, (torch.from_numpy(np.ascontiguousarray(c)) for c in chunks)

    def _stream_checkpoint(self):
        from safetensors import safe_open
        path = os.path.join(self.where, "model.safetensors")
        try:
            f = safe_open(path, framework="numpy")
            names = set(f.keys())
            probe = next(iter(names), None)
            bf16 = probe is not None and any(
                f.get_slice(n).get_dtype() == "BF16" for n in names)
        except Exception as e:
            raise NanoError(f"{path}: cannot read weights ({e})") from None
        if bf16:  # numpy has no bfloat16: read those checkpoints through torch
            f = safe_open(path, framework="pt")
        for name, shape in param_shapes(self.config):
            if name not in names:
                raise NanoError(f"{path}: tensor {name} is missing")
            sl = f.get_slice(name)
            if tuple(sl.get_shape()) != shape:
                raise NanoError(f"{path}: tensor {name} has shape {sl.get_shape()}, "
                                f"config says {list(shape)}")

            def as_f32(a):
                if bf16:
                    return a.float().numpy()
                return np.asarray(a, dtype=np.float32)

            def chunks(sl=sl, shape=shape):
                if len(shape) == 1:
                    yield as_f32(sl[:])
                    return
                r = rows_per_chunk(shape[1])
                for r0 in range(0, shape[0], r):
                    yield as_f32(sl[r0:min(r0 + r, shape[0])])
            yield name, shape, chunks()

    def _stream_nano(self):
        nf = self.where
        for name, shape in param_shapes(self.config):
            if name.endswith("norm.weight"):
                v = np.asarray(nf.norm(name), dtype=np.float32)
            else:
                v = np.asarray(nf.weight(name[:-len(".weight")]), dtype=np.float32)
            yield name, shape, iter([v])

    def _stream_random(self):
        """normal(0, std) from numpy's PCG64(seed), tensor by tensor (see the module doc)."""
        cfg = self.config
        g = np.random.Generator(np.random.PCG64(self.seed))
        std = 0.02
        for name, shape in param_shapes(cfg):
            if len(shape) == 1:
                v = np.full(shape, 0.0 if cfg.norm_unit_offset else 1.0, np.float32)
                yield name, shape, iter([v])
                continue
            s = std / math.sqrt(2 * cfg.n_layers) if name.endswith(("wo.weight", "w_down.weight")) \
                else std
            r = rows_per_chunk(shape[1])

            def chunks(shape=shape, s=np.float32(s), r=r):
                for r0 in range(0, shape[0], r):
                    n = min(r, shape[0] - r0)
                    c = g.standard_normal((n, shape[1]), dtype=np.float32)
                    c *= s
                    yield c
            yield name, shape, chunks()

    def load_model(self, dtype=None):
        """The whole fp reference model (for the calibrated methods on small models)."""
        import torch
        from ..loader import build_model
        state = {}
        for name, shape, chunks in self.stream_np():
            state[name] = torch.from_numpy(np.concatenate(list(chunks)) if len(shape) == 2
                                           else next(chunks))
        return build_model(self.config, state, dtype=dtype or torch.float32)


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


def _cached_import_dir(gguf: str) -> Optional[str]:
    """The checkpoint directory loader.cached_import() made of this GGUF, if it exists
    (same key as loader.cache_dir()/_file_key(); tests/test_quant.py checks they agree)."""
    import hashlib
    from ..formats import checkpoint
    d = os.environ.get("NANO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "nano_runtime")
    st = os.stat(gguf)
    key = hashlib.sha256(f"{os.path.abspath(gguf)}|{st.st_size}|{int(st.st_mtime)}".encode())
    out = os.path.join(d, "import-" + key.hexdigest()[:16])
    return out if checkpoint.is_checkpoint_dir(out) else None


def resolve_light(spec: str):
    """loader.resolve(spec) without importing torch; None where only the loader can answer
    (a GGUF not imported yet, or an error to report in the loader's words)."""
    from .. import cards
    from ..formats import checkpoint
    if os.path.isfile(spec) and (spec.endswith(".gguf") or _magic(spec) == b"GGUF"):
        d = _cached_import_dir(spec)
        return None if d is None else ("checkpoint", d)
    if os.path.isdir(spec):
        return ("checkpoint", spec) if checkpoint.is_checkpoint_dir(spec) else None
    if os.path.isfile(spec) and (spec.endswith(".nano") or (
            _magic(spec) != b"GGUF" and os.path.splitext(spec)[1] not in ("", ".json"))):
        return "nano", spec
    if os.path.exists(spec) or os.path.sep in spec or not cards.is_card_name(spec):
        return None
    card = cards.get_card(spec)
    if "source" in card:
        d = _cached_import_dir(cards.card_weights_path(card))
        return None if d is None else ("checkpoint", d)
    return "card-config", card


def _resolve(spec: str):
    r = resolve_light(spec)
    if r is None:
        from .. import loader
        r = loader.resolve(spec)
    return r


def _tokenizer_of(spec: str):
    kind, where = _resolve(spec)
    if kind == "checkpoint":
        if not os.path.isfile(os.path.join(where, "tokenizer.json")):
            return None
        from ..tokenizer import Tokenizer
        return Tokenizer.load(where)
    if kind == "card-config":
        src = where.get("tokenizer_from")
        return _tokenizer_of(src) if src else None
    from ..formats.nano_file import read_tokenizer
    return read_tokenizer(where)


def open_source(spec: str, seed: int = 0) -> Source:
    from .. import cards
    gguf_path = None
    if os.path.isfile(spec) and (spec.endswith(".gguf") or _magic(spec) == b"GGUF"):
        gguf_path = spec
    elif not os.path.exists(spec) and os.path.sep not in spec and cards.is_card_name(spec):
        card = cards.get_card(spec)
        if "source" in card and card["source"].get("format") == "gguf":
            gguf_path = cards.card_weights_path(card)
    kind, where = _resolve(spec)
    if kind == "checkpoint":
        from ..formats import checkpoint
        cfg = checkpoint.load_checkpoint_config(where)
        tok = _tokenizer_of(where)
        return Source("checkpoint", cfg, tok, where, seed, gguf_path)
    if kind == "nano":
        from ..formats.nano_file import open_nano
        nf = open_nano(where)
        return Source("nano", nf.config, nf.tokenizer(), nf, seed)
    if kind == "card-config":
        cfg = ModelConfig.from_dict(dict(where["config"], name=where["name"]))
        src = where.get("tokenizer_from")
        tok = _tokenizer_of(src) if src else None
        return Source("random", cfg, tok, where, seed)
    raise NanoError(f"cannot read weights from {spec}")
