"""The distillation loop: one code path for one process and for torchrun (DDP / FSDP2).

A plain, linear loop (nanoGPT's train.py is the model):

    for step in range(start, steps):
        lr = warmup + cosine(step)
        for micro-batch in this rank's share of the global batch:
            x, y   = packed sequences (pure function of seed and step -> resumable)
            q      = student(x)                       (bf16 autocast optional)
            p      = teacher(x) | cached top-k | none (CE only)
            loss   = (1 - ce_weight) KD(p, q) + ce_weight CE(q, y) [+ hidden loss]
            (loss / accum).backward()
        clip, AdamW step
        every eval_every: held-out ppl and top-1 agreement with the teacher
        every ckpt_every: resumable checkpoint (checkpoints.py)

Under torchrun every rank takes a disjoint, equal slice of each global batch,
gradients are averaged by DDP or reduce-scattered by FSDP2, so the loss and
the update equal a single process with the same global batch. On-policy steps
(GKD) replace the continuation of each sequence with a student sample and score
it with the live teacher.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from ..errors import NanoError
from ..progress import progress_bar
from . import checkpoints as ckpt
from .data import PackedData, TopKCache, sample_ids
from .losses import LOSSES, HiddenProjector, TopK, ce_loss, kd_loss

PARALLEL = ("none", "ddp", "fsdp")


@dataclass
class DistillConfig:
    steps: int = 100
    batch: int = 8                 # global batch, in sequences
    micro_batch: int = 0           # per rank per micro-step; 0 = batch / world (no accumulation)
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    clip: float = 1.0
    loss: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5              # jsd
    alpha: float = 0.1             # skew KL
    ce_weight: float = 0.0         # 1.0 = plain cross-entropy, no teacher
    hidden_weight: float = 0.0
    on_policy: float = 0.0         # fraction of steps on student samples
    prompt_len: int = 32           # on-policy: tokens kept from data before sampling
    bf16: bool = False
    grad_checkpointing: bool = False
    freeze_embeddings: bool = False
    eval_every: int = 50
    eval_batches: int = 0          # 0 = the whole held-out set
    ckpt_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    parallel: str = "none"
    max_minutes: float = 0.0       # stop (and checkpoint) after this much training time
    schedule_minutes: float = 0.0  # > 0: the cosine decay follows training time, not steps, and
                                   # training ends when this much time is spent (steps = a cap)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        def bad(name, why):
            raise NanoError(f"distill: {name} {why}")
        if self.loss not in LOSSES:
            bad("--loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.parallel not in PARALLEL:
            bad("--parallel", f"must be one of {PARALLEL}, got {self.parallel!r}")
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                bad("--" + name.replace("_", "-"), f"must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0):
            bad("--lr", f"must be > 0, got {self.lr}")
        if not (self.temperature > 0):
            bad("--temperature", f"must be > 0, got {self.temperature}")
        if not (0.0 <= self.ce_weight <= 1.0):
            bad("--ce-weight", f"must be in [0, 1], got {self.ce_weight}")
        if not (0.0 <= self.on_policy <= 1.0):
            bad("--on-policy", f"must be in [0, 1], got {self.on_policy}")
        if self.loss == "jsd" and not (0 < self.beta < 1):
            bad("--beta", f"must be in (0, 1), got {self.beta}")
        if self.loss.startswith("skew") and not (0 <= self.alpha < 1):
            bad("--alpha", f"must be in [0, 1), got {self.alpha}")
        self.betas = tuple(self.betas)

    @property
    def needs_teacher(self) -> bool:
        return self.ce_weight < 1.0 or self.hidden_weight > 0 or self.on_policy > 0


# ------------------------------------------------------------------ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    active: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU)."""
    import torch.distributed as dist
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), True)


def lr_at(step: int, c: DistillConfig, seconds: float = 0.0) -> float:
    """Linear warmup to lr, then cosine decay to lr * min_lr_ratio at the last step (or, with
    schedule_minutes, at the end of that much training time: `seconds` spent so far)."""
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    if c.schedule_minutes > 0:
        t = seconds / (c.schedule_minutes * 60)
    else:
        t = (step - c.warmup) / max(1, c.steps - c.warmup)
    return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# ------------------------------------------------------------------ the trainer
