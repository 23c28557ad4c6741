"""Knowledge-distillation losses between a teacher p and a student q, per token.

Both distributions are taken at temperature T (softmax(logits / T)) and every
divergence is multiplied by T^2 so gradient magnitudes stay comparable across
temperatures (Hinton et al. 2015). Divergences, averaged over tokens:

    forward KL       KL(p || q)                           (mode covering; Minitron)
    reverse KL       KL(q || p)                           (mode seeking; MiniLLM)
    jsd (beta)       beta KL(p || m) + (1-beta) KL(q || m),  m = beta p + (1-beta) q
                     (GKD's generalized JSD; ~ forward KL as beta -> 0, reverse as -> 1)
    skew_kl (alpha)  KL(p || alpha p + (1-alpha) q)        (DistiLLM's skew KL)
    skew_rkl (alpha) KL(q || alpha q + (1-alpha) p)

The teacher is either full logits [N, V] or a cached top-k (``TopK``): the k
largest teacher log-probabilities with their token ids plus the remaining mass
as one "tail" bucket. Against a top-k teacher every divergence is computed on
the k + 1 buckets (the student's probabilities gathered at the same ids plus
its own tail), which is exact for the buckets and zero iff they agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import NanoError

LOSSES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_rkl")


@dataclass
class TopK:
    """Teacher top-k at temperature T: ids [N, k] (int64), logp [N, k] (fp32)."""
    ids: torch.Tensor
    logp: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int, temperature: float = 1.0) -> "TopK":
        logp = F.log_softmax(logits.float() / temperature, dim=-1)
        v, i = torch.topk(logp, k, dim=-1)
        return cls(ids=i, logp=v)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable (Maechler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _with_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """[N, k] log-probs of k buckets -> [N, k+1] with the log of the remaining mass."""
    tail = _log1mexp(torch.logsumexp(logp_k, dim=-1, keepdim=True))
    return torch.cat([logp_k, tail], dim=-1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probs (0 log 0 = 0)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def _mix(logp, logq, w):
    """log(w p + (1 - w) q)."""
    if w <= 0:
        return logq
    if w >= 1:
        return logp
    return torch.logaddexp(logp + math.log(w), logq + math.log(1 - w))


def divergence(logp: torch.Tensor, logq: torch.Tensor, kind: str, beta: float = 0.5,
               alpha: float = 0.1) -> torch.Tensor:
    """Per-row divergence between teacher log-probs `logp` and student `logq` [N, V]."""
    if kind == "forward_kl":
        return _kl(logp, logq)
    if kind == "reverse_kl":
        return _kl(logq, logp)
    if kind == "jsd":
        if not (0.0 < beta < 1.0):
            raise NanoError(f"jsd beta must be in (0, 1), got {beta}")
        m = _mix(logp, logq, beta)
        return beta * _kl(logp, m) + (1 - beta) * _kl(logq, m)
    if kind == "skew_kl":
        return _kl(logp, _mix(logp, logq, alpha))
    if kind == "skew_rkl":
        return _kl(logq, _mix(logq, logp, alpha))
    raise NanoError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def kd_loss(student_logits: torch.Tensor, teacher, kind: str = "forward_kl",
            temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1,
            mask: torch.Tensor = None, student_logp: torch.Tensor = None) -> torch.Tensor:
    """Mean KD loss over tokens. student_logits [..., V]; teacher: logits [..., V] or TopK
    (flattened to [N, k], computed at the same temperature); mask [...] selects tokens.
    student_logp: the student's log-softmax [N, V] at this temperature when the caller has
    it already (shared with the CE term at T = 1), else computed here."""
    if temperature <= 0:
        raise NanoError(f"temperature must be > 0, got {temperature}")
    s = student_logits.reshape(-1, student_logits.shape[-1]).float() / temperature
    logq_full = F.log_softmax(s, dim=-1) if student_logp is None else student_logp
    if isinstance(teacher, TopK):
        ids = teacher.ids.reshape(-1, teacher.ids.shape[-1])
        if int(ids.max()) >= s.shape[-1]:
            raise NanoError(f"teacher token id {int(ids.max())} is outside the student's "
                            f"vocabulary of {s.shape[-1]}")
        logp = _with_tail(teacher.logp.reshape(ids.shape).float())
        logq = _with_tail(logq_full.gather(-1, ids))
    else:
        t = teacher.reshape(-1, teacher.shape[-1]).float()
        if t.shape[-1] != s.shape[-1]:
            raise NanoError(f"vocabulary mismatch: teacher has {t.shape[-1]} tokens, "
                            f"student {s.shape[-1]}")
        logp, logq = F.log_softmax(t / temperature, dim=-1), logq_full
    per = divergence(logp, logq, kind, beta, alpha) * temperature ** 2
    if mask is not None:
        m = mask.reshape(-1).to(per.dtype)
        return (per * m).sum() / m.sum().clamp(min=1)
    return per.mean()


def ce_loss(student_logits: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor = None, student_logp: torch.Tensor = None) -> torch.Tensor:
    """Next-token cross-entropy, mean over (masked) tokens; targets [...] ids.
    student_logp: the log-softmax [N, V] of the logits when the caller has it already."""
    if student_logp is not None:
        per = -student_logp.gather(-1, targets.reshape(-1, 1))[:, 0]
    else:
        per = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(),
                              targets.reshape(-1), reduction="none")
    if mask is not None:
        m = mask.reshape(-1).to(per.dtype)
        return (per * m).sum() / m.sum().clamp(min=1)
    return per.mean()


class HiddenProjector(torch.nn.Module):
    """Learned linear maps from student hidden states to the teacher's (Minitron's
    intermediate-state loss): mean over pairs of normalised MSE."""

    def __init__(self, student_dim: int, teacher_dim: int, pairs: list):
        super().__init__()
        self.pairs = list(pairs)     # [(student layer, teacher layer)]
        self.proj = torch.nn.ModuleList(torch.nn.Linear(student_dim, teacher_dim, bias=False)
                                        for _ in self.pairs)
        for p in self.proj:
            torch.nn.init.eye_(p.weight) if student_dim == teacher_dim else \
                torch.nn.init.normal_(p.weight, std=student_dim ** -0.5)

    def forward(self, s_hidden: list, t_hidden: list) -> torch.Tensor:
        loss = 0.0
        for (si, ti), proj in zip(self.pairs, self.proj):
            t = t_hidden[ti].float()
            d = proj(s_hidden[si].float()) - t
            loss = loss + d.pow(2).mean() / t.pow(2).mean().clamp(min=1e-8)
        return loss / max(len(self.pairs), 1)


def layer_pairs(n_student: int, kept_layers=None, n_teacher: int = None, every: int = 1) -> list:
    """(student, teacher) layer pairs: a pruned student's layer j maps to the teacher
    layer it was cut from; otherwise layers are spread evenly."""
    if kept_layers is not None:
        m = list(kept_layers)
    else:
        m = [round((j + 1) * n_teacher / n_student) - 1 for j in range(n_student)]
    return [(j, m[j]) for j in range(n_student) if (j + 1) % every == 0 or j == n_student - 1]
