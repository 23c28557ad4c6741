"""Stop strings and the opt-in sliding context of the native engine.

Stop strings are matched in C (nano_generate on token bytes, the text session on the
streamed text); the stop string is never emitted and streamed text that could start one
is held back. Context shift: keep the first `keep` tokens, drop the oldest half of the
rest, re-prefill, continue; checked against a fresh evaluation of the kept tokens (exact)
and against the PyTorch reference on the same packed weights (greedy; a differing step is
allowed only at a near-tie, reference margin <= 1e-3 x max|logit|).
SmolLM2-135M-Instruct (real) and tiny random Llama / Gemma 3 models.
Runtime: about 60 s on 2 idle cores (10 min with the machine at load 14).
"""
import ctypes as C

import numpy as np
import pytest
import torch

from conftest import run_cli
from engine_helpers import write_random_nano
from nano_runtime.config import ModelConfig
from nano_runtime.engine import Engine, _CtxParams, _GenResult, _SamplerParams, lib, resolve_nano
from nano_runtime.errors import NanoError
from nano_runtime.formats.nano_file import load_reference
from nano_runtime.loader import load_tokenizer

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smol():
    path = resolve_nano("smollm2-135m-instruct")
    with Engine(path, threads=1, precise=True) as eng:
        full = eng.generate(PROMPT, 40)          # the unstopped greedy text
        yield path, eng, full


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])
def tiny(request, tmp_path_factory, tok):
    cfg = ModelConfig.from_name(request.param)
    path = str(tmp_path_factory.mktemp("stop") / f"{request.param}.nano")
    write_random_nano(cfg, path, tok, seed=3)
    return request.param, path, load_reference(path, use_kernels=False).model


# ------------------------------------------------------------------ stop strings, Python binding
def test_stop_string_real_model(smol):
    path, eng, full = smol
    text = full.text
    assert len(text) > 30, text
    stop = text[10:16]                          # inside the text, across token boundaries
    want = text[:text.index(stop)]
    pieces = []
    r = eng.generate(PROMPT, 40, stop=[stop], on_text=pieces.append)
    assert r.stop_reason == "stop_string"
    assert r.text == want == "".join(pieces)
    assert len(r.ids) < len(full.ids)
    # the same through stream(), with a second stop string that never matches
    got = list(eng.stream(PROMPT, 40, stop=["\x01never", stop]))
    assert "".join(got) == want and eng.last_result[1] == "stop_string"
    # a stop string whose start appears is held back, then released: nothing is lost
    tail = text[-3:] + "\x01"                   # its first 3 characters end the text
    pieces = []
    r = eng.generate(PROMPT, 40, stop=[tail], on_text=pieces.append)
    assert r.text == text == "".join(pieces) and r.stop_reason == full.stop_reason