class Trainer:
    def __init__(self, student, cfg: DistillConfig, data: PackedData, out_dir: str,
                 teacher=None, cache: Optional[TopKCache] = None, kept_layers=None,
                 tokenizer=None, show_progress: bool = True):
        self.c, self.data, self.out = cfg, data, out_dir
        self.dist = init_distributed()
        self.teacher, self.cache, self.tokenizer = teacher, cache, tokenizer
        self.show = show_progress and self.dist.main
        c = cfg
        if c.needs_teacher and teacher is None and cache is None:
            raise NanoError("distill: KD needs a teacher or a teacher cache")
        if teacher is not None and teacher.cfg.vocab_size != student.cfg.vocab_size:
            raise NanoError(f"vocabulary mismatch: teacher has {teacher.cfg.vocab_size} tokens, "
                            f"student {student.cfg.vocab_size}; they must share a tokenizer")
        if (c.hidden_weight > 0 or c.on_policy > 0) and teacher is None:
            raise NanoError("distill: the hidden-state loss and on-policy steps need a live "
                            "teacher, not only a cache")
        per_rank = c.batch // self.dist.world
        if c.batch % self.dist.world:
            raise NanoError(f"distill: --batch {c.batch} is not divisible by {self.dist.world} ranks")
        self.micro = c.micro_batch or per_rank
        if per_rank % self.micro:
            raise NanoError(f"distill: per-rank batch {per_rank} is not divisible by "
                            f"--micro-batch {self.micro}")
        self.accum = per_rank // self.micro
        self.per_rank = per_rank
        torch.manual_seed(c.seed)
        self.student = student
        student.gradient_checkpointing = c.grad_checkpointing
        if c.freeze_embeddings:
            student.embed.weight.requires_grad_(False)
        self.projector = None
        if c.hidden_weight > 0:
            from .losses import layer_pairs
            pairs = layer_pairs(student.cfg.n_layers, kept_layers, teacher.cfg.n_layers,
                                every=max(1, student.cfg.n_layers // 4))
            self.projector = HiddenProjector(student.cfg.dim, teacher.cfg.dim, pairs)
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.model = self._wrap(student)
        params = [p for p in self._trainable()]
        self.opt = torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay,
                                     foreach=False)
        self.step = 0
        self.history = {"train": [], "eval": []}    # [step, tokens, seconds, loss...]
        self.seconds = 0.0
        self.ckpt_root = os.path.join(out_dir, "checkpoints")
        self.held_teacher_top1 = None

    # --------------------------------------------------------------- plumbing
    def _wrap(self, m):
        if not self.dist.active or self.c.parallel == "none":
            if self.dist.active and self.c.parallel == "none":
                raise NanoError("distill: launched by torchrun; pass --parallel ddp or fsdp")
            return m
        if self.c.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP
            return DDP(m)
        from torch.distributed.fsdp import fully_shard
        for blk in m.layers:
            fully_shard(blk)
        fully_shard(m)
        return m

    def _trainable(self):
        ps = [p for p in self.student.parameters() if p.requires_grad]
        if self.projector is not None:
            ps += list(self.projector.parameters())
        return ps

    def _full_weights(self) -> dict:
        if self.c.parallel == "fsdp" and self.dist.active:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                                 get_model_state_dict)
            sd = get_model_state_dict(self.student, options=StateDictOptions(full_state_dict=True,
                                                                             cpu_offload=True))
        else:
            sd = self.student.state_dict()
        out = {k: v.detach().float().cpu().clone() for k, v in sd.items()}
        if self.projector is not None:
            out.update({"hidden_proj." + k: v.detach().clone()
                        for k, v in self.projector.state_dict().items()})
        return out

    def _full_optim(self) -> dict:
        if self.c.parallel == "fsdp" and self.dist.active:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                                 get_optimizer_state_dict)
            return get_optimizer_state_dict(self.student, self.opt, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        return self.opt.state_dict()

    # ----------------------------------------------------------------- batches
    def _local_indices(self, step: int) -> torch.Tensor:
        g = sample_ids(step * self.c.batch, self.c.batch, len(self.data.train), self.c.seed)
        return g[self.dist.rank * self.per_rank:(self.dist.rank + 1) * self.per_rank]

    @torch.no_grad()
    def _on_policy(self, x: torch.Tensor, step: int) -> tuple:
        """Keep prompt_len tokens of each sequence, sample the rest from the student."""
        P, T = self.c.prompt_len, x.shape[1]
        if P >= T:
            raise NanoError(f"distill: --prompt-len {P} must be below the sequence length {T}")
        g = torch.Generator().manual_seed(self.c.seed * 7919 + step)
        m = self.student
        was = m.training
        m.eval()
        out = x.clone()
        m.setup_cache(x.shape[0], T)
        try:
            logits = m(out[:, :P], torch.arange(P))[:, -1]
            for t in range(P, T):
                probs = torch.softmax(logits.float(), -1)
                out[:, t] = torch.multinomial(probs, 1, generator=g)[:, 0]
                if t + 1 < T:
                    logits = m(out[:, t:t + 1], torch.tensor([t]))[:, -1]
        finally:
            m.clear_cache()
            m.train(was)
        mask = torch.zeros(x.shape, dtype=torch.bool)
        mask[:, P - 1:] = True
        return out, mask

    # -------------------------------------------------------------------- loss
    def _loss(self, seqs: torch.Tensor, idx: torch.Tensor, on_policy: bool, step: int):
        c = self.c
        mask = None
        if on_policy:
            seqs, full_mask = self._on_policy(seqs, step)
            mask = full_mask[:, :-1]
        x, y = seqs[:, :-1], seqs[:, 1:]
        want_hidden = self.projector is not None
        t_logits, t_hidden = None, None
        if c.needs_teacher and (self.cache is None or on_policy or want_hidden):
            with torch.no_grad():
                r = self.teacher(x, output_hidden_states=want_hidden)
                t_logits, t_hidden = (r if want_hidden else (r, None))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.bf16):
            r = self.model(x, output_hidden_states=want_hidden)
        s_logits, s_hidden = (r if want_hidden else (r, None))
        parts = {}
        loss = torch.zeros((), dtype=torch.float32)
        logp = None     # KD + CE at T = 1: one log-softmax over the vocabulary serves both
        if 0 < c.ce_weight < 1 and c.temperature == 1.0:
            logp = torch.log_softmax(s_logits.reshape(-1, s_logits.shape[-1]).float(), dim=-1)
        if c.ce_weight > 0:
            parts["ce"] = ce_loss(s_logits, y, mask, student_logp=logp)
            loss = loss + c.ce_weight * parts["ce"]
        if c.ce_weight < 1:
            teacher = t_logits if t_logits is not None else self.cache.get(idx)
            parts["kd"] = kd_loss(s_logits, teacher, c.loss, c.temperature, c.beta, c.alpha, mask,
                                  student_logp=logp)
            loss = loss + (1 - c.ce_weight) * parts["kd"]
        if want_hidden:
            parts["hidden"] = self.projector(s_hidden, t_hidden)
            loss = loss + c.hidden_weight * parts["hidden"]
        return loss, parts

    # -------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out perplexity (next-token CE) and top-1 agreement with the teacher."""
        held = self.data.held
        if self.c.eval_batches:
            held = held[:self.c.eval_batches * self.micro]
        if len(held) == 0:
            return {}
        m = self.student
        was = m.training
        m.eval()
        nll, n, agree = 0.0, 0, 0
        if self.held_teacher_top1 is None and self.teacher is not None:
            self.held_teacher_top1 = torch.cat([self.teacher(held[s:s + self.micro, :-1]).argmax(-1)
                                                for s in range(0, len(held), self.micro)])
        for s in range(0, len(held), self.micro):
            b = held[s:s + self.micro]
            lg = m(b[:, :-1]).float()
            nll += float(torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))
            n += b[:, 1:].numel()
            if self.held_teacher_top1 is not None:
                agree += int((lg.argmax(-1) == self.held_teacher_top1[s:s + len(b)]).sum())
        m.train(was)
        out = {"ppl": math.exp(nll / n), "tokens": n}
        if self.held_teacher_top1 is not None:
            out["agreement"] = agree / n
        return out

    # ----------------------------------------------------------------- resume
    def resume(self, path: Optional[str] = None) -> bool:
        """Load `path` or the newest checkpoint under out/checkpoints; False if none."""
        path = path or ckpt.latest(self.ckpt_root)
        if path is None:
            return False
        weights, opt_state, state = ckpt.load(path)
        if state.get("config", {}).get("batch") not in (None, self.c.batch):
            raise NanoError(f"checkpoint {path} was made with --batch {state['config']['batch']}")
        proj = {k[len("hidden_proj."):]: v for k, v in weights.items() if k.startswith("hidden_proj.")}
        model_w = {k: v for k, v in weights.items() if not k.startswith("hidden_proj.")}
        try:
            if self.c.parallel == "fsdp" and self.dist.active:
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions, set_model_state_dict, set_optimizer_state_dict)
                opts = StateDictOptions(full_state_dict=True)
                set_model_state_dict(self.student, model_w, options=opts)
                set_optimizer_state_dict(self.student, self.opt, opt_state, options=opts)
            else:
                self.student.load_state_dict(model_w)
                self.opt.load_state_dict(opt_state)
            if self.projector is not None:
                self.projector.load_state_dict(proj)
        except (RuntimeError, KeyError, ValueError) as e:
            raise NanoError(f"checkpoint {path} does not match this student: {e}") from None
        self.step = int(state["step"])
        self.history = state.get("history", self.history)
        self.seconds = float(state.get("seconds", 0.0))
        return True

    def save_checkpoint(self):
        w = self._full_weights()
        o = self._full_optim()
        if self.dist.main:
            ckpt.save(self.ckpt_root, self.step, w, o,
                      {"config": asdict(self.c), "history": self.history, "seconds": self.seconds},
                      keep=self.c.keep_checkpoints)
        self._barrier()

    def _barrier(self):
        if self.dist.active:
            import torch.distributed as dist
            dist.barrier()

    # --------------------------------------------------------------------- run
    def train(self, on_step=None) -> dict:
        c = self.c
        tokens_per_step = c.batch * (self.data.seq_len - 1)
        bar = progress_bar(total=c.steps, desc="distill", unit="step", disable=not self.show,
                           initial=self.step)
        self.model.train()
        stop_reason = "steps"
        while self.step < c.steps:
            t0 = time.perf_counter()
            lr = lr_at(self.step, c, self.seconds)
            for g in self.opt.param_groups:
                g["lr"] = lr
            on_pol = c.on_policy > 0 and \
                torch.rand((), generator=torch.Generator().manual_seed(c.seed + 31 * self.step)) < c.on_policy
            idx = self._local_indices(self.step)
            tot, parts_sum = 0.0, {}
            for a in range(self.accum):
                mi = idx[a * self.micro:(a + 1) * self.micro]
                sync = a == self.accum - 1
                ctx = self.model.no_sync() if (hasattr(self.model, "no_sync") and not sync) \
                    else _null()
                with ctx:
                    loss, parts = self._loss(self.data.train[mi], mi, bool(on_pol), self.step)
                    (loss / self.accum).backward()
                tot += float(loss.detach()) / self.accum
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / self.accum
            if self.dist.active and self.projector is not None:
                # the projector lives outside DDP/FSDP: average its gradients by hand
                import torch.distributed as dist
                for p in self.projector.parameters():
                    dist.all_reduce(p.grad)
                    p.grad /= self.dist.world
            gnorm = torch.nn.utils.clip_grad_norm_(self._trainable(), c.clip) if c.clip > 0 \
                else torch.zeros(())
            if hasattr(gnorm, "full_tensor"):     # FSDP2: a DTensor
                gnorm = gnorm.full_tensor()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            tot = self._allreduce_mean(tot)
            self.step += 1
            dt = time.perf_counter() - t0
            self.seconds += dt
            self.history["train"].append([self.step, self.step * tokens_per_step, self.seconds,
                                          tot, lr, float(gnorm)])
            bar.set_postfix(loss=f"{tot:.3f}", tok_s=f"{tokens_per_step / dt:.0f}", refresh=False)
            bar.update(1)
            last = self.step == c.steps
            out_of_time = (c.max_minutes > 0 and self.seconds >= c.max_minutes * 60) or \
                (c.schedule_minutes > 0 and self.seconds >= c.schedule_minutes * 60)
            if c.eval_every and (self.step % c.eval_every == 0 or last or out_of_time):
                ev = self.evaluate()
                if ev:
                    self.history["eval"].append([self.step, self.step * tokens_per_step,
                                                 self.seconds, ev["ppl"], ev.get("agreement")])
                    if self.show:
                        bar.write(f"step {self.step}: held-out ppl {ev['ppl']:.2f}" +
                                  (f", agreement {ev['agreement']:.3f}" if "agreement" in ev else ""))
            if c.ckpt_every and (self.step % c.ckpt_every == 0 or last or out_of_time):
                self.save_checkpoint()
            if on_step is not None:
                on_step(self)
            if out_of_time:
                stop_reason = "time"
                break
        bar.close()
        return {"steps": self.step, "seconds": self.seconds, "stop": stop_reason,
                "tokens": self.step * tokens_per_step}

    def _allreduce_mean(self, v: float) -> float:
        if not self.dist.active:
            return v
        import torch.distributed as dist
        t = torch.tensor([v], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.dist.world

    # ------------------------------------------------------------------ output
    def save_student(self, directory: str, tokenizer=None):
        """The student as a plain checkpoint directory (config.json + safetensors + tokenizer)."""
        from ..formats.checkpoint import save_checkpoint
        from .prune import pad_hidden
        w = {k: v for k, v in self._full_weights().items() if not k.startswith("hidden_proj.")}
        cfg, w = pad_hidden(self.student.cfg, w, 32)     # int4 groups of 32; same function
        if self.dist.main:
            save_checkpoint(directory, cfg, w, tokenizer or self.tokenizer)
            with open(os.path.join(directory, "distill_history.json"), "w") as f:
                json.dump({"config": asdict(self.c), "history": self.history}, f)
        self._barrier()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def plot_curves(history: dict, path: str, title: str = "distillation"):
    """PNG of training loss and held-out perplexity against tokens."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    tr = history["train"]
    if tr:
        ax[0].plot([r[1] for r in tr], [r[3] for r in tr])
    ax[0].set_xlabel("tokens")
    ax[0].set_ylabel("training loss")
    ev = history["eval"]
    if ev:
        ax[1].plot([r[1] for r in ev], [r[3] for r in ev], marker="o")
        ax[1].set_yscale("log")
    ax[1].set_xlabel("tokens")
    ax[1].set_ylabel("held-out perplexity")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
