"""nano_runtime.Engine: the Python binding of the native engine (kernels/include/nano.h).

ctypes over libnano; no torch import (a phone-sized process stays small). The
engine works on token ids; text goes through nano_runtime.tokenizer.Tokenizer
built from the file's "tokenizer.json" tensor and "nano.tokenizer_config".

    eng = Engine("model.nano", threads=2, profile="low")
    res = eng.generate("Once upon a time", max_tokens=32)        # GenerationResult
    for piece in eng.stream("Hello"): print(piece, end="")
    chat = eng.chat_session(system="Be brief.")
    for piece in chat.send("Hi!"): ...
    eng.stats(); eng.close()

Errors: every non-zero status raises NanoError (ModelFormatError for bad files)
with the engine's detailed message. A closed engine raises NanoError on any call
(no use-after-free). Generation runs in a worker thread when streaming, so
Ctrl-C in the caller cancels it cleanly (nano_context_cancel).

Also here: the functions the CLI calls for ``--backend native``
(native_generate, native_ppl_setup, native_chat) and ``resolve_nano`` which turns
any MODEL argument into a .nano file, converting GGUF files / model cards once
into a cache.
"""
from __future__ import annotations

import ctypes as C
import hashlib
import json
import os
import queue
import sys
import threading
import time
from typing import Callable, Iterator, Optional

import numpy as np

from . import _native
from .errors import ModelFormatError, NanoError
from .sampling import GenerationResult, SamplingParams, peak_rss_mb  # noqa: F401 (re-exported)

# ---------------------------------------------------------------- status codes (nano.h)
OK, ERR_INVALID_ARG, ERR_IO, ERR_FORMAT, ERR_UNSUPPORTED, ERR_NO_MEMORY, ERR_BUDGET, \
    ERR_CONTEXT_FULL, ERR_CANCELLED, ERR_KERNEL, ERR_STATE = range(11)
STOP_NAMES = {0: "none", 1: "length", 2: "stop", 3: "context", 4: "cancelled", 5: "callback",
              6: "stop_string"}
MAX_STOP_STRINGS, MAX_STOP_STRING_BYTES = 16, 256  # NANO_MAX_STOP_STRINGS / _BYTES
PROFILES = {None: 0, "none": 0, "low": 1, "high": 2}
KV_TYPES = {None: 0, "auto": 0, "f16": 1, "i8": 2}
KV_NAMES = {1: "f16", 2: "i8"}


class _ModelParams(C.Structure):
    _fields_ = [("prefault", C.c_int), ("no_mmap", C.c_int)]


class _ModelInfo(C.Structure):
    _fields_ = [("family", C.c_int), ("vocab_size", C.c_int), ("dim", C.c_int),
                ("n_layers", C.c_int), ("n_heads", C.c_int), ("n_kv_heads", C.c_int),
                ("head_dim", C.c_int), ("hidden_dim", C.c_int), ("max_seq_len", C.c_int),
                ("sliding_window", C.c_int), ("n_global_layers", C.c_int),
                ("file_bytes", C.c_int64), ("n_params", C.c_int64)]


class _CtxParams(C.Structure):
    _fields_ = [("n_ctx", C.c_int), ("n_threads", C.c_int), ("n_batch", C.c_int),
                ("kv_type", C.c_int), ("profile", C.c_int), ("memory_budget", C.c_int64),
                ("precise", C.c_int)]


class _Plan(C.Structure):
    _fields_ = [("n_ctx", C.c_int), ("kv_type", C.c_int), ("weights_bytes", C.c_int64),
                ("kv_bytes", C.c_int64), ("scratch_bytes", C.c_int64),
                ("total_bytes", C.c_int64), ("budget_bytes", C.c_int64)]


class _SamplerParams(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_k", C.c_int), ("top_p", C.c_float),
                ("min_p", C.c_float), ("repetition_penalty", C.c_float), ("seed", C.c_uint64)]


_TOKEN_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int32)


class _GenParams(C.Structure):
    _fields_ = [("max_tokens", C.c_int), ("sampler", _SamplerParams),
                ("stop_ids", C.POINTER(C.c_int32)), ("n_stop_ids", C.c_int),
                ("on_token", _TOKEN_FN), ("user", C.c_void_p),
                # added after 0.1 (at the end of the struct)
                ("tokenizer", C.c_void_p), ("stop_strings", C.POINTER(C.c_char_p)),
                ("n_stop_strings", C.c_int), ("context_shift", C.c_int), ("n_keep", C.c_int)]


class _GenResult(C.Structure):
    _fields_ = [("n_prompt", C.c_int), ("n_generated", C.c_int), ("stop_reason", C.c_int),
                ("prefill_s", C.c_double), ("decode_s", C.c_double),
                ("prefill_tok_s", C.c_double), ("decode_tok_s", C.c_double)]


