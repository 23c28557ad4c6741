"""The native engine on the real models (their exact .nano conversions) against the PyTorch
reference running the same packed weights: SmolLM2-135M-Instruct (Llama family, exact Q4_1
import) and Gemma 3 270M (with a prompt longer than its 512-token sliding window).
Tolerance: fp32 activations, max |logit diff| <= 5e-3 x max|logit|; greedy: identical or
differing only at a near-tie (reference margin <= 0.5% of max|logit|). The full 20 x 64
check is benchmarks/check_greedy.py. Runtime: about 60 s on 2 busy cores."""
import numpy as np
import pytest
import torch

from engine_helpers import greedy_agreement
from nano_runtime.data import english_text
from nano_runtime.engine import Engine, resolve_nano
from nano_runtime.formats.nano_file import load_reference


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def real(request):
    path = resolve_nano(request.param)
    ref = load_reference(path, use_kernels=False)
    return request.param, path, ref.model, ref.tokenizer


def test_real_model_matches_reference(real):
    name, path, ref, tok = real
    ids = tok.encode(english_text("eval"))[:530 if name == "gemma3-270m" else 200]
    with torch.no_grad():
        want = ref(torch.tensor([ids]))[0].float().numpy()
    scale = np.abs(want).max()
    with Engine(path, threads=2, precise=True, n_ctx=1024) as eng:
        got = eng.logits_of(ids)
        assert np.abs(got - want).max() <= 5e-3 * scale
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.98
        prompt = ids[:520] if name == "gemma3-270m" else \
            tok.encode_chat([{"role": "user", "content": "Give me three tips for staying healthy."}])
        got_ids, mism, scale = greedy_agreement(ref, eng, prompt, 16)
        assert all(m <= 5e-3 * scale for _, m in mism), mism
