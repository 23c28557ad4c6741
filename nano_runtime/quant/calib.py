"""Calibration text and token batches for the calibrated methods (GPTQ, AWQ).

Default text: the "calib" split of nano_runtime.data (CPython's bundled English reference
docs), disjoint from the "eval" split used for perplexity. ``--calib FILE`` replaces it;
``--calib builtin:train`` takes the larger "train" split (~90k SmolLM2 tokens, room for
~170 x 512-token windows, also disjoint from "eval"), ``builtin:calib`` names the default.
The held-out "eval" split is refused: calibrating on it would flatter every perplexity.
"""
from __future__ import annotations

import os

import torch

from ..errors import NanoError

DEFAULT_NAME = "builtin:calib (nano_runtime.data english_text('calib'))"
BUILTIN_SPLITS = ("calib", "train")


def builtin_name(split: str) -> str:
    return f"builtin:{split} (nano_runtime.data english_text({split!r}))"


def read_calib_text(path=None) -> tuple:
    """(text, description) of the calibration text; clear errors for bad files."""
    if path is None:
        path = "builtin:calib"
    if isinstance(path, str) and path.startswith("builtin:") and not os.path.exists(path):
        split = path[len("builtin:"):]
        if split not in BUILTIN_SPLITS:
            raise NanoError(f"calibration text {path}: the built-in splits are "
                            f"{', '.join('builtin:' + s for s in BUILTIN_SPLITS)} (the eval "
                            f"split is held out for perplexity)")
        from ..data import english_text
        return english_text(split), builtin_name(split)
    if not os.path.exists(path):
        raise NanoError(f"calibration file {path}: no such file")
    if os.path.isdir(path):
        raise NanoError(f"calibration file {path}: is a directory")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise NanoError(f"calibration file {path}: not valid UTF-8 text") from None
    except OSError as e:
        raise NanoError(f"calibration file {path}: {e.strerror}") from None
    if not text.strip():
        raise NanoError(f"calibration file {path} is empty")
    return text, os.path.basename(path)


def calib_batches(tokenizer, text: str, n_seq: int, seq_len: int,
                  spread: bool = False) -> torch.Tensor:
    """LongTensor [n, T]: up to n_seq windows of seq_len tokens (BOS first when the tokenizer
    adds one), consecutive from the start of the text, or with ``spread`` evenly spaced over
    all the text's non-overlapping windows (more varied text for the same token count). A
    text shorter than one window gives one shorter window."""
    if tokenizer is None:
        raise NanoError("the model has no tokenizer: cannot tokenize calibration text")
    ids = tokenizer.encode(text, add_bos=False)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    step = seq_len - len(bos)
    if len(ids) < 16:
        raise NanoError(f"calibration text has only {len(ids)} tokens; need at least 16")
    if len(ids) < step:
        return torch.tensor([bos + ids])
    avail = len(ids) // step
    n = min(n_seq, avail)
    starts = range(n) if not spread else sorted({(j * avail) // n for j in range(n)})
    return torch.tensor([bos + ids[i * step:(i + 1) * step] for i in starts])
