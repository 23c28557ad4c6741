"""The engine's native tokenizer (kernels/engine/tok_*.c) through ctypes.

The same C code tokenizes inside the engine, the Java/JNI binding and the
ARM64 build; this wrapper exists so tests (and tools) can hold it against
the Python Tokenizer (HF `tokenizers`):

    nt = NativeTokenizer.from_tokenizer(load_tokenizer("smollm2-135m-instruct"))
    nt.encode("Hello, world!")          # == tok.encode("Hello, world!")
    nt.decode(ids); nt.apply_chat([{"role": "user", "content": "Hi"}])
"""
from __future__ import annotations

import ctypes
import json
from typing import Optional

from . import _native
from .errors import NanoError

NANO_TOK_BYTE_BPE, NANO_TOK_SPM_BPE = 1, 2


class _Info(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("vocab_size", ctypes.c_int), ("bos_id", ctypes.c_int),
                ("eos_id", ctypes.c_int), ("add_bos", ctypes.c_int), ("chat_format", ctypes.c_int),
                ("n_stop_ids", ctypes.c_int), ("stop_ids", ctypes.POINTER(ctypes.c_int32))]


class _ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


def _lib():
    lib = _native.load()
    if not getattr(lib, "_tok_ready", False):
        P, S, I = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        lib.nano_tokenizer_load.argtypes = [ctypes.c_char_p, S, ctypes.c_char_p,
                                            ctypes.POINTER(P)]
        lib.nano_tokenizer_free.argtypes = [P]
        lib.nano_tokenizer_free.restype = None
        lib.nano_tokenizer_get_info.argtypes = [P, ctypes.POINTER(_Info)]
        lib.nano_tokenize.argtypes = [P, ctypes.c_char_p, S, I, I,
                                      ctypes.POINTER(ctypes.c_int32), I, ctypes.POINTER(I)]
        lib.nano_detokenize.argtypes = [P, ctypes.POINTER(ctypes.c_int32), I, I, ctypes.c_char_p,
                                        S, ctypes.POINTER(S)]
        lib.nano_token_piece.argtypes = [P, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(S)]
        lib.nano_chat_apply.argtypes = [P, ctypes.POINTER(_ChatMessage), I, I, ctypes.c_char_p,
                                        S, ctypes.POINTER(S)]
        lib.nano_detok_stream_create.argtypes = [P, ctypes.POINTER(P)]
        lib.nano_detok_stream_free.argtypes = [P]
        lib.nano_detok_stream_free.restype = None
        lib.nano_detok_stream_push.argtypes = [P, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p),
                                               ctypes.POINTER(S)]
        lib.nano_detok_stream_flush.argtypes = [P, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(S)]
        lib.nano_last_error.restype = ctypes.c_char_p
        lib._tok_ready = True
    return lib


def _check(lib, status: int, what: str):
    if status != 0:
        raise NanoError(f"{what}: {lib.nano_last_error().decode(errors='replace')} (status {status})")


class NativeTokenizer:
    _h = None

    def __init__(self, tokenizer_json: str, config: Optional[dict] = None):
        self._lib = _lib()
        self._h = ctypes.c_void_p()
        raw = tokenizer_json.encode("utf-8")
        cfg = json.dumps(config).encode("utf-8") if config is not None else None
        _check(self._lib, self._lib.nano_tokenizer_load(raw, len(raw), cfg, ctypes.byref(self._h)),
               "native tokenizer")
        info = _Info()
        self._lib.nano_tokenizer_get_info(self._h, ctypes.byref(info))
        self.kind, self.vocab_size = info.kind, info.vocab_size
        self.bos_id = None if info.bos_id < 0 else info.bos_id
        self.eos_id = None if info.eos_id < 0 else info.eos_id
        self.add_bos, self.chat_format = bool(info.add_bos), info.chat_format
        self.stop_ids = [info.stop_ids[i] for i in range(info.n_stop_ids)]

    @classmethod
    def from_tokenizer(cls, tok) -> "NativeTokenizer":
        """From a nano_runtime.tokenizer.Tokenizer (the same bytes a .nano file holds)."""
        return cls(tok.tokenizer_json, tok.config_dict())

    def close(self):
        if self._h:
            self._lib.nano_tokenizer_free(self._h)
            self._h = ctypes.c_void_p()

    __del__ = close

    def encode(self, text: str, add_bos: Optional[bool] = None, special: bool = False) -> list:
        raw = text.encode("utf-8", errors="surrogatepass")
        cap = len(raw) + 8
        while True:
            out = (ctypes.c_int32 * cap)()
            n = ctypes.c_int()
            _check(self._lib, self._lib.nano_tokenize(
                self._h, raw, len(raw), -1 if add_bos is None else int(add_bos), int(special),
                out, cap, ctypes.byref(n)), "tokenize")
            if n.value <= cap:
                return list(out[:n.value])
            cap = n.value

    def decode_bytes(self, ids, skip_special: bool = False) -> bytes:
        arr = (ctypes.c_int32 * len(ids))(*ids)
        cap = 16 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = ctypes.c_size_t()
            _check(self._lib, self._lib.nano_detokenize(self._h, arr, len(ids), int(skip_special),
                                                        buf, cap, ctypes.byref(n)), "detokenize")
            if n.value <= cap:
                return buf.raw[:n.value]
            cap = n.value

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def piece(self, token_id: int) -> bytes:
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        _check(self._lib, self._lib.nano_token_piece(self._h, token_id, ctypes.byref(p),
                                                     ctypes.byref(n)), "token piece")
        return ctypes.string_at(p, n.value)

    def stream_pieces(self, ids) -> list:
        """The byte chunks nano_detok_stream hands out for ids, one per token, then the
        flush: what a streaming callback receives (whole UTF-8 characters only)."""
        ds = ctypes.c_void_p()
        _check(self._lib, self._lib.nano_detok_stream_create(self._h, ctypes.byref(ds)), "stream")
        try:
            out = []
            p, n = ctypes.c_void_p(), ctypes.c_size_t()
            for i in ids:
                _check(self._lib, self._lib.nano_detok_stream_push(ds, i, ctypes.byref(p),
                                                                   ctypes.byref(n)), "stream")
                out.append(ctypes.string_at(p, n.value))
            _check(self._lib, self._lib.nano_detok_stream_flush(ds, ctypes.byref(p),
                                                                ctypes.byref(n)), "stream")
            out.append(ctypes.string_at(p, n.value))
            return out
        finally:
            self._lib.nano_detok_stream_free(ds)

    def apply_chat(self, messages: list, add_generation_prompt: bool = True) -> str:
        keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
        arr = (_ChatMessage * max(1, len(keep)))(*[_ChatMessage(r, c) for r, c in keep])
        cap = 256 + sum(len(r) + len(c) + 64 for r, c in keep)
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = ctypes.c_size_t()
            _check(self._lib, self._lib.nano_chat_apply(self._h, arr, len(keep),
                                                        int(add_generation_prompt), buf, cap,
                                                        ctypes.byref(n)), "chat")
            if n.value < cap:
                return buf.raw[:n.value].decode("utf-8")
            cap = n.value + 1
