"""Size a distillation run for given GPUs: memory per GPU, sharding, tokens/s.

Memory per GPU, in bytes (mixed precision: bf16 compute, fp32 master state):

    student state   16 B/param: fp32 weights 4 + fp32 grads 4 + AdamW m, v 8
                    DDP keeps all of it on every GPU; FSDP2 (fully_shard) divides
                    it by the number of GPUs and all-gathers two layers' bf16
                    weights at a time (the one computing and the one prefetched)
    activations     per layer, per token, bf16 saved tensors of a Llama block:
                    5 d (norm in/out, residual) + 2 q + 2 kv (q, k, v, attn out) +
                    4 hidden (gate, up, act, gate*up)   [SDPA/flash: no T x T matrix]
                    with gradient checkpointing only each layer's input (d) is
                    kept, plus one layer's full set during recomputation
    logits          student logits fp32 + their gradient fp32 + teacher logits fp32
                    = 12 B x tokens x vocab per micro-batch (the largest single term)
    teacher         bf16 weights 2 B/param, replicated (DDP) or sharded like the
                    student (FSDP2); forward only, one layer's activations at a time
    overhead        a fixed 2 GiB per GPU (CUDA context, NCCL buffers, allocator slack)

Throughput: FLOPs per token = 6 N_student (+2 N_student when recomputing for
checkpointing) + 2 N_teacher + attention 12 L d T / 2 per model (causal), where N
counts every matmul parameter including the output head. tokens/s = GPUs x peak x
MFU / FLOPs per token, with peak and MFU stated on the command line (defaults:
989 TFLOP/s dense bf16 = H100 SXM, MFU 40%).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config import ModelConfig
from ..errors import NanoError

GiB = 1024 ** 3
OVERHEAD = 2 * GiB
USABLE = 0.92          # fraction of the GPU memory a plan may fill


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token (layers + output head)."""
    return cfg.n_layers * cfg.layer_params() + cfg.vocab_size * cfg.dim


def _llama_like(params_b: float, vocab: int) -> ModelConfig:
    """A Llama-shaped config of about params_b billion parameters (teacher stand-in)."""
    shapes = [(1.0, 2048, 16, 8192), (3.0, 3072, 28, 8192), (7.0, 4096, 32, 14336),
              (13.0, 5120, 40, 13824), (32.0, 6144, 60, 24576), (70.0, 8192, 80, 28672)]
    for b, d, L, h in shapes:
        if params_b <= b * 1.15:
            break
    cfg = ModelConfig(name=f"{params_b:g}B-teacher", vocab_size=vocab, dim=d, n_layers=L,
                      n_heads=d // 128, n_kv_heads=8, head_dim=128, hidden_dim=h,
                      tie_embeddings=False)
    # scale the layer count to hit the requested size
    per_layer = cfg.layer_params()
    L = max(1, round((params_b * 1e9 - 2 * vocab * d) / per_layer))
    return dataclasses.replace(cfg, n_layers=L)


@dataclass
class Plan:
    student: str
    teacher: str
    gpus: int
    gpu_mem_gb: float
    micro_batch: int
    seq_len: int
    global_batch_tokens: int
    sharding: str                 # ddp | fsdp
    grad_checkpointing: bool
    memory_gb: dict = field(default_factory=dict)     # per GPU
    total_gb: float = 0.0
    fits: bool = False
    flops_per_token: float = 0.0
    tokens_per_s: float = 0.0
    assumptions: dict = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _memory(s: ModelConfig, t: ModelConfig, gpus: int, mb: int, seq: int, sharding: str,
            ckpt: bool, teacher_cached: bool) -> dict:
    n_s, n_t = s.num_params(), (0 if teacher_cached else t.num_params())
    tok = mb * seq
    shard = gpus if sharding == "fsdp" else 1
    layer_bf16 = 2 * s.layer_params()
    state = 16 * n_s / shard + (2 * 2 * layer_bf16 if sharding == "fsdp" else 0)
    per_layer_tok = 2 * (5 * s.dim + 2 * s.q_dim + 2 * s.kv_dim + 4 * s.hidden_dim)
    if ckpt:
        act = tok * (s.n_layers * 2 * s.dim + per_layer_tok)
    else:
        act = tok * s.n_layers * per_layer_tok
    logits = 12 * tok * s.vocab_size
    teacher = 0.0
    if n_t:
        teacher = 2 * n_t / shard + (2 * 2 * 2 * t.layer_params() if sharding == "fsdp" else 0)
        teacher += tok * 2 * (3 * t.dim + t.hidden_dim * 2)      # one layer's forward, no grad
    return {"student_weights_grads_optimizer": state / GiB, "activations": act / GiB,
            "logits": logits / GiB, "teacher": teacher / GiB, "overhead": OVERHEAD / GiB}


def _flops_per_token(s: ModelConfig, t: ModelConfig, seq: int, ckpt: bool, teacher_cached: bool):
    def attn(c):
        return 12 * c.n_layers * c.q_dim * seq / 2
    f = (8 if ckpt else 6) * matmul_params(s) + 3 * attn(s) * (4 / 3 if ckpt else 1)
    if not teacher_cached:
        f += 2 * matmul_params(t) + attn(t)
    return f


