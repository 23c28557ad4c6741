"""The native engine against the PyTorch reference on tiny random models of both families,
plus its controls (sampling, stops, context, cancel, memory planner) and bad input.

Reference = nano_runtime.formats.nano_file.load_reference(path, use_kernels=False): the
same packed weights, dequantized into the PyTorch model. Tolerances: with fp32 activations
(precise=True) logits agree to 2e-3 x max|logit|; with the default int8 activations to
5e-2 x max|logit| and the top-1 token agrees on >= 90% of positions.
Runtime: about 40 s on 2 busy cores.
"""
import os
import threading

import numpy as np
import pytest
import torch

from engine_helpers import greedy_agreement, write_random_nano
from nano_runtime.config import ModelConfig
from nano_runtime.engine import Engine
from nano_runtime.errors import ModelFormatError, NanoError
from nano_runtime.formats.nano_file import load_reference
from nano_runtime.generate import SamplingParams, generate_ids
from nano_runtime.loader import load_tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog.",
           "def fibonacci(n):\n    return",
           "In 1905 Einstein published four papers that",
           "Once upon a time, in a small village by the sea, there lived an old fisherman "
           "who every morning walked down to the harbour and counted the boats"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])
def tiny(request, tmp_path_factory, tok):
    cfg = ModelConfig.from_name(request.param)
    path = str(tmp_path_factory.mktemp("nano") / f"{request.param}.nano")
    write_random_nano(cfg, path, tok, seed=1)
    ref = load_reference(path, use_kernels=False).model
    return request.param, path, ref


def ref_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].float().numpy()


def test_logits_match_reference(tiny, tok):
    name, path, ref = tiny
    ids = tok.encode(" ".join(PROMPTS))[:100]       # > tiny-gemma3's window of 16
    want = ref_logits(ref, ids)
    scale = np.abs(want).max()
    with Engine(path, threads=2, precise=True) as eng:
        got = eng.logits_of(ids)
        assert np.abs(got - want).max() <= 2e-3 * scale
        # token-by-token decode through the KV cache equals the batched prefill
        eng.reset()
        eng.eval(ids[:37])
        step = np.stack([eng.eval([t]) for t in ids[37:]])
        assert np.abs(step - got[37:]).max() <= 1e-4 * scale
    with Engine(path, threads=2) as eng:              # int8 activations (default)
        got = eng.logits_of(ids)
        assert np.abs(got - want).max() <= 5e-2 * scale
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("sym", [True, False])
def test_int4_tied_embedding_head(tmp_path, tok, sym):
    """--embed q4 on a tied model: the embedding lookup and the output head both read the
    int4 table (decode then reads half the head bytes); logits equal the reference's."""
    cfg = ModelConfig.from_name("tiny-gemma3")
    path = write_random_nano(cfg, str(tmp_path / "q4e.nano"), tok, seed=3, symmetric=sym,
                             embed="q4")
    ref = load_reference(path, use_kernels=False).model
    ids = tok.encode(PROMPTS[3])[:40]
    want = ref_logits(ref, ids)
    scale = np.abs(want).max()
    with Engine(path, threads=2, precise=True) as eng:
        assert np.abs(eng.logits_of(ids) - want).max() <= 2e-3 * scale
    with Engine(path, threads=2) as eng:
        got = eng.logits_of(ids)
        assert np.abs(got - want).max() <= 5e-2 * scale
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_greedy_matches_reference(tiny, tok):
    """Greedy sequences are identical to the reference's; on random tiny models a step may
    differ only at a near-tie (reference margin <= 1e-3 x max|logit|)."""
    name, path, ref = tiny
    with Engine(path, threads=2, precise=True) as eng:
        exact = 0
        for p in PROMPTS:
            got, mism, scale = greedy_agreement(ref, eng, tok.encode(p), 40)
            assert len(got) == 40
            assert all(m <= 1e-3 * scale for _, m in mism), (name, p, mism)
            exact += not mism
        assert exact >= len(PROMPTS) - 1