class _Stats(C.Structure):
    _fields_ = [("prefill_tokens", C.c_int64), ("decode_tokens", C.c_int64),
                ("prefill_s", C.c_double), ("decode_s", C.c_double),
                ("kv_bytes", C.c_int64), ("scratch_bytes", C.c_int64),
                ("weights_bytes", C.c_int64), ("peak_rss_bytes", C.c_int64),
                ("n_threads", C.c_int), ("n_ctx", C.c_int), ("n_past", C.c_int),
                ("kv_type", C.c_int), ("kernel", C.c_char_p)]


_LIB = None


def lib():
    """libnano with the engine's prototypes declared (once)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    L = _native.load()
    P, I, V = C.c_void_p, C.c_int, None
    protos = {
        "nano_status_message": (C.c_char_p, [I]),
        "nano_last_error": (C.c_char_p, []),
        "nano_api_version": (I, []),
        "nano_model_load": (I, [C.c_char_p, C.POINTER(_ModelParams), C.POINTER(P)]),
        "nano_model_free": (V, [P]),
        "nano_model_get_info": (I, [P, C.POINTER(_ModelInfo)]),
        "nano_model_meta": (C.c_char_p, [P, C.c_char_p]),
        "nano_model_tensor": (I, [P, C.c_char_p, C.POINTER(P), C.POINTER(C.c_size_t)]),
        "nano_context_default_params": (_CtxParams, []),
        "nano_plan_memory": (I, [P, C.POINTER(_CtxParams), C.POINTER(_Plan)]),
        "nano_context_create": (I, [P, C.POINTER(_CtxParams), C.POINTER(P)]),
        "nano_context_free": (V, [P]),
        "nano_context_get_plan": (I, [P, C.POINTER(_Plan)]),
        "nano_context_reset": (I, [P]),
        "nano_context_truncate": (I, [P, I]),
        "nano_context_n_past": (I, [P, C.POINTER(C.POINTER(C.c_int32))]),
        "nano_context_cancel": (V, [P]),
        "nano_eval": (I, [P, C.POINTER(C.c_int32), I, C.POINTER(C.c_float)]),
        "nano_context_logits": (C.POINTER(C.c_float), [P]),
        "nano_sampler_default_params": (_SamplerParams, []),
        "nano_sampler_check": (I, [C.POINTER(_SamplerParams)]),
        "nano_generate": (I, [P, C.POINTER(C.c_int32), I, C.POINTER(_GenParams),
                              C.POINTER(C.c_int32), I, C.POINTER(_GenResult)]),
        "nano_context_get_stats": (I, [P, C.POINTER(_Stats)]),
        "nano_kernel_variant": (I, []),
        "nano_kernel_variant_name": (C.c_char_p, [I]),
        "nano_tokenizer_from_model": (I, [P, C.POINTER(P)]),
        "nano_tokenizer_free": (V, [P]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(L, name)
        fn.restype, fn.argtypes = res, args
    _LIB = L
    return L


def _raise(status: int, what: str = ""):
    L = lib()
    detail = (L.nano_last_error() or b"").decode("utf-8", "replace")
    msg = detail or L.nano_status_message(status).decode()
    if what:
        msg = f"{what}: {msg}"
    if status in (ERR_FORMAT, ERR_UNSUPPORTED):
        raise ModelFormatError(msg)
    if status == ERR_BUDGET:
        raise NanoError(msg)
    raise NanoError(msg)


def _check(status: int, what: str = ""):
    if status != OK:
        _raise(status, what)


def _ids_array(ids):
    arr = (C.c_int32 * max(len(ids), 1))()
    for i, t in enumerate(ids):
        arr[i] = int(t)
    return arr


def _sampler(params) -> _SamplerParams:
    """A _SamplerParams from SamplingParams-like object, dict or None (greedy)."""
    s = lib().nano_sampler_default_params()
    if params is None:
        return s
    get = params.get if isinstance(params, dict) else (lambda k, d=None: getattr(params, k, d))
    s.temperature = float(get("temperature", 0.0))
    s.top_k = int(get("top_k", 0))
    s.top_p = float(get("top_p", 1.0))
    s.min_p = float(get("min_p", 0.0))
    s.repetition_penalty = float(get("repetition_penalty", 1.0))
    s.seed = int(get("seed", 0)) & 0xFFFFFFFFFFFFFFFF
    return s


MAX_THREADS = 256  # the C API's limit (nano.h: n_threads 1..256)


def threads_ok(n) -> bool:
    """A thread count the engine takes: None (one per core) or an int in 1..MAX_THREADS."""
    return n is None or (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_THREADS)


class Engine:
    """A loaded .nano model with one context (conversation state)."""

    def __init__(self, path: str, *, threads: Optional[int] = None, n_ctx: int = 0,
                 profile: Optional[str] = None,
                 memory_budget_mb: float = 0, kv: Optional[str] = None, n_batch: int = 64,
                 precise: bool = False, prefault: bool = False, no_mmap: bool = False,
                 tokenizer: bool = True):
        L = lib()
        self._lock = threading.RLock()
        self._model = None
        self._ctx = None
        self._worker = None
        self._ctok = None
        self.last_result = None
        self.path = path
        if not threads_ok(threads):
            raise NanoError(f"n_threads must be between 1 and {MAX_THREADS}, got {threads!r} "
                            "(threads=None: one per core)")
        if profile not in PROFILES:
            raise NanoError(f"--profile must be low or high, got {profile!r}")
        if kv not in KV_TYPES:
            raise NanoError(f"kv type must be f16, i8 or auto, got {kv!r}")
        if memory_budget_mb is None or memory_budget_mb < 0:
            raise NanoError(f"--memory-budget must be >= 0 MB, got {memory_budget_mb}")
        if not os.path.exists(path):
            raise NanoError(f"{path}: no such file")
        mp = _ModelParams(1 if prefault else 0, 1 if no_mmap else 0)
        h = C.c_void_p()
        _check(L.nano_model_load(os.fsencode(path), C.byref(mp), C.byref(h)))
        self._model = h
        try:
            info = _ModelInfo()
            _check(L.nano_model_get_info(h, C.byref(info)))
            self.info = {k: getattr(info, k) for k, _ in _ModelInfo._fields_}
            self.info["family"] = "gemma3" if info.family == 1 else "llama"
            self.vocab_size = info.vocab_size
            cp = L.nano_context_default_params()
            # threads None: n_threads 0, the C API's one-thread-per-online-CPU default
            cp.n_ctx, cp.n_threads, cp.n_batch = int(n_ctx), int(threads or 0), int(n_batch)
            cp.kv_type, cp.profile = KV_TYPES[kv], PROFILES[profile]
            cp.memory_budget = int(memory_budget_mb * (1 << 20))
            cp.precise = 1 if precise else 0
            ctx = C.c_void_p()
            _check(L.nano_context_create(h, C.byref(cp), C.byref(ctx)))
            self._ctx = ctx
            pl = _Plan()
            _check(L.nano_context_get_plan(ctx, C.byref(pl)))
            self.plan = {k: getattr(pl, k) for k, _ in _Plan._fields_}
            self.plan["kv_type"] = KV_NAMES.get(pl.kv_type, "?")
            self.n_ctx = pl.n_ctx
            self.tokenizer = self._load_tokenizer() if tokenizer else None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifetime
    def close(self):
        """Free the context and the model (idempotent; cancels a running generation)."""
        w = getattr(self, "_worker", None)
        if w is not None and w.is_alive() and self._ctx:
            lib().nano_context_cancel(self._ctx)
            w.join()
        with self._lock:
            if getattr(self, "_ctok", None):
                lib().nano_tokenizer_free(self._ctok)
                self._ctok = None
            if getattr(self, "_ctx", None):
                lib().nano_context_free(self._ctx)
                self._ctx = None
            if getattr(self, "_model", None):
                lib().nano_model_free(self._model)
                self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _need(self):
        if not self._ctx:
            raise NanoError("the engine is closed")
        return self._ctx

    # ------------------------------------------------------------------ file data
    def meta(self, key: str) -> Optional[str]:
        if not self._model:
            raise NanoError("the engine is closed")
        v = lib().nano_model_meta(self._model, key.encode())
        return None if v is None else v.decode("utf-8")

    def tensor_bytes(self, name: str) -> Optional[bytes]:
        if not self._model:
            raise NanoError("the engine is closed")
        p, n = C.c_void_p(), C.c_size_t()
        if lib().nano_model_tensor(self._model, name.encode(), C.byref(p), C.byref(n)) != OK:
            return None
        return C.string_at(p, n.value)

    def _load_tokenizer(self):
        tj = self.tensor_bytes("tokenizer.json")
        if not tj:
            return None
        from .tokenizer import Tokenizer
        cfg = json.loads(self.meta("nano.tokenizer_config") or "{}")
        return Tokenizer.from_strings(tj.decode("utf-8"), cfg)

    # ------------------------------------------------------------------ tokens
    @property
    def n_past(self) -> int:
        return lib().nano_context_n_past(self._need(), None)

    def tokens(self) -> list:
        ptr = C.POINTER(C.c_int32)()
        n = lib().nano_context_n_past(self._need(), C.byref(ptr))
        return [ptr[i] for i in range(n)]

    def reset(self):
        with self._lock:
            _check(lib().nano_context_reset(self._need()))

    def cancel(self):
        """Stop a running generation soon (safe from any thread)."""
        if self._ctx:
            lib().nano_context_cancel(self._ctx)

    def eval(self, ids, all_logits: bool = False) -> np.ndarray:
        """Append ids; logits of every position [n, V] (all_logits) or of the last [V]."""
        with self._lock:
            ctx = self._need()
            n = len(ids)
            if n == 0:
                raise NanoError("no tokens to evaluate")
            arr = _ids_array(ids)
            if all_logits:
                out = np.empty((n, self.vocab_size), dtype=np.float32)
                _check(lib().nano_eval(ctx, arr, n, out.ctypes.data_as(C.POINTER(C.c_float))))
                return out
            _check(lib().nano_eval(ctx, arr, n, None))
            return self.last_logits()

    def last_logits(self) -> np.ndarray:
        p = lib().nano_context_logits(self._need())
        if not p:
            raise NanoError("no logits yet")
        return np.ctypeslib.as_array(p, shape=(self.vocab_size,)).copy()

    def logits_of(self, ids) -> np.ndarray:
        """Logits [len(ids), V] of a fresh sequence (resets the context)."""
        self.reset()
        return self.eval(ids, all_logits=True)

    def _native_tokenizer(self):
        """The engine's own tokenizer handle (nano_tokenizer), for stop strings in C."""
        if self._ctok is None:
            h = C.c_void_p()
            _check(lib().nano_tokenizer_from_model(self._model, C.byref(h)), "tokenizer")
            self._ctok = h
        return self._ctok

    def generate_ids(self, prompt_ids, max_tokens: int = 128, sampling=None, stop_ids=None,
                     on_token: Optional[Callable[[int], object]] = None, reset: bool = True,
                     stop: Optional[list] = None, context_shift: bool = False, keep: int = 0):
        """(generated ids, stop reason, timings) after prompt_ids. on_token(id) may return True
        to stop. reset=False continues the current context (prompt_ids may then be empty).
        stop: strings ending generation in C (reason "stop_string"; the ids include the token
        completing the match). context_shift: when the context is full keep the first `keep`
        tokens, drop the oldest half of the rest, re-evaluate and continue."""
        stop = check_stop_strings(stop)
        with self._lock:
            ctx = self._need()
            if context_shift and not (0 <= int(keep) <= self.n_ctx - 2):
                raise NanoError(f"--keep must be between 0 and {self.n_ctx - 2} (context of "
                                f"{self.n_ctx} tokens), got {keep}")
            if max_tokens is None or max_tokens < 1:
                raise NanoError(f"--max-tokens must be >= 1, got {max_tokens}")
            if max_tokens > 1 << 24:
                raise NanoError(f"--max-tokens must be <= {1 << 24}, got {max_tokens}")
            if stop_ids is None:
                stop_ids = self.tokenizer.stop_ids if self.tokenizer else []
            if reset:
                _check(lib().nano_context_reset(ctx))
                if not prompt_ids:
                    raise NanoError("the prompt is empty")
            free = self.n_ctx - self.n_past
            if len(prompt_ids) > free:
                raise NanoError(f"prompt of {len(prompt_ids)} tokens does not fit the context "
                                f"({free} of {self.n_ctx} positions free)")
            gp = _GenParams()
            gp.max_tokens = int(max_tokens)
            gp.sampler = _sampler(sampling)
            _check(lib().nano_sampler_check(C.byref(gp.sampler)))
            stops = _ids_array(stop_ids)
            gp.stop_ids, gp.n_stop_ids = stops, len(stop_ids)
            if stop:
                c_stops = (C.c_char_p * len(stop))(*[x.encode("utf-8") for x in stop])
                gp.tokenizer = self._native_tokenizer()
                gp.stop_strings, gp.n_stop_strings = c_stops, len(stop)
            gp.context_shift, gp.n_keep = (1, int(keep)) if context_shift else (0, 0)
            err = []

            def cb(_user, tok):
                try:
                    return 1 if (on_token(tok) is True) else 0
                except BaseException as e:  # never let an exception cross C
                    err.append(e)
                    return 1
            cfn = _TOKEN_FN(cb) if on_token else _TOKEN_FN()
            gp.on_token = cfn
            out = (C.c_int32 * max_tokens)() if max_tokens <= (1 << 20) else None
            gp.max_tokens = int(max_tokens)
            res = _GenResult()
            collected = []
            if out is None:  # huge max_tokens: collect through the callback
                def cb2(_u, tok, _inner=cb):
                    collected.append(tok)
                    return _inner(_u, tok) if on_token else 0
                cfn = _TOKEN_FN(cb2)
                gp.on_token = cfn
            arr = _ids_array(prompt_ids)
            _check(lib().nano_generate(ctx, arr, len(prompt_ids), C.byref(gp), out,
                                       max_tokens if out is not None else 0, C.byref(res)))
            if err:
                raise err[0]
            ids = [out[i] for i in range(res.n_generated)] if out is not None else collected
            tm = {"prefill_s": res.prefill_s, "decode_s": res.decode_s,
                  "prefill_tok_s": res.prefill_tok_s, "decode_tok_s": res.decode_tok_s}
            return ids, STOP_NAMES.get(res.stop_reason, "?"), tm

    # ------------------------------------------------------------------ text
    def _tok(self):
        if self.tokenizer is None:
            raise NanoError(f"{self.path} has no tokenizer")
        return self.tokenizer

    def encode_prompt(self, prompt: str, chat: bool = False, system: Optional[str] = None) -> list:
        tok = self._tok()
        check_utf8(prompt, "the prompt")
        if system is not None:
            check_utf8(system, "the system message")
        if chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": prompt}]
            return tok.encode_chat(msgs)
        return tok.encode(prompt)

    def generate(self, prompt: str, max_tokens: int = 128, sampling=None, chat: bool = False,
                 system: Optional[str] = None, stop: Optional[list] = None,
                 on_text: Optional[Callable[[str], None]] = None, context_shift: bool = False,
                 keep: Optional[int] = None) -> GenerationResult:
        """Generate from text. stop: strings that end generation (matched in C; the text is
        cut before the match, and streamed text that could start one is held back).
        context_shift/keep: see generate_ids (keep None = BOS / system prompt)."""
        tok = self._tok()
        stop = check_stop_strings(stop)
        ids = self.encode_prompt(prompt, chat, system)
        if keep is None:
            keep = self.auto_keep(ids, chat, system)
        dec = _TextStream(tok, stop)

        def on_token(t):  # the C engine decides when a stop string ends generation
            piece = dec.push(t)
            if on_text and piece:
                on_text(piece)
        gen, reason, tm = self.generate_ids(ids, max_tokens, sampling, on_token=on_token, stop=stop,
                                            context_shift=context_shift, keep=keep)
        if dec.stopped:
            reason = "stop_string"
        tail = dec.flush()
        if on_text and tail:
            on_text(tail)
        return GenerationResult(gen, dec.text, len(ids), tm["prefill_tok_s"], tm["decode_tok_s"],
                                peak_rss_mb(), reason, tm)

    def auto_keep(self, ids, chat: bool = False, system: Optional[str] = None) -> int:
        """Tokens a context shift keeps by default: the chat prefix every conversation with
        this system message shares (system prompt + turn header), else the BOS token."""
        tok = self._tok()
        if chat and tok.chat_template:
            sys_m = [{"role": "system", "content": system}] if system else []
            a = tok.encode_chat(sys_m + [{"role": "user", "content": "a"}])
            b = tok.encode_chat(sys_m + [{"role": "user", "content": "b"}])
            n = 0
            while n < min(len(a), len(b), len(ids)) and a[n] == b[n] == ids[n]:
                n += 1
        else:
            n = 1 if ids and tok.bos_id is not None and ids[0] == tok.bos_id else 0
        return min(n, max(self.n_ctx - 2, 0))

    def stream_ids(self, prompt_ids, max_tokens=128, sampling=None, stop_ids=None,
                   reset=True, **kw) -> Iterator[int]:
        """Yield generated ids as they come; generation runs in a worker thread, so a
        KeyboardInterrupt in the consumer cancels it (and is re-raised)."""
        q: queue.Queue = queue.Queue()
        box = {}

        def work():
            try:
                box["res"] = self.generate_ids(prompt_ids, max_tokens, sampling, stop_ids,
                                               on_token=q.put, reset=reset, **kw)
            except BaseException as e:
                box["err"] = e
            finally:
                q.put(None)
        self._need()
        t = threading.Thread(target=work, daemon=True)
        self._worker = t
        t.start()
        try:
            while True:
                try:
                    item = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is None:
                    break
                yield item
        except BaseException:
            self.cancel()
            t.join()
            raise
        finally:
            if t.is_alive():
                self.cancel()
                t.join()
            self._worker = None
        if "err" in box:
            raise box["err"]
        self.last_result = box.get("res")

    def stream(self, prompt: str, max_tokens: int = 128, sampling=None, chat: bool = False,
               system: Optional[str] = None, stop: Optional[list] = None,
               context_shift: bool = False, keep: Optional[int] = None) -> Iterator[str]:
        """Yield text pieces (whole characters) as they are generated; stop strings end the
        text (not yielded; text that could start one is held back until it cannot).
        The stop reason is then in self.last_result[1]."""
        tok = self._tok()
        stop = check_stop_strings(stop)
        ids = self.encode_prompt(prompt, chat, system)
        if keep is None:
            keep = self.auto_keep(ids, chat, system)
        dec = _TextStream(tok, stop)
        for t in self.stream_ids(ids, max_tokens, sampling, stop=stop,
                                 context_shift=context_shift, keep=keep):
            piece = dec.push(t)  # "" once a stop string was seen (C ends generation there)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail

    def chat_session(self, system: Optional[str] = None, sampling=None, max_tokens: int = 256,
                     context_shift: bool = False, keep: Optional[int] = None) -> "ChatSession":
        return ChatSession(self, system, sampling, max_tokens, context_shift, keep)

    def stats(self) -> dict:
        s = _Stats()
        _check(lib().nano_context_get_stats(self._need(), C.byref(s)))
        d = {k: getattr(s, k) for k, _ in _Stats._fields_}
        d["kernel"] = (s.kernel or b"").decode()
        d["kv_type"] = KV_NAMES.get(s.kv_type, "?")
        d["prefill_tok_s"] = s.prefill_tokens / s.prefill_s if s.prefill_s > 0 else 0.0
        d["decode_tok_s"] = s.decode_tokens / s.decode_s if s.decode_s > 0 else 0.0
        d["peak_rss_mb"] = s.peak_rss_bytes / (1 << 20)
        return d