def plan(student: str, gpus: int, gpu_mem_gb: float, teacher=None, micro_batch: int = 0,
         seq_len: int = 4096, global_batch_tokens: int = 4 * 1024 * 1024,
         peak_tflops: float = 989.0, mfu: float = 0.40) -> Plan:
    """The fastest layout that fits: no checkpointing before checkpointing (recompute
    costs a third more), DDP before FSDP2, the largest micro-batch <= 8; a Plan with fits=False and a reason if none does."""
    if gpus < 1:
        raise NanoError(f"--gpus must be >= 1, got {gpus}")
    if not (gpu_mem_gb > 0):
        raise NanoError(f"--gpu-mem must be > 0 GB, got {gpu_mem_gb}")
    if seq_len < 2:
        raise NanoError(f"--seq-len must be >= 2, got {seq_len}")
    try:
        s = ModelConfig.from_name(student)
    except (KeyError, ValueError, NanoError) as e:
        raise NanoError(f"--plan {student}: not a preset with a config ({e})") from None
    t, t_name, cached = _teacher(teacher, student, s)
    budget = gpu_mem_gb * 1e9 / GiB * USABLE
    mbs = [micro_batch] if micro_batch else [8, 4, 2, 1]
    tried = []
    layouts = [("ddp", False), ("fsdp", False), ("ddp", True), ("fsdp", True)]
    if gpus == 1:
        layouts = [(sh, ck) for sh, ck in layouts if sh == "ddp"]
    for sharding, ckpt in layouts:
        if True:
            for mb in mbs:
                mem = _memory(s, t, gpus, mb, seq_len, sharding, ckpt, cached)
                total = sum(mem.values())
                tried.append((total, sharding, ckpt, mb, mem))
                if total <= budget:
                    return _finish(student, t_name, gpus, gpu_mem_gb, mb, seq_len,
                                   global_batch_tokens, sharding, ckpt, mem, True, s, t, cached,
                                   peak_tflops, mfu, "")
    total, sharding, ckpt, mb, mem = min(tried, key=lambda r: r[0])
    why = (f"does not fit: the smallest layout ({sharding}, micro-batch {mb}, "
           f"{'with' if ckpt else 'without'} gradient checkpointing) needs {total:.1f} GiB per GPU, "
           f"{budget:.1f} GiB usable of {gpu_mem_gb:g} GB")
    return _finish(student, t_name, gpus, gpu_mem_gb, mb, seq_len, global_batch_tokens, sharding,
                   ckpt, mem, False, s, t, cached, peak_tflops, mfu, why)


def _teacher(teacher, student: str, s: ModelConfig):
    """(config, name, cached) of the teacher: a preset, a size in billions, or 'cached'."""
    if teacher in (None, ""):
        teacher = "nano-2" if student == "nano-1" else "7"
    if teacher == "cached":
        return s, "cached top-k logits (no teacher on the GPUs)", True
    try:
        b = float(teacher)
        return _llama_like(b, s.vocab_size), f"{b:g}B Llama-shaped teacher", False
    except ValueError:
        pass
    try:
        return ModelConfig.from_name(teacher), teacher, False
    except (KeyError, ValueError, NanoError) as e:
        raise NanoError(f"--plan-teacher {teacher}: not a preset, a size in billions or "
                        f"'cached' ({e})") from None


def _finish(student, t_name, gpus, mem_gb, mb, seq, gbt, sharding, ckpt, mem, fits, s, t, cached,
            peak, mfu, reason) -> Plan:
    f = _flops_per_token(s, t, seq, ckpt, cached)
    tps = gpus * peak * 1e12 * mfu / f
    return Plan(student=student, teacher=t_name, gpus=gpus, gpu_mem_gb=mem_gb, micro_batch=mb,
                seq_len=seq, global_batch_tokens=gbt, sharding=sharding, grad_checkpointing=ckpt,
                memory_gb={k: round(v, 2) for k, v in mem.items()},
                total_gb=round(sum(mem.values()), 2), fits=fits, flops_per_token=f,
                tokens_per_s=round(tps) if fits else 0.0,
                assumptions={"peak_tflops_per_gpu": peak, "mfu": mfu, "usable_fraction": USABLE,
                             "student_params": s.num_params(), "teacher_params":
                             0 if cached else t.num_params(),
                             "grad_accumulation": max(1, gbt // (mb * seq * gpus))},
                reason=reason)


def format_plan(p: Plan) -> str:
    a = p.assumptions
    lines = [f"plan: {p.student} ({a['student_params'] / 1e9:.2f}B) distilled from {p.teacher}"
             + (f" ({a['teacher_params'] / 1e9:.2f}B)" if a["teacher_params"] else ""),
             f"  {p.gpus} GPU(s) x {p.gpu_mem_gb:g} GB, micro-batch {p.micro_batch} x {p.seq_len} "
             f"tokens, global batch {p.global_batch_tokens} tokens "
             f"(gradient accumulation {a['grad_accumulation']})",
             f"  sharding: {'none (one GPU)' if p.gpus == 1 else p.sharding.upper()}"
             + (" (FSDP2 fully_shard per block + root)" if p.sharding == "fsdp" else
                "" if p.gpus == 1 else " (replicated)")
             + f", gradient checkpointing {'on' if p.grad_checkpointing else 'off'}",
             "  memory per GPU (GiB):"]
    for k, v in p.memory_gb.items():
        lines.append(f"    {k:34s} {v:8.2f}")
    lines.append(f"    {'total':34s} {p.total_gb:8.2f}   (usable {p.gpu_mem_gb * 1e9 / GiB * USABLE:.1f})")
    if p.fits:
        lines.append(f"  compute: {p.flops_per_token / 1e9:.1f} GFLOP/token; at {a['peak_tflops_per_gpu']:g} "
                     f"TFLOP/s/GPU peak and {a['mfu'] * 100:.0f}% MFU: ~{p.tokens_per_s:,.0f} tokens/s "
                     f"({p.tokens_per_s * 86400 / 1e9:.1f}B tokens/day)")
    else:
        lines.append("  " + p.reason)
    return "\n".join(lines)