def test_int8_kv_and_small_batches(tiny, tok):
    name, path, ref = tiny
    ids = tok.encode(PROMPTS[3])
    want = ref_logits(ref, ids)
    scale = np.abs(want).max()
    with Engine(path, threads=1, precise=True, kv="i8", n_batch=5) as eng:
        assert eng.plan["kv_type"] == "i8"
        got = eng.logits_of(ids)
        assert np.abs(got - want).max() <= 3e-2 * scale
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_sampling_controls(tiny, tok):
    _, path, _ = tiny
    ids = tok.encode(PROMPTS[0])
    with Engine(path, threads=2) as eng:
        s = dict(temperature=0.9, top_k=50, top_p=0.9, min_p=0.02, repetition_penalty=1.1, seed=7)
        a, _, _ = eng.generate_ids(ids, 24, s, stop_ids=[])
        b, _, _ = eng.generate_ids(ids, 24, s, stop_ids=[])
        c, _, _ = eng.generate_ids(ids, 24, dict(s, seed=8), stop_ids=[])
        assert a == b and a != c
        g, _, _ = eng.generate_ids(ids, 24, None, stop_ids=[])
        k1, _, _ = eng.generate_ids(ids, 24, dict(temperature=1.0, top_k=1, seed=3), stop_ids=[])
        assert g == k1
        # full-vocabulary top-p / min-p paths
        eng.generate_ids(ids, 4, dict(temperature=1.5, top_p=0.5, seed=1), stop_ids=[])
        eng.generate_ids(ids, 4, dict(temperature=1.5, min_p=0.5, seed=1), stop_ids=[])
        # a stop id ends generation before it is emitted
        out, reason, _ = eng.generate_ids(ids, 10, None, stop_ids=[g[3]])
        assert reason == "stop" and out == g[:g.index(g[3])]
        # the streaming callback can stop generation
        seen = []
        out, reason, _ = eng.generate_ids(ids, 10, None, stop_ids=[],
                                          on_token=lambda t: seen.append(t) or len(seen) == 3)
        assert reason == "callback" and out == g[:3] == seen


def test_context_limits(tiny, tok):
    _, path, _ = tiny
    with Engine(path, threads=1, n_ctx=64) as eng:
        ids = list(range(1000, 1050))
        out, reason, _ = eng.generate_ids(ids, 1000, None, stop_ids=[])
        assert reason == "context" and len(out) == 64 - 50 + 1
        with pytest.raises(NanoError, match="does not fit the context"):
            eng.generate_ids(list(range(100, 170)), 4)
        with pytest.raises(NanoError, match="max-tokens"):
            eng.generate_ids(ids, 0)
        with pytest.raises(NanoError, match="max-tokens"):
            eng.generate_ids(ids, 1 << 30)
        with pytest.raises(NanoError, match="vocabulary"):
            eng.eval([10 ** 7])
        with pytest.raises(NanoError, match="prompt is empty"):
            eng.generate_ids([], 4)