def check_utf8(text: str, what: str):
    """Text from argv/stdin with undecodable bytes holds lone surrogates: refuse it clearly."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start].encode("utf-8", "surrogateescape")
        raise NanoError(f"{what} is not valid UTF-8 (byte 0x{bad.hex()} at character "
                        f"{e.start})") from None


def check_stop_strings(stop) -> list:
    """Validated stop strings (a clear error for empty, too many, too long or non-UTF-8)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    stop = list(stop)
    if len(stop) > MAX_STOP_STRINGS:
        raise NanoError(f"at most {MAX_STOP_STRINGS} stop strings (--stop) are allowed, "
                        f"got {len(stop)}")
    for s in stop:
        if not isinstance(s, str):
            raise NanoError(f"a stop string must be text, got {type(s).__name__}")
        if not s:
            raise NanoError("a stop string (--stop) must not be empty")
        check_utf8(s, "the stop string")
        if len(s.encode("utf-8")) > MAX_STOP_STRING_BYTES:
            raise NanoError(f"a stop string (--stop) may be at most {MAX_STOP_STRING_BYTES} "
                            f"bytes long, got {len(s.encode('utf-8'))}")
    return stop


def _stop_find(text: str, stop: list) -> int:
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def _stop_partial(text: str, stop: list) -> int:
    """Length of the longest end of text that is the start of a stop string (held back)."""
    best = 0
    for s in stop:
        for m in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:m]):
                best = m
                break
    return best


