"""Options and helpers shared by several subcommands."""
from __future__ import annotations

import json
import sys

from ..errors import NanoError


def add_sampling_args(p):
    p.add_argument("--max-tokens", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x max prob")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def add_backend_args(p, default="torch"):
    p.add_argument("--backend", choices=["native", "torch"], default=default,
                   help=f"native engine or PyTorch reference (default {default})")
    p.add_argument("--threads", type=int, default=None,
                   help="worker threads (default: one per core)")


def sampling_params(args):
    from ..generate import SamplingParams
    return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed)


def check_threads(args):
    import os
    n = getattr(args, "threads", None)
    if n is None:                                   # not given: torch's default (all cores)
        return
    limit = 4 * (os.cpu_count() or 1) + 64
    if n < 1 or n > limit:
        raise NanoError(f"--threads must be between 1 and {limit}, got {n} "
                        "(omit it for one thread per core)")
    import torch
    torch.set_num_threads(n)


def print_json(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
