"""`nano distill` end to end: teacher -> student -> data -> train -> student checkpoint.

The same function runs in one process and under ``torchrun --nproc_per_node N
-m nano_runtime distill ... --parallel ddp|fsdp``: every rank loads the teacher,
builds the identical student (pruning is deterministic, fresh init is seeded)
and packs the identical data; rank 0 alone writes files.

Output directory DIR:
    config.json, model.safetensors, tokenizer*.json   the student (a checkpoint
                                                      directory: nano quantize DIR)
    distill_history.json, curves.png                  loss / held-out curves
    checkpoints/step-NNNNNN/                          resumable training state
    teacher_topk.safetensors                          with --teacher-cache K
"""
from __future__ import annotations

import os
import shutil
import tempfile

from ..errors import NanoError


def _student(args, teacher_lm, calib_text):
    from ..loader import build_model, load_model
    spec = args.student
    if spec.startswith("prune:"):
        from .prune import prune_model
        cfg, state, kept = prune_model(teacher_lm.model, teacher_lm.tokenizer, spec, calib_text,
                                       seq_len=min(256, teacher_lm.config.max_seq_len))
        return build_model(cfg, state), kept
    lm = load_model(spec)
    if lm.config.vocab_size != teacher_lm.config.vocab_size:
        raise NanoError(f"vocabulary mismatch: teacher {args.teacher} has "
                        f"{teacher_lm.config.vocab_size} tokens, student {spec} has "
                        f"{lm.config.vocab_size}; the student must use the teacher's tokenizer")
    if lm.tokenizer is not None and teacher_lm.tokenizer is not None and \
            lm.tokenizer.tokenizer_json != teacher_lm.tokenizer.tokenizer_json:
        raise NanoError(f"vocabulary mismatch: {spec} and {args.teacher} have different "
                        "tokenizers; the student must use the teacher's tokenizer")
    if lm.kind == "card-config":
        lm.model = build_model(lm.config, None, seed=args.seed)
    return lm.model, None


def config_from_args(args):
    from .trainer import DistillConfig
    return DistillConfig(
        steps=args.steps, batch=args.batch, micro_batch=args.micro_batch or 0, lr=args.lr,
        min_lr_ratio=args.min_lr_ratio, warmup=args.warmup, weight_decay=args.weight_decay,
        clip=args.clip, loss=args.loss, temperature=args.temperature, beta=args.beta,
        alpha=args.alpha, ce_weight=args.ce_weight, hidden_weight=args.hidden_weight,
        on_policy=args.on_policy, prompt_len=args.prompt_len, bf16=args.bf16,
        grad_checkpointing=args.grad_checkpointing, freeze_embeddings=args.freeze_embeddings,
        eval_every=args.eval_every, ckpt_every=args.ckpt_every, seed=args.seed,
        parallel=args.parallel, max_minutes=args.max_minutes)


def run_distill(args) -> dict:
    import torch
    from ..loader import load_model
    from .data import TopKCache, build_topk_cache, prepare, read_text_file
    from .trainer import Trainer, plot_curves
    from . import checkpoints as ckpt

    c = config_from_args(args)              # validates the options before any loading
    text = read_text_file(args.data)
    held_text = read_text_file(args.eval_text) if args.eval_text else None
    if args.calib:
        calib = read_text_file(args.calib)
    else:
        from ..data import english_text
        calib = english_text("calib")
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise NanoError(f"{out} exists and is not a directory")
    root = os.path.join(out, "checkpoints")
    if ckpt.latest(root) and not args.resume:
        raise NanoError(f"{out} already holds training checkpoints; pass --resume to continue "
                        "or choose another -o")
    os.makedirs(out, exist_ok=True)

    teacher = load_model(args.teacher)
    if teacher.tokenizer is None:
        raise NanoError(f"{args.teacher} has no tokenizer; the teacher's tokenizer defines the data")
    student, kept = _student(args, teacher, calib)
    if args.seq_len > min(student.cfg.max_seq_len, teacher.config.max_seq_len):
        raise NanoError(f"--seq-len {args.seq_len} exceeds the models' context")
    data = prepare(teacher.tokenizer, text, args.seq_len, args.held_out, args.seed, held_text)

    cache = None
    if args.teacher_cache:
        path = os.path.join(out, "teacher_topk.safetensors")
        from .trainer import init_distributed
        d = init_distributed()
        if d.main:
            try:
                TopKCache(path, data.train, c.temperature)
            except NanoError:
                build_topk_cache(teacher.model, data.train, path, k=args.teacher_cache,
                                 temperature=c.temperature)
        if d.active:
            torch.distributed.barrier()
        cache = TopKCache(path, data.train, c.temperature)
    # the teacher stays loaded even with a cache: it scores held-out agreement
    tr = Trainer(student, c, data, out, teacher=teacher.model, cache=cache, kept_layers=kept,
                 tokenizer=teacher.tokenizer)
    if args.resume:
        if not tr.resume(args.resume if isinstance(args.resume, str) else None):
            raise NanoError(f"--resume: no checkpoint under {root}")
    res = tr.train()
    _write_student(tr, out, teacher.tokenizer)       # every rank: gathers FSDP2 shards
    if tr.dist.main:
        plot_curves(tr.history, os.path.join(out, "curves.png"),
                    f"{args.teacher} -> {args.student} ({c.loss}, T={c.temperature})")
    tr._barrier()
    ev = tr.history["eval"][-1] if tr.history["eval"] else None
    res.update(final_ppl=ev[3] if ev else None, agreement=ev[4] if ev else None, output=out)
    return res


def _write_student(tr, out: str, tokenizer):
    """The student's checkpoint files into `out`, each replaced atomically (the
    checkpoints/ folder beside them is left alone)."""
    if not tr.dist.main:
        tr.save_student(None, tokenizer)
        return
    tmp = tempfile.mkdtemp(prefix=".tmp-student-", dir=out)
    try:
        tr.save_student(os.path.join(tmp, "s"), tokenizer)
        src = os.path.join(tmp, "s")
        names = sorted(os.listdir(src), key=lambda n: n == "config.json")  # config.json last
        for name in names:
            os.replace(os.path.join(src, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
