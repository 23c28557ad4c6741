"""fp checkpoint directories: model.safetensors + config.json + tokenizer files.

Written atomically: everything goes into a temporary sibling directory that is
renamed into place at the end, so an interrupted write leaves the previous
directory (or nothing) behind, never a half-written one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from ..config import ModelConfig
from ..errors import ModelFormatError, NanoError

WEIGHTS = "model.safetensors"


def atomic_write_bytes(path: str, data: bytes):
    """Write `data` to `path` through a temp file and rename."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicDir:
    """Context manager: yields a temp directory that replaces `target` on success."""

    def __init__(self, target: str):
        self.target = os.path.abspath(target)

    def __enter__(self) -> str:
        parent = os.path.dirname(self.target)
        try:
            os.makedirs(parent, exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(self.target) + "-",
                                        dir=parent)
        except OSError as e:
            raise NanoError(f"cannot write to {self.target}: {e.strerror}") from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if os.path.exists(self.target):
            if not os.path.isdir(self.target):
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise NanoError(f"{self.target} exists and is not a directory")
            old = self.target + ".old-" + os.path.basename(self.tmp)
            os.rename(self.target, old)
        os.rename(self.tmp, self.target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return False


def save_checkpoint(directory: str, cfg: ModelConfig, tensors: dict, tokenizer=None):
    """Write a checkpoint directory atomically. tensors: name -> numpy array or torch tensor."""
    from safetensors.numpy import save_file
    import numpy as np
    arrays = {}
    for k, v in tensors.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().contiguous().numpy()
        arrays[k] = np.ascontiguousarray(v)
    with AtomicDir(directory) as tmp:
        save_file(arrays, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(cfg.to_json())
        if tokenizer is not None:
            tokenizer.save(tmp)


def is_checkpoint_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def load_checkpoint_config(directory: str) -> ModelConfig:
    try:
        with open(os.path.join(directory, "config.json")) as f:
            d = json.load(f)
        return ModelConfig.from_dict(d)
    except FileNotFoundError:
        raise ModelFormatError(f"{directory}: not a checkpoint directory (no config.json)") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{directory}/config.json: invalid ({e})") from None


def load_checkpoint_tensors(directory: str) -> dict:
    """name -> torch tensor (read through safetensors, never pickle)."""
    from safetensors.torch import load_file
    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        raise ModelFormatError(f"{directory}: no {WEIGHTS}")
    try:
        return load_file(path)
    except Exception as e:
        raise ModelFormatError(f"{path}: corrupt or truncated safetensors ({e})") from None
