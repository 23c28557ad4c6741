"""Sampling settings and generation results shared by both backends (no torch import).

nano_runtime.generate (the PyTorch reference) and nano_runtime.engine (the native
engine) both use these; the old names ``nano_runtime.generate.SamplingParams`` /
``GenerationResult`` / ``peak_rss_mb`` and ``nano_runtime.engine.GenerationResult`` /
``peak_rss_mb`` still work (re-exported).
"""
from __future__ import annotations

import resource
from dataclasses import dataclass, field

from .errors import NanoError


@dataclass
class SamplingParams:
    """Greedy when temperature is 0; validated on construction (clear CLI errors)."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not (self.temperature >= 0) or self.temperature == float("inf"):
            raise NanoError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise NanoError(f"--top-k must be >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise NanoError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (0.0 <= self.min_p < 1.0):
            raise NanoError(f"--min-p must be in [0, 1), got {self.min_p}")
        if not (self.repetition_penalty > 0):
            raise NanoError(f"--repetition-penalty must be > 0, got {self.repetition_penalty}")

    @classmethod
    def from_args(cls, args) -> "SamplingParams":
        return cls(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed)

    def get(self, key, default=None):  # dict-like access (older callers passed dicts)
        return getattr(self, key, default)


@dataclass
class GenerationResult:
    """What `nano generate` prints, from either backend."""
    ids: list
    text: str
    prompt_tokens: int
    prefill_tok_s: float
    decode_tok_s: float
    peak_rss_mb: float
    stop_reason: str = "length"
    timings: dict = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (per address space; getrusage's ru_maxrss
    survives execve, so a child of a big process would report its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
