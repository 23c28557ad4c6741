"""End-to-end scale tuning of a quantized .nano against its fp model (``--tune-steps N``).

After RTN / GPTQ / AWQ have fixed the int4 codes, every dequantized weight is linear in its
group's parameters: W = s * (q - 8) (symmetric) or W = s * q + m (asymmetric). So the group
scales (and mins) can be trained by plain gradient descent through the whole model, with no
straight-through estimator, while the codes stay as they are. This is the "E2E-QP" stage of
EfficientQAT (Chen et al. 2024; PEQA, Kim et al. 2023, is the same idea): only the
quantization parameters learn, the file keeps its layout, size and bits per weight.

The loss is the forward KL divergence from the fp model's next-token distribution (the fp
model of the same source is the teacher, run without gradients) on calibration text. Each
scale is trained relative to its starting value, s = s0 * (1 + a), and each min in units of
its starting scale, m = m0 + s0 * b, so one learning rate suits tensors of any magnitude;
``a`` is kept in [-0.5, 1] so no scale changes sign. The last calibration window is held out
and its KL is reported before and after (``tune`` in the recipe), so a run that overfits
its calibration text shows it.

Memory: the fp teacher plus the student's codes (1 byte per weight) and scales; each int4
linear's dequantized weight exists only while that linear runs (it is recomputed in the
backward pass, not kept for it), so no second fp copy of the model is held. At nano-1/nano-2 size this is a job for one accelerator, not a phone.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import NanoError
from ..formats import nano_file as nf
from ..progress import progress_bar


class TunedQ4Linear(nn.Module):
    """A .nano int4 linear whose group scales (and mins) are trainable; codes fixed."""

    def __init__(self, codes: torch.Tensor, s0: torch.Tensor, m0, group_size: int):
        super().__init__()
        self.g = group_size
        self.register_buffer("codes", codes)                 # uint8 [N, K]
        self.register_buffer("s0", s0.float())               # [N, ng]
        self.register_buffer("m0", None if m0 is None else m0.float())
        self.a = nn.Parameter(torch.zeros_like(self.s0))
        self.b = None if m0 is None else nn.Parameter(torch.zeros_like(self.s0))

    def scales(self) -> torch.Tensor:
        return self.s0 * (1.0 + self.a)

    def mins(self):
        return None if self.b is None else self.m0 + self.s0 * self.b

    def weight(self) -> torch.Tensor:
        k = self.codes.shape[1]
        q = self.codes.float()
        s = self.scales().repeat_interleave(self.g, dim=1)[:, :k]
        if self.b is None:
            return s * (q - 8.0)
        return s * q + self.mins().repeat_interleave(self.g, dim=1)[:, :k]

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            # the dequantized weight is recomputed in the backward pass instead of being kept
            # for it: the graph holds codes + scales, never a full-precision copy of the model
            return checkpoint(self._linear, x, use_reentrant=False)
        return self._linear(x)


def kl_to_teacher(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) of the next-token distributions."""
    t = F.log_softmax(t_logits.float(), dim=-1)
    s = F.log_softmax(s_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def student_from_nano(f) -> tuple:
    """(reference model of the .nano with every int4 linear a TunedQ4Linear, {prefix: module})."""
    from ..kernels import unpack_q4_codes
    model = nf.build_reference_model(f, torch.float32, use_kernels=False)
    model.requires_grad_(False)
    tuned = {}
    for p, fmt in f.formats.items():
        if fmt not in ("q4", "q4a") or p == "embed":
            continue
        t = f.tensors
        codes = torch.from_numpy(np.ascontiguousarray(unpack_q4_codes(np.asarray(t[p + ".qweight"]))))
        s0 = torch.from_numpy(np.asarray(t[p + ".scales"], dtype=np.float32))
        m0 = t.get(p + ".mins")
        m0 = None if m0 is None else torch.from_numpy(np.asarray(m0, dtype=np.float32))
        mod = TunedQ4Linear(codes, s0, m0, f.group_size)
        parent_name, _, child = p.rpartition(".")
        setattr(model.get_submodule(parent_name), child, mod)
        tuned[p] = mod
    if not tuned:
        raise NanoError(f"{f.path}: no int4 linear layers to tune")
    return model, tuned


def _heldout_kl(teacher, student, window) -> float:
    with torch.no_grad():
        return float(kl_to_teacher(teacher(window[None]), student(window[None])))


def tune_scales(teacher: nn.Module, nano_path: str, tokens: torch.Tensor, steps: int,
                lr: float = 1e-3, show_progress: bool = True) -> tuple:
    """Train the group scales/mins of NANO_PATH's int4 linears for `steps` steps (one
    calibration window each) to match `teacher`. tokens [n, T], n >= 2: the last window is
    held out. Returns ({tensor name: fp16 array} of the new scales/mins, info dict)."""
    if steps < 1:
        raise NanoError(f"--tune-steps must be >= 1, got {steps}")
    if not (0 < lr < 1):
        raise NanoError(f"--tune-lr must be in (0, 1), got {lr}")
    if tokens.shape[0] < 2:
        raise NanoError("scale tuning needs at least 2 calibration windows (one is held out): "
                        "raise --calib-seqs")
    f = nf.open_nano(nano_path)
    teacher.eval()
    teacher.requires_grad_(False)
    student, tuned = student_from_nano(f)
    student.eval()                       # no dropout anywhere; eval keeps the forward exact
    train, held = tokens[:-1], tokens[-1]
    params = [p for m in tuned.values() for p in (m.a, m.b) if p is not None]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.95))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    kl0 = _heldout_kl(teacher, student, held)
    t0 = time.time()
    losses = []
    with progress_bar(total=steps, desc="tune scales", unit="step",
                      disable=not show_progress) as bar:
        for i in range(steps):
            w = train[i % train.shape[0]][None]
            with torch.no_grad():
                t_logits = teacher(w)
            loss = kl_to_teacher(t_logits, student(w))
            del t_logits
            if not torch.isfinite(loss):
                raise NanoError(f"scale tuning diverged at step {i + 1} (loss {float(loss)}): "
                                f"lower --tune-lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for m in tuned.values():
                    m.a.clamp_(-0.5, 1.0)
            losses.append(float(loss.detach()))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(kl=f"{losses[-1]:.4f}")
            bar.update(1)
    kl1 = _heldout_kl(teacher, student, held)
    new = {}
    with torch.no_grad():
        for p, m in tuned.items():
            new[p + ".scales"] = m.scales().half().numpy()
            if m.b is not None:
                new[p + ".mins"] = m.mins().half().numpy()
    info = {"steps": steps, "lr": lr, "train_windows": int(train.shape[0]),
            "window_tokens": int(tokens.shape[1]), "seconds": round(time.time() - t0, 1),
            "train_kl_first": _sig(losses[0]), "train_kl_last": _sig(losses[-1]),
            "heldout_kl_before": _sig(kl0), "heldout_kl_after": _sig(kl1)}
    return new, info


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def rewrite_scales(nano_path: str, out: str, new: dict, info: dict, progress=None) -> None:
    """Write NANO_PATH with the tensors in `new` replaced (same dtypes and shapes) to OUT,
    atomically (OUT may be NANO_PATH itself); the recipe records the tuning in "tune"."""
    f = nf.open_nano(nano_path)
    recipe = {k: v for k, v in f.recipe.items() if k != "bits_per_weight"}
    recipe["tune"] = info
    layout = nf.tensor_layout(f.config, recipe)
    for name, arr in new.items():
        old = f.tensors[name]
        if arr.shape != old.shape or arr.dtype != old.dtype:
            raise NanoError(f"tuned tensor {name}: {arr.dtype}{arr.shape} does not match the "
                            f"file's {old.dtype}{old.shape}")
    stream = ((name, new[name] if name in new else f.tensors[name]) for name, _, _ in layout)
    nf.write_nano(out, f.config, stream, f.tokenizer(), recipe, progress=progress)
