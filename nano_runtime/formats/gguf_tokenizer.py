"""Rebuild a GGUF model's tokenizer as a Hugging Face `tokenizers` Tokenizer.

Two GGUF tokenizer models are supported, matching llama.cpp's behaviour:

* ``gpt2`` (SmolLM2): byte-level BPE from ``tokens`` + ``merges``. The
  ``smollm`` pre-tokenizer splits every digit on its own before the GPT-2
  byte-level regex; dropping that step disagrees with llama.cpp on numbers.
* ``llama`` (Gemma 3): SentencePiece-style BPE over ``tokens`` + ``scores``
  with byte fallback (``<0xNN>`` tokens). GGUF stores no merges, so they are
  derived: every split of a piece into two pieces is a merge, ranked by the
  merged piece's score (higher first), which is the order llama.cpp's SPM
  tokenizer merges in. Spaces become U+2581; no prefix space unless the
  GGUF asks for one.

Token types (GGUF): 3 = control (matched as special only when asked, as
llama.cpp's ``special=True``), 4 = user-defined (always matched whole, as
llama.cpp does), 6 = byte.
"""
from __future__ import annotations

import json

from ..errors import ModelFormatError

TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6


def _added(content: str, id_: int, special: bool) -> dict:
    return {"id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def _gpt2_json(tokens, types, merges, pre: str) -> dict:
    vocab = {t: i for i, t in enumerate(tokens)}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if pre in ("smollm",):
        pre_tok = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    elif pre in ("gpt2", "default", ""):
        pre_tok = byte_level
    else:
        raise ModelFormatError(f"unsupported GGUF pre-tokenizer {pre!r} for a gpt2 tokenizer "
                               "(supported: smollm, gpt2)")
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(t, i, types[i] == TT_CONTROL) for i, t in enumerate(tokens)
                         if types[i] in (TT_CONTROL, TT_USER)],
        "normalizer": None,
        "pre_tokenizer": pre_tok,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ", 1) for m in merges]},
    }


def _spm_merges(tokens, types, scores):
    """Merges for a score-ranked SentencePiece BPE vocabulary, best first."""
    vocab = {t: i for i, t in enumerate(tokens) if types[i] in (TT_NORMAL, TT_USER)}
    found = []
    for piece, pid in vocab.items():
        if len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            a, b = piece[:cut], piece[cut:]
            ia, ib = vocab.get(a), vocab.get(b)
            if ia is not None and ib is not None:
                found.append((-scores[pid], pid, ia, ib, a, b))
    found.sort()
    return [[a, b] for _, _, _, _, a, b in found]


def _spm_json(tokens, types, scores, unk_id: int, add_space_prefix: bool) -> dict:
    vocab = {t: i for i, t in enumerate(tokens)}
    normalizers = []
    if add_space_prefix:
        normalizers.append({"type": "Prepend", "prepend": "\u2581"})
    normalizers.append({"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"})
    decoders = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if add_space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(t, i, types[i] == TT_CONTROL) for i, t in enumerate(tokens)
                         if types[i] in (TT_CONTROL, TT_USER)],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None, "unk_token": tokens[unk_id],
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": _spm_merges(tokens, types, scores)},
    }


def tokenizer_json_from_gguf(meta: dict) -> str:
    """tokenizer.json text from GGUF `tokenizer.ggml.*` metadata (a plain dict)."""
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFormatError("GGUF has no tokenizer (tokenizer.ggml.tokens is missing)")
    types = meta.get("tokenizer.ggml.token_type") or [TT_NORMAL] * len(tokens)
    if model == "gpt2":
        merges = meta.get("tokenizer.ggml.merges")
        if merges is None:
            raise ModelFormatError("GGUF gpt2 tokenizer has no merges")
        tj = _gpt2_json(tokens, types, merges, meta.get("tokenizer.ggml.pre", "default"))
    elif model == "llama":
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            raise ModelFormatError("GGUF llama (SentencePiece) tokenizer has no scores")
        tj = _spm_json(tokens, types, scores, int(meta.get("tokenizer.ggml.unknown_token_id", 0)),
                       bool(meta.get("tokenizer.ggml.add_space_prefix", True)))
    else:
        raise ModelFormatError(f"unsupported GGUF tokenizer model {model!r} "
                               "(supported: gpt2, llama)")
    return json.dumps(tj, ensure_ascii=False)