class _TextStream:
    """Incremental detokenizer: emits whole characters, cuts at stop strings and holds back
    text that could be the start of one (the rule of llama.cpp's server)."""

    def __init__(self, tok, stop=None):
        self.tok, self.stop = tok, [s for s in (stop or []) if s]
        self.ids, self.text, self.shown, self.stopped = [], "", 0, False

    def push(self, t) -> str:
        if self.stopped:
            return ""
        self.ids.append(t)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        i = _stop_find(text, self.stop) if self.stop else -1
        if i >= 0:
            self.text = text[:i]
            self.stopped = True
            end = len(self.text)
        else:
            end = len(text) - (_stop_partial(text, self.stop) if self.stop else 0)
        end = max(end, self.shown)
        piece = self.text[self.shown:end]
        self.shown = end
        return piece

    def flush(self) -> str:
        if not self.stopped:
            self.text = self.tok.decode(self.ids)
        piece = self.text[self.shown:]
        self.shown = len(self.text)
        return piece


class ChatSession:
    """Multi-turn chat on one Engine: the conversation is re-rendered with the chat template
    every turn and only the tokens after the longest common prefix with the KV cache are
    evaluated (no re-prefill of earlier turns)."""

    def __init__(self, engine: Engine, system=None, sampling=None, max_tokens=256,
                 context_shift: bool = False, keep: Optional[int] = None):
        self.engine, self.system, self.sampling, self.max_tokens = engine, system, sampling, max_tokens
        self.context_shift, self.keep = context_shift, keep
        self.history: list = []
        self.last = {}

    def reset(self):
        self.history = []
        self.engine.reset()

    def _messages(self, user):
        sys_m = [{"role": "system", "content": self.system}] if self.system else []
        return sys_m + self.history + [{"role": "user", "content": user}]

    def send(self, user: str) -> Iterator[str]:
        """Yield the reply's text pieces; the reply joins the history (also when interrupted)."""
        eng = self.engine
        tok = eng._tok()
        check_utf8(user, "the message")
        ids = tok.encode_chat(self._messages(user))
        # sliding context: the oldest turns go first (the system prompt stays)
        while self.context_shift and len(ids) > eng.n_ctx - 1 and self.history:
            self.history = self.history[2:]
            ids = tok.encode_chat(self._messages(user))
        have = eng.tokens()
        n = 0
        while n < min(len(have), len(ids) - 1) and have[n] == ids[n]:
            n += 1
        L = lib()
        if L.nano_context_truncate(eng._need(), n) != OK:
            eng.reset()
            n = 0
        if len(ids) - n > eng.n_ctx - n:
            raise NanoError(f"the conversation ({len(ids)} tokens) no longer fits the context of "
                            f"{eng.n_ctx} tokens: /reset to start over")
        dec = _TextStream(tok)
        t0 = time.perf_counter()
        try:
            keep = self.keep if self.keep is not None else eng.auto_keep(ids, True, self.system)
            for t in eng.stream_ids(ids[n:], self.max_tokens, self.sampling, reset=False,
                                    context_shift=self.context_shift, keep=keep):
                piece = dec.push(t)
                if piece:
                    yield piece
        finally:
            tail = dec.flush()
            self.history += [{"role": "user", "content": user},
                             {"role": "assistant", "content": dec.text}]
            self.last = {"prompt_tokens": len(ids) - n, "reply_tokens": len(dec.ids),
                         "seconds": round(time.perf_counter() - t0, 3)}
        if tail:
            yield tail