@pytest.mark.parametrize("bad,msg", [(dict(temperature=-1.0), "temperature"),
                                     (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                     (dict(min_p=1.0), "min_p"),
                                     (dict(repetition_penalty=0.0), "repetition_penalty"),
                                     (dict(top_k=-2), "top_k")])
def test_bad_sampling_rejected(tiny, tok, bad, msg):
    _, path, _ = tiny
    with Engine(path, threads=1) as eng:
        with pytest.raises(NanoError, match=msg):
            eng.generate_ids(tok.encode("hi"), 4, bad)


def test_threads_budget_and_use_after_free(tiny, tok):
    _, path, _ = tiny
    with Engine(path) as e:                          # threads not given: one per core
        assert e.stats()["n_threads"] == (os.cpu_count() or 1)
    for bad in (0, -1, 100000, 2.5, True):
        with pytest.raises(NanoError, match="n_threads must be between 1 and 256"):
            Engine(path, threads=bad)
    with pytest.raises(NanoError, match=r"needs \d+ MB .* budget 1 MB"):
        Engine(path, memory_budget_mb=1)
    # a budget that fits only an int8 cache and a shorter context
    e = Engine(path)
    need = e.plan["total_bytes"] / 2**20
    kv = e.plan["kv_bytes"] / 2**20
    e.close()
    small = Engine(path, memory_budget_mb=need - kv / 3)
    assert small.plan["kv_type"] == "i8" and small.plan["total_bytes"] <= (need - kv / 3) * 2**20
    small.close()
    eng = Engine(path, threads=1)
    eng.close()
    eng.close()                                       # idempotent
    for call in (lambda: eng.generate_ids(tok.encode("hi"), 4), lambda: eng.eval([1]),
                 lambda: eng.stats(), lambda: eng.reset(), lambda: eng.tokens()):
        with pytest.raises(NanoError, match="closed"):
            call()
    eng.cancel()                                      # no-op after close


def test_cancel_from_another_thread(tiny, tok):
    _, path, _ = tiny
    with Engine(path, threads=1, n_ctx=256) as eng:
        started = threading.Event()
        t = threading.Timer(0.0, lambda: (started.wait(), eng.cancel()))
        t.start()
        out, reason, _ = eng.generate_ids(tok.encode("hi"), 200, None, stop_ids=[],
                                          on_token=lambda _t: started.set())
        t.join()
        assert reason == "cancelled" and 1 <= len(out) < 200
        # the context still works afterwards
        out, reason, _ = eng.generate_ids(tok.encode("hi"), 3, None, stop_ids=[])
        assert reason == "length" and len(out) == 3


def test_chat_session_reuses_prefix_and_resets(tiny, tok):
    _, path, _ = tiny
    with Engine(path, threads=1) as eng:
        chat = eng.chat_session(system="Be brief.", max_tokens=8)
        a = "".join(chat.send("Hello"))
        n1 = eng.n_past
        "".join(chat.send("And then?"))
        assert chat.last["prompt_tokens"] < eng.n_past - n1 + 20   # only the new turn was fed
        assert len(chat.history) == 4
        chat.reset()
        assert eng.n_past == 0 and chat.history == []
        assert "".join(chat.send("Hello")) == a                   # greedy: same first reply


def test_stream_and_stop_strings(tiny, tok):
    _, path, _ = tiny
    with Engine(path, threads=1) as eng:
        full = eng.generate(PROMPTS[0], 20)
        pieces = list(eng.stream(PROMPTS[0], 20))
        assert "".join(pieces) == full.text
        if len(full.text) > 6:
            stop = full.text[3:6]
            cut = eng.generate(PROMPTS[0], 20, stop=[stop])
            assert cut.text == full.text[:full.text.index(stop)]


def test_bad_files(tmp_path, tiny):
    _, path, _ = tiny
    data = open(path, "rb").read()
    (tmp_path / "trunc.nano").write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelFormatError, match="past the end of the file"):
        Engine(str(tmp_path / "trunc.nano"))
    (tmp_path / "short.nano").write_bytes(data[:5])
    with pytest.raises(ModelFormatError, match="too short"):
        Engine(str(tmp_path / "short.nano"))
    (tmp_path / "junk.nano").write_bytes(b"\xff" * 4096)
    with pytest.raises(ModelFormatError, match="header length"):
        Engine(str(tmp_path / "junk.nano"))
    hl = int.from_bytes(data[:8], "little")
    bad = bytearray(data)
    bad[8:8 + hl] = bytes(bad[8:8 + hl]).replace(b'"nano.format_version":"1"',
                                                   b'"nano.format_version":"9"')
    (tmp_path / "ver.nano").write_bytes(bytes(bad))
    with pytest.raises(ModelFormatError, match="format_version"):
        Engine(str(tmp_path / "ver.nano"))
    with pytest.raises(NanoError, match="no such file"):
        Engine(str(tmp_path / "missing.nano"))


def test_no_mmap_load_is_identical(tmp_path, tiny, tok):
    """--no-mmap reads the file into (huge-page advised) anonymous memory: the same bytes,
    so bit-identical logits; a bad file fails with the same clear errors."""
    _, path, _ = tiny
    ids = tok.encode(PROMPTS[0])
    with Engine(path, threads=2) as a, Engine(path, threads=2, no_mmap=True) as b:
        la, lb = a.logits_of(ids), b.logits_of(ids)
        assert np.array_equal(la, lb)
        assert a.stats()["weights_bytes"] == b.stats()["weights_bytes"] == os.path.getsize(path)
    data = open(path, "rb").read()
    (tmp_path / "trunc.nano").write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelFormatError, match="past the end of the file"):
        Engine(str(tmp_path / "trunc.nano"), no_mmap=True)
    (tmp_path / "short.nano").write_bytes(data[:5])
    with pytest.raises(ModelFormatError, match="too short"):
        Engine(str(tmp_path / "short.nano"), no_mmap=True)
