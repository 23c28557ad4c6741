"""Turn a MODEL argument into a config, a tokenizer and a reference model.

MODEL is a ``.gguf`` file, a checkpoint directory, a ``.nano`` file or a
model-card name (models/*.json). GGUF files (and cards backed by one) are
imported once into a cache directory (``$NANO_CACHE`` or
``~/.cache/nano_runtime``) and read from there afterwards.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import cards
from .config import ModelConfig
from .errors import ModelFormatError, NanoError
from .formats import checkpoint
from .progress import progress_bar
from .tokenizer import Tokenizer


@dataclass
class LoadedModel:
    config: ModelConfig
    tokenizer: Optional[Tokenizer]
    model: Optional[torch.nn.Module]
    source: str           # what MODEL resolved to (a file or a directory)
    kind: str             # gguf | checkpoint | nano | card-config


def cache_dir() -> str:
    d = os.environ.get("NANO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "nano_runtime")
    os.makedirs(d, exist_ok=True)
    return d


def _file_key(path: str) -> str:
    st = os.stat(path)
    h = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def import_gguf(path: str, out_dir: str, name: str = "custom", chat_template=None,
                show_progress: bool = True) -> str:
    """Convert a GGUF file into an fp32 checkpoint directory (atomically)."""
    from .formats.gguf_import import (config_from_gguf, iter_reference_tensors, open_gguf,
                                      tokenizer_from_gguf)
    g = open_gguf(path)
    cfg = config_from_gguf(g, name)
    tok = tokenizer_from_gguf(g, chat_template)
    tensors = {}
    with progress_bar(total=len(g.reader.tensors), desc=f"import {os.path.basename(path)}",
                      unit="tensor", disable=not show_progress) as bar:
        for k, w in iter_reference_tensors(g, cfg, bar):
            tensors[k] = w
    checkpoint.save_checkpoint(out_dir, cfg, tensors, tok)
    return out_dir


def cached_import(path: str, name: str = "custom", chat_template=None) -> str:
    """Checkpoint directory of a GGUF file, importing it on first use."""
    out = os.path.join(cache_dir(), "import-" + _file_key(path))
    if not checkpoint.is_checkpoint_dir(out):
        import_gguf(path, out, name, chat_template)
    return out


def resolve(spec: str) -> tuple:
    """(kind, path_or_card) for a MODEL argument, importing GGUF files on first use."""
    if spec.endswith(".gguf") or (os.path.isfile(spec) and _magic(spec) == b"GGUF"):
        if not os.path.exists(spec):
            raise ModelFormatError(f"{spec}: no such file")
        from .formats.gguf_import import open_gguf
        open_gguf(spec)  # validate before anything is cached
        return "checkpoint", cached_import(spec)
    if os.path.isdir(spec):
        if not checkpoint.is_checkpoint_dir(spec):
            raise ModelFormatError(f"{spec}: not a checkpoint directory (no config.json)")
        return "checkpoint", spec
    if spec.endswith(".nano") or (os.path.isfile(spec) and _magic(spec) != b"GGUF"
                                  and os.path.splitext(spec)[1] not in ("", ".json")):
        if not os.path.exists(spec):
            raise ModelFormatError(f"{spec}: no such file")
        return "nano", spec
    if os.path.sep in spec or os.path.exists(spec):
        raise ModelFormatError(f"{spec}: no such model file or directory")
    card = cards.get_card(spec)
    if "source" in card:
        path = cards.card_weights_path(card)
        return "checkpoint", cached_import(path, card["name"], card.get("chat_template"))
    return "card-config", card


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


def load_tokenizer(spec: str) -> Optional[Tokenizer]:
    kind, where = resolve(spec)
    if kind == "checkpoint":
        return Tokenizer.load(where) if os.path.isfile(os.path.join(where, "tokenizer.json")) else None
    if kind == "card-config":
        src = where.get("tokenizer_from")
        return load_tokenizer(src) if src else None
    if kind == "nano":
        from .formats import nano_file
        return nano_file.read_tokenizer(where)
    raise NanoError(f"cannot load a tokenizer from {spec}")


def build_model(cfg: ModelConfig, state: Optional[dict] = None, seed: int = 0,
                dtype=torch.float32) -> torch.nn.Module:
    """A reference Transformer, from a state dict (assigned, no copy) or random init."""
    from .model import Transformer, init_weights
    if state is None:
        m = Transformer(cfg)
        init_weights(m, seed)
        return m.to(dtype)
    with torch.device("meta"):
        m = Transformer(cfg)
    state = {k: v.to(dtype) for k, v in state.items()}
    expected = set(m.state_dict().keys())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelFormatError(f"weights do not match the config: missing {sorted(missing)[:3]}, "
                               f"unexpected {sorted(unexpected)[:3]}")
    for k, v in m.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelFormatError(f"tensor {k} has shape {tuple(state[k].shape)}, config says "
                                   f"{tuple(v.shape)}")
    m.load_state_dict(state, assign=True)
    return m


def load_model(spec: str, dtype=torch.float32, with_model: bool = True) -> LoadedModel:
    kind, where = resolve(spec)
    if kind == "checkpoint":
        cfg = checkpoint.load_checkpoint_config(where)
        tok = load_tokenizer(where) if os.path.isfile(os.path.join(where, "tokenizer.json")) else None
        model = build_model(cfg, checkpoint.load_checkpoint_tensors(where), dtype=dtype) \
            if with_model else None
        return LoadedModel(cfg, tok, model, where, kind)
    if kind == "card-config":
        cfg = ModelConfig.from_dict(dict(where["config"], name=where["name"]))
        src = where.get("tokenizer_from")
        tok = load_tokenizer(src) if src else None
        model = build_model(cfg, None, dtype=dtype) if with_model else None
        return LoadedModel(cfg, tok, model, where["name"], kind)
    if kind == "nano":
        from .formats import nano_file
        return nano_file.load_reference(where, dtype=dtype, with_model=with_model)
    raise NanoError(f"cannot load {spec}")
