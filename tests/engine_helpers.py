"""Helpers for the engine tests: small random .nano files written with the quantizer's
writer (RTN int4 g32 asymmetric, Q8 embeddings), and the CMake/ASan build of the engine."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import torch

from nano_runtime.config import ModelConfig
from nano_runtime.formats.nano_file import check_recipe, linear_shapes, tensor_format, write_nano
from nano_runtime.loader import build_model
from nano_runtime.quant.core import packed_entries

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_random_nano(cfg: ModelConfig, path: str, tokenizer=None, seed: int = 0,
                      group_size: int = 32, symmetric: bool = False, embed: str = "q8") -> str:
    """A .nano of cfg with random (reference init) weights, RTN-quantized."""
    model = build_model(cfg, None, seed)
    recipe = check_recipe({"method": "rtn", "group_size": group_size, "symmetric": symmetric,
                           "embed": embed, "head": "tied" if cfg.tie_embeddings else "q8"})
    lin = {p for p, _, _ in linear_shapes(cfg)} | {"embed"}

    def gen():
        for name, p in model.state_dict().items():
            w = p.detach().float()
            if w.ndim == 1:
                yield name, (w + (1.0 if cfg.norm_unit_offset else 0.0)).numpy().astype(np.float32)
            else:
                pre = name[:-len(".weight")]
                fmt = tensor_format(cfg, recipe, pre) if pre in lin else "q4"
                yield from packed_entries(pre, fmt, w, group_size, symmetric)
    write_nano(path, cfg, gen(), tokenizer, recipe)
    return path


def fuzz_config() -> ModelConfig:
    """A tiny Gemma 3 config (every code path: QK-norm, post norms, local + global layers)."""
    return ModelConfig(name="fuzz", family="gemma3", vocab_size=256, dim=64, n_layers=2,
                       n_heads=2, n_kv_heads=1, head_dim=32, hidden_dim=64, norm_eps=1e-6,
                       rope_theta=1e6, rope_theta_local=1e4, max_seq_len=64,
                       tie_embeddings=False, activation="gelu_tanh", qk_norm=True,
                       post_norms=True, norm_unit_offset=True, embed_scale=True,
                       sliding_window=4, sliding_window_pattern=2, query_pre_attn_scalar=32)


def build_asan(build_dir: str) -> str:
    """cmake build of libnano + tools with -fsanitize=address,undefined; the fuzzer path."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("cmake is not installed")
    subprocess.run([cmake, "-S", os.path.join(REPO, "kernels"), "-B", build_dir,
                    "-DNANO_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                   check=True, capture_output=True)
    subprocess.run([cmake, "--build", build_dir, "-j2", "--target", "nano_fuzz_load"],
                   check=True, capture_output=True)
    return os.path.join(build_dir, "nano_fuzz_load")


def greedy_agreement(ref_model, eng, ids: list, n: int):
    """Greedy tokens of the engine and where the reference disagrees.

    The reference scores prompt + the engine's tokens in one forward (teacher forcing);
    the sequences are identical exactly when every engine token is the reference's argmax
    at its position. Returns (tokens, [(step, margin)]) where margin = reference's top
    logit - its logit for the engine's token (a near-tie when tiny)."""
    got, _, _ = eng.generate_ids(ids, n, None, stop_ids=[])
    with torch.no_grad():
        lg = ref_model(torch.tensor([ids + got]))[0].float().numpy()
    lg = lg[len(ids) - 1:len(ids) - 1 + len(got)]
    mism = [(i, float(lg[i].max() - lg[i][got[i]])) for i in range(len(got))
            if int(lg[i].argmax()) != got[i]]
    return got, mism, float(np.abs(lg).max())
