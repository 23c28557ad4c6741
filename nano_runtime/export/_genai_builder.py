"""Run ONNX Runtime GenAI's model builder on an HF checkpoint (a subprocess of onnx_genai.py).

    python -m nano_runtime.export._genai_builder HF_DIR OUT CACHE KEY=VALUE ...

The same calls as ``python -m onnxruntime_genai.models.builder -p int4 -e cpu``,
plus one adaptation: with transformers 5, a Gemma 3 config nests its RoPE
settings per layer type (``rope_parameters = {"full_attention": {...},
"sliding_attention": {...}}``) and drops ``rope_local_base_freq``, while the
builder's Gemma 3 path reads the flat form; the parsed config is given the flat
form (global theta) and ``rope_local_base_freq`` (local theta) before building.
"""
from __future__ import annotations

import sys


def _flatten_gemma3_rope(config):
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and "full_attention" in rp:
        config.rope_local_base_freq = rp["sliding_attention"]["rope_theta"]
        config.rope_parameters = dict(rp["full_attention"])
        config.rope_theta = config.rope_parameters["rope_theta"]


def main(argv):
    hf_dir, out, cache, *extra = argv
    import onnxruntime_genai.models.builder as b
    opts = b.parse_extra_options(None, hf_dir, out, "int4", "cpu", cache, extra)
    _flatten_gemma3_rope(opts["hf_details"]["hf_config"])
    b.create_model(None, hf_dir, out, "int4", "cpu", cache, **opts)


if __name__ == "__main__":
    main(sys.argv[1:])