# ===================================================================== MODEL -> .nano
def _cache_dir() -> str:
    d = os.environ.get("NANO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "nano_runtime")
    os.makedirs(d, exist_ok=True)
    return d


def _is_nano(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            n = int.from_bytes(head, "little")
            return 0 < n < (1 << 28) and f.read(min(n, 4096)).lstrip().startswith(b"{")
    except OSError:
        return False


def resolve_nano(spec: str, show_progress: bool = True) -> str:
    """A .nano path for MODEL: itself if it is one, else a cached conversion.

    GGUF files and package-backed cards are converted with the quantizer's exact GGUF
    import (lossless for Q4_1/Q8_0 tensors); config-only cards (tiny-*, nano-1, nano-2)
    with RTN int4 from their seeded random weights. The conversion happens once: the
    cache key is the source file's path, size and mtime (or the card name).
    """
    from . import cards
    if spec.endswith(".nano") or (os.path.isfile(spec) and _is_nano(spec)):
        if not os.path.isfile(spec):
            raise NanoError(f"{spec}: no such file")
        return spec
    if os.path.isdir(spec) or os.path.isfile(spec):
        st = os.stat(spec)
        key = hashlib.sha256(f"{os.path.abspath(spec)}|{st.st_size}|{int(st.st_mtime)}"
                             f"|{CONVERT_VERSION}".encode()).hexdigest()[:16]
        name = os.path.splitext(os.path.basename(spec.rstrip(os.sep)))[0]
    elif os.path.sep in spec:
        raise NanoError(f"{spec}: no such model file or directory")
    else:
        card = cards.get_card(spec)  # raises a clear error for unknown names
        if "source" in card:
            src = cards.card_weights_path(card)
            st = os.stat(src)
            imp = f"|{json.dumps(card['import'], sort_keys=True)}" if card.get("import") else ""
            key = hashlib.sha256(f"{card['name']}|{st.st_size}|{int(st.st_mtime)}"
                                 f"|{CONVERT_VERSION}{imp}".encode()).hexdigest()[:16]
        else:
            key = hashlib.sha256((json.dumps(card, sort_keys=True) + f"|{CONVERT_VERSION}")
                                 .encode()).hexdigest()[:16]
        name = card["name"]
    out = os.path.join(_cache_dir(), f"{name}-{key}.nano")
    if os.path.isfile(out):
        return out
    if show_progress:
        sys.stderr.write(f"nano: converting {spec} to {out} (once)\n")
    convert_to_nano(spec, out)
    return out


# Bumped when a conversion would produce a different file, so stale caches are not reused:
# 2 = numpy PCG64 random cards, >4-bit GGUF tensors kept in int8 (gguf-exact).
CONVERT_VERSION = 2


def _is_gguf_source(spec: str) -> bool:
    from . import cards, loader
    if os.path.isfile(spec):
        return spec.endswith(".gguf") or loader._magic(spec) == b"GGUF"
    if os.path.exists(spec) or os.path.sep in spec or not cards.is_card_name(spec):
        return False
    src = cards.get_card(spec).get("source") or {}
    return src.get("format") == "gguf"


def convert_to_nano(spec: str, out: str):
    """Quantize MODEL into out (atomic: the writer renames a finished temp file):
    GGUF sources with the exact import (a card's "import" entry may re-quantize its
    embedding, e.g. Gemma 3's 262k-row tied head to int4), everything else with RTN int4 g32."""
    from . import cards
    try:
        from .quant.pipeline import quantize_model
    except ImportError:  # the quantizer's pipeline not installed: RTN from any source
        quantize_model = None
    if quantize_model is not None:
        imp = {}
        if not os.path.exists(spec) and cards.is_card_name(spec):
            imp = cards.get_card(spec).get("import") or {}
        quantize_model(spec, out, method="gguf-exact" if _is_gguf_source(spec) else "rtn",
                       group_size=32, embed=imp.get("embed", "q8"))
        return
    write_rtn_nano(spec, out)


def write_rtn_nano(spec: str, out: str, group_size: int = 32, seed: int = 0):
    """RTN int4 (asymmetric, group G) + Q8 embeddings, streamed from any source."""
    import torch
    from .formats.nano_file import linear_shapes, tensor_format, write_nano, check_recipe
    from .progress import progress_bar
    from .quant.core import packed_entries
    from .quant.sources import open_source
    src = open_source(spec, seed=seed)
    cfg = src.config
    recipe = check_recipe({"method": "rtn", "group_size": group_size, "symmetric": False,
                           "embed": "q8", "head": "tied" if cfg.tie_embeddings else "q8"})
    lin = {p for p, _, _ in linear_shapes(cfg)}
    params = list(__import__("nano_runtime.quant.sources", fromlist=["x"]).param_shapes(cfg))

    def gen(bar):
        for name, shape, chunks in src.stream():
            w = torch.cat(list(chunks)) if len(shape) == 2 else next(chunks)
            if len(shape) == 1:
                v = w.float() + (1.0 if cfg.norm_unit_offset else 0.0)
                yield name, v.numpy().astype(np.float32)
            else:
                p = name[:-len(".weight")]
                fmt = tensor_format(cfg, recipe, p) if (p in lin or p == "embed") else "q4"
                for e in packed_entries(p, fmt, w, group_size, False):
                    yield e
            bar.update(1)
    with progress_bar(total=len(params), desc=f"quantize {cfg.name}", unit="tensor") as bar:
        write_nano(out, cfg, gen(bar), src.tokenizer, recipe)


# ===================================================================== CLI entry points
def add_native_args(p, ctx_option: bool = True, precise_default: bool = False):
    """Options of the native engine shared by generate / chat / eval / bench."""
    p.add_argument("--profile", choices=["low", "high"], default=None,
                   help="device memory profile: low = 1.5 GB budget (4 GB phone), "
                        "high = 3.5 GB (8 GB phone)")
    p.add_argument("--memory-budget", type=float, default=0, metavar="MB",
                   help="explicit memory budget in MB (overrides --profile)")
    if ctx_option:
        p.add_argument("--ctx-size", type=int, default=0,
                       help="context length in tokens (0 = the model's, lowered to fit the budget)")
    p.add_argument("--kv", choices=["auto", "f16", "i8"], default="auto",
                   help="KV cache precision (auto: the planner picks)")
    p.add_argument("--no-mmap", dest="no_mmap", action="store_true",
                   help="read the weights into memory (transparent huge pages where the OS has "
                        "them) instead of mapping the file: slower load, a private copy, faster "
                        "decode on large models")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--precise", dest="precise", action="store_true", default=precise_default,
                   help="fp32 activations into the matmuls (slower prefill; closest to the "
                        "reference)" + (" (default)" if precise_default else ""))
    g.add_argument("--fast", dest="precise", action="store_false",
                   help="int8 activations into the matmuls (faster prefill; can flip near-tied "
                        "tokens)" + ("" if precise_default else " (default)"))


def check_native_threads(n):
    """--threads for the native engine: None (not given) = one per core, else 1..256."""
    if not threads_ok(n):
        raise NanoError(f"--threads must be between 1 and {MAX_THREADS}, got {n} "
                        "(omit it for one thread per core)")


def sampling_from_args(args) -> SamplingParams:
    """Validated sampling settings (no torch import): nano_runtime.sampling.SamplingParams."""
    return SamplingParams.from_args(args)


def _engine_from_args(args, **kw) -> Engine:
    path = resolve_nano(args.model)
    budget = getattr(args, "memory_budget", 0) or 0
    n_ctx = kw.pop("n_ctx", 0)
    return Engine(path, threads=getattr(args, "threads", None),
                  n_ctx=getattr(args, "ctx_size", 0) or n_ctx,
                  profile=getattr(args, "profile", None), memory_budget_mb=budget,
                  kv=getattr(args, "kv", None), precise=getattr(args, "precise", False),
                  no_mmap=getattr(args, "no_mmap", False), **kw)


def native_generate(args, params) -> GenerationResult:
    eng = _engine_from_args(args)
    try:
        stream = None if getattr(args, "json", False) else \
            (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        return eng.generate(args.prompt, args.max_tokens, params, chat=args.chat,
                            system=args.system, stop=getattr(args, "stop", None), on_text=stream,
                            context_shift=getattr(args, "context_shift", False),
                            keep=getattr(args, "keep", None))
    finally:
        eng.close()


def native_ppl_setup(args):
    """(tokenizer, logits_fn(window) -> [len, V], max_ctx) over the native engine."""
    eng = _engine_from_args(args, n_ctx=max(int(getattr(args, "ctx", 512)), 2))
    if eng.tokenizer is None:
        raise NanoError(f"{args.model} has no tokenizer")

    def fn(window):
        return eng.logits_of(window)
    fn.engine = eng
    return eng.tokenizer, fn, min(eng.n_ctx, eng.info["max_seq_len"])


def native_chat(args, params):
    from .commands.chat import chat_loop
    eng = _engine_from_args(args)
    try:
        return chat_loop(eng, args, params)
    finally:
        eng.close()
