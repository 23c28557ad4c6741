"""Distillation: prune a teacher into a student and train it with knowledge distillation.

    prune.py        depth (block influence / angular distance) and width (MLP channels,
                    heads / KV groups, embedding channels) pruning, Minitron-style
    losses.py       forward / reverse KL, generalized JSD, skew KL, temperature, top-k
                    teachers, hidden-state loss with learned projections
    data.py         tokenize, pack, shuffle, held-out split; the top-k teacher cache
    trainer.py      the loop (AdamW, warmup + cosine, accumulation, bf16, clipping,
                    checkpointing, eval, on-policy steps), one process or torchrun DDP/FSDP2
    checkpoints.py  resumable, atomic, sha256-verified checkpoints (safetensors + JSON)
    planner.py      memory / sharding / throughput plan of a nano-1 or nano-2 run
    pipeline.py     `nano distill` end to end
"""
