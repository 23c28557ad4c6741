"""Activation-aware scaling (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization").

For linears that share one input X, a per-input-channel scale s = mean|X|^a (normalized
so max*min = 1) is searched over a in [0, 1): weights are quantized as Q(W diag(s)) and
inputs divided by s, which protects the channels with large activations. The a with the
least output error ||X W^T - (X/s) Q(W s)^T||^2 summed over the linears wins. The caller
folds 1/s into whatever produces X (the preceding RMSNorm's multiplier, or the rows of
w_up for w_down's input), so the model function is unchanged before quantization.
"""
from __future__ import annotations

import torch

from .core import fake_quant

N_GRID = 20


def search_scales(x: torch.Tensor, weights: list, group_size: int, symmetric: bool,
                  n_grid: int = N_GRID) -> torch.Tensor:
    """x [T, K] sample of the shared input, weights [N_i, K] -> best scales s [K]."""
    x = x.float()
    x_mean = x.abs().mean(0).clamp(min=1e-8)
    refs = [x @ w.float().T for w in weights]
    best_err, best_s = float("inf"), torch.ones_like(x_mean)
    for i in range(n_grid):
        a = i / n_grid
        s = x_mean.pow(a).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w, ref in zip(weights, refs):
            wq = fake_quant(w.float() * s, group_size, symmetric) / s
            err += float(((x @ wq.T - ref) ** 2).mean())
        if err < best_err:
            best_err, best_s = err, s
    return best_s
