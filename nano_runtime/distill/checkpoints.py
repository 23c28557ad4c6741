"""Resumable training checkpoints: safetensors weights + optimizer state + state.json.

Layout of ``DIR/checkpoints/step-000123/``:

    weights.safetensors   student (and hidden-state projector) parameters, fp32
    optim.safetensors     AdamW state flattened to ``state.<key>.<param>`` tensors
                          (<param>: an index, or a parameter name under FSDP2)
    state.json            step, config, curves, param-group hyper-parameters and
                          the sha256 of both tensor files

A checkpoint directory is written to a temporary sibling and renamed into place
(checkpoint.AtomicDir), so a kill leaves either the old set or the new one.
Older checkpoints are deleted only after the new one is complete, keeping the
last `keep` (>= 2 by default: the last good one survives a corrupt newest).
Nothing is read through pickle: tensors come from safetensors, the rest is JSON,
and every file is checked against its recorded sha256 before use.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import torch

from ..errors import NanoError
from ..formats.checkpoint import AtomicDir

STEP_RE = re.compile(r"^step-(\d{6,})$")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def optimizer_tensors(opt_state: dict) -> tuple:
    """(tensors, json-able groups) from an optimizer state_dict."""
    tensors = {}
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"state.{k}.{i}"] = t.detach().cpu().contiguous()
    return tensors, opt_state["param_groups"]


def optimizer_state(tensors: dict, groups: list) -> dict:
    state = {}
    for name, t in tensors.items():
        _, k, i = name.split(".", 2)
        state.setdefault(int(i) if i.isdigit() else i, {})[k] = t
    return {"state": state, "param_groups": groups}


def list_checkpoints(root: str) -> list:
    """Checkpoint directories under root, oldest first."""
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), d) for d in os.listdir(root) if (m := STEP_RE.match(d))]
    return [os.path.join(root, d) for _, d in sorted(found)]


def save(root: str, step: int, weights: dict, opt_state: dict, state: dict, keep: int = 2) -> str:
    """Write checkpoint `step` under root atomically, then prune to the last `keep`."""
    from safetensors.torch import save_file
    target = os.path.join(root, f"step-{step:06d}")
    otensors, groups = optimizer_tensors(opt_state)
    with AtomicDir(target) as tmp:
        wp, op = os.path.join(tmp, "weights.safetensors"), os.path.join(tmp, "optim.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, wp)
        save_file(otensors, op)
        doc = dict(state, step=step, param_groups=groups,
                   sha256={"weights.safetensors": _sha256(wp), "optim.safetensors": _sha256(op)})
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
    for old in list_checkpoints(root)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load(path: str) -> tuple:
    """(weights, optimizer state_dict, state) of one checkpoint, verified; NanoError if corrupt."""
    from safetensors.torch import load_file
    sp = os.path.join(path, "state.json")
    try:
        with open(sp) as f:
            state = json.load(f)
    except FileNotFoundError:
        raise NanoError(f"checkpoint {path} is incomplete: no state.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NanoError(f"checkpoint {path} is corrupt: state.json unreadable ({e})") from None
    for name, digest in state.get("sha256", {}).items():
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            raise NanoError(f"checkpoint {path} is incomplete: no {name}")
        if _sha256(p) != digest:
            raise NanoError(f"checkpoint {path} is corrupt: {name} does not match its recorded "
                            "sha256")
    try:
        weights = load_file(os.path.join(path, "weights.safetensors"))
        otensors = load_file(os.path.join(path, "optim.safetensors"))
    except Exception as e:
        raise NanoError(f"checkpoint {path} is corrupt: {e}") from None
    return weights, optimizer_state(otensors, state["param_groups"]), state


def latest(root: str) -> str:
    found = list_checkpoints(root)
    return found[-1] if found else None