def test_stop_string_token_level(tiny, tok):
    """generate_ids(stop=...): the C engine stops at the token completing the match."""
    _, path, _ = tiny
    ids = tok.encode(PROMPT)
    with Engine(path, threads=1) as eng:
        g, reason, _ = eng.generate_ids(ids, 30, None, stop_ids=[])
        text = tok.decode(g)
        stop = text[len(text) // 2:len(text) // 2 + 3]
        if not stop.strip() or "\ufffd" in stop:
            stop = tok.decode(g[15:17])
        at = text.index(stop) + len(stop)
        k = next(i for i in range(1, len(g) + 1) if len(tok.decode(g[:i])) >= at)
        out, reason, _ = eng.generate_ids(ids, 30, None, stop_ids=[], stop=[stop])
        assert reason == "stop_string" and out == g[:k]
        r = eng.generate(PROMPT, 30, stop=[stop])
        assert r.stop_reason == "stop_string" and r.text == text[:text.index(stop)]


@pytest.mark.parametrize("bad,msg", [([""], "must not be empty"),
                                     (["a"] * 17, "at most 16 stop strings"),
                                     (["x" * 300], "at most 256 bytes"),
                                     (["\udc80"], "not valid UTF-8")])
def test_bad_stop_strings(smol, bad, msg):
    _, eng, _ = smol
    with pytest.raises(NanoError, match=msg):
        eng.generate(PROMPT, 4, stop=bad)


def test_stop_cli(smol):
    path, _, full = smol
    stop = full.text[10:16]
    r = run_cli("generate", path, "--prompt", PROMPT, "--max-tokens", "40", "--precise",
                "--stop", "\x01never", "--stop", stop, "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    import json
    d = json.loads(r.stdout)
    assert d["text"] == full.text[:full.text.index(stop)] and d["stop_reason"] == "stop_string"
    r = run_cli("generate", path, "--prompt", PROMPT, "--stop", "")
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = run_cli("generate", path, "--prompt", PROMPT, "--context-shift", "--keep", "-1")
    assert r.returncode == 2 and "--keep" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ stop strings, C text session
class _TextParams(C.Structure):
    _fields_ = [("max_tokens", C.c_int), ("sampler", _SamplerParams),
                ("on_text", C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int32, C.c_char_p, C.c_size_t)),
                ("user", C.c_void_p), ("stop_strings", C.POINTER(C.c_char_p)),
                ("n_stop_strings", C.c_int), ("context_shift", C.c_int), ("n_keep", C.c_int)]


def test_text_session_stop_strings(smol):
    """nano_text_generate (what the Java binding and apps use) with stop strings."""
    path, _, full = smol
    L = lib()
    L.nano_text_default_params.restype = _TextParams
    tm, s = C.c_void_p(), C.c_void_p()
    assert L.nano_text_model_load(path.encode(), None, C.byref(tm)) == 0
    try:
        cp = L.nano_context_default_params()
        cp.n_threads, cp.precise = 1, 1        # the mode `full` was generated in
        assert L.nano_text_session_create(tm, C.byref(cp), C.byref(s)) == 0
        pieces = []
        fn = _TextParams._fields_[2][1](lambda u, t, txt, n: pieces.append(C.string_at(txt, n)) or 0)

        def gen(stops, max_tokens=40):
            pieces.clear()
            L.nano_text_session_reset(s)
            p = L.nano_text_default_params()
            p.max_tokens, p.on_text = max_tokens, fn
            arr = (C.c_char_p * max(len(stops), 1))(*[x.encode() for x in stops])
            p.stop_strings, p.n_stop_strings = arr, len(stops)
            r = _GenResult()
            st = L.nano_text_generate(s, PROMPT.encode(), C.byref(p), C.byref(r))
            return st, r, b"".join(pieces).decode()
        st, r, text = gen([])
        assert st == 0 and text == full.text
        stop = full.text[10:16]
        st, r, text = gen(["\x01never", stop])
        assert st == 0 and r.stop_reason == 6 and text == full.text[:full.text.index(stop)]
        L.nano_stop_reason_name.restype = C.c_char_p
        assert L.nano_stop_reason_name(6) == b"stop_string"
        held = full.text[-3:] + "\x01"           # held back, then released at the end
        st, r, text = gen([held])
        assert st == 0 and text == full.text and r.stop_reason != 6
        assert gen([""])[0] == 1 and b"empty" in L.nano_last_error()          # invalid argument
        assert gen(["a"] * 17)[0] == 1
    finally:
        L.nano_text_session_free(s)
        L.nano_text_model_free(tm)


# ------------------------------------------------------------------ sliding context
def test_context_shift_tiny(tiny, tok):
    name, path, ref = tiny
    n_ctx, keep, n_gen = 32, 3, 45
    prompt = tok.encode("Once upon a time, in a small village by the sea")[:10]
    with Engine(path, threads=1, precise=True, n_ctx=n_ctx) as eng:
        out, reason, _ = eng.generate_ids(prompt, n_gen, None, stop_ids=[])
        assert reason == "context" and len(out) == n_ctx - len(prompt) + 1
        out, reason, _ = eng.generate_ids(prompt, n_gen, None, stop_ids=[], context_shift=True,
                                          keep=keep)
        assert reason == "length" and len(out) == n_gen
        assert eng.n_past <= n_ctx
        # replay: after each shift the engine continues exactly as from the kept tokens
        seq, shifts, steps = list(prompt), 0, []
        for i, t in enumerate(out):
            steps.append((list(seq), t))
            if i == len(out) - 1:
                break
            if len(seq) >= n_ctx:
                d = (len(seq) - keep) // 2
                seq = seq[:keep] + seq[keep + d:]
                shifts += 1
            seq.append(t)
        assert shifts >= 2
        assert eng.tokens() == seq[:-1] or eng.tokens() == seq
        with Engine(path, threads=1, precise=True, n_ctx=n_ctx) as fresh:
            for ctx_ids, t in steps[-4:]:            # tokens generated after the last shift
                assert int(fresh.logits_of(ctx_ids)[-1].argmax()) == t
        for ctx_ids, t in steps[20:]:                # and the PyTorch reference agrees
            with torch.no_grad():
                lg = ref(torch.tensor([ctx_ids]))[0, -1].float().numpy()
            margin = float(lg.max() - lg[t])
            assert margin <= 1e-3 * float(np.abs(lg).max()), (name, len(ctx_ids), margin)
        with pytest.raises(NanoError, match="--keep"):
            eng.generate_ids(prompt, 4, None, context_shift=True, keep=n_ctx)


def test_context_shift_cli_and_text(smol):
    path, _, _ = smol
    with Engine(path, threads=1, precise=True, n_ctx=40) as eng:
        r = eng.generate("Count: one, two, three, four, five,", 80)
        assert r.stop_reason in ("context", "stop")
        r2 = eng.generate("Count: one, two, three, four, five,", 80, context_shift=True)
        assert len(r2.ids) >= len(r.ids)
        if r.stop_reason == "context":
            assert len(r2.ids) > len(r.ids) and r2.stop_reason in ("length", "stop")
    r = run_cli("generate", path, "--prompt", "Count: one, two, three,", "--ctx-size", "24",
                "--max-tokens", "40", "--context-shift", "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    import json
    d = json.loads(r.stdout)
    assert d["stop_reason"] in ("length", "stop") and (d["stop_reason"] == "stop" or
                                                       len(d["ids"]) == 40)
