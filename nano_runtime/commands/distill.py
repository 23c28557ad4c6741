"""nano distill: prune/initialise a student and train it against a teacher; or plan a run.

    nano distill --teacher MODEL --student CONFIG|prune:SPEC --data FILE -o DIR [...]
    nano distill --plan PRESET --gpus N --gpu-mem GB [--json]

Under torchrun the same command scales out:
    torchrun --nproc_per_node 8 -m nano_runtime distill ... --parallel fsdp
"""
from ..errors import NanoError
from ._common import print_json

NAME = "distill"
HELP = "distill a teacher into a (pruned) student, or plan a multi-GPU run"
ORDER = 45


def add_arguments(p):
    g = p.add_argument_group("run")
    g.add_argument("--teacher", help="teacher MODEL (.gguf, checkpoint dir, .nano, card name)")
    g.add_argument("--student", help="student: a config (card name, checkpoint dir) or "
                   "prune:layers=N,hidden=H,heads=A,kv_heads=K,dim=D,depth=bi|angular")
    g.add_argument("--data", help="UTF-8 training text, tokenized with the teacher's tokenizer")
    g.add_argument("-o", "--output", help="output directory (the student checkpoint)")
    g.add_argument("--eval-text", help="held-out text (default: --held-out of --data)")
    g.add_argument("--held-out", type=float, default=0.1, help="held-out fraction (default 0.1)")
    g.add_argument("--calib", help="calibration text for pruning (default: built-in docs)")
    g.add_argument("--steps", type=int, default=200)
    g.add_argument("--batch", type=int, default=8, help="global batch in sequences")
    g.add_argument("--micro-batch", type=int, default=0,
                   help="sequences per rank per micro-step (0 = no accumulation)")
    g.add_argument("--seq-len", type=int, default=256)
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--min-lr-ratio", type=float, default=0.1)
    g.add_argument("--warmup", type=int, default=10)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--clip", type=float, default=1.0)
    g.add_argument("--loss", default="forward_kl",
                   help="forward_kl | reverse_kl | jsd | skew_kl | skew_rkl")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--beta", type=float, default=0.5, help="generalized JSD beta")
    g.add_argument("--alpha", type=float, default=0.1, help="skew KL alpha")
    g.add_argument("--ce-weight", type=float, default=0.0, help="cross-entropy mix (1 = CE only)")
    g.add_argument("--hidden-weight", type=float, default=0.0,
                   help="hidden-state loss weight (learned projections)")
    g.add_argument("--on-policy", type=float, default=0.0,
                   help="fraction of steps on student samples scored by the teacher (GKD)")
    g.add_argument("--prompt-len", type=int, default=32)
    g.add_argument("--teacher-cache", type=int, default=0, metavar="K",
                   help="cache the teacher's top-K log-probs on disk (0 = run it live)")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast for the student")
    g.add_argument("--grad-checkpointing", action="store_true")
    g.add_argument("--freeze-embeddings", action="store_true")
    g.add_argument("--eval-every", type=int, default=50)
    g.add_argument("--ckpt-every", type=int, default=50)
    g.add_argument("--max-minutes", type=float, default=0.0, help="stop after this training time")
    g.add_argument("--resume", action="store_true", help="continue from DIR/checkpoints")
    g.add_argument("--parallel", default="none", help="none | ddp | fsdp (under torchrun)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    pl = p.add_argument_group("plan")
    pl.add_argument("--plan", metavar="PRESET", help="size a run of nano-1 or nano-2")
    pl.add_argument("--gpus", type=int, default=8)
    pl.add_argument("--gpu-mem", type=float, default=80.0, help="GB per GPU")
    pl.add_argument("--plan-teacher", default=None,
                    help="teacher preset, size in billions, or 'cached' (default: nano-2 for "
                         "nano-1, 7B for nano-2)")
    pl.add_argument("--plan-seq-len", type=int, default=4096)
    pl.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense bf16 TFLOP/s per GPU (default 989, H100 SXM)")
    pl.add_argument("--mfu", type=float, default=0.40)
    pl.add_argument("--json", action="store_true")


def run(args):
    if args.plan:
        return _plan(args)
    missing = [f for f, v in (("--teacher", args.teacher), ("--student", args.student),
                              ("--data", args.data), ("-o", args.output)) if not v]
    if missing:
        raise NanoError(f"distill needs {', '.join(missing)} (or --plan PRESET)")
    from ._common import check_threads
    check_threads(args)
    from ..distill.pipeline import run_distill
    res = run_distill(args)
    if args.json:
        print_json(res)
    else:
        ppl = f", held-out ppl {res['final_ppl']:.2f}" if res.get("final_ppl") else ""
        agr = f", teacher agreement {res['agreement']:.3f}" if res.get("agreement") is not None else ""
        print(f"distilled {res['steps']} steps ({res['tokens']} tokens, {res['seconds']:.0f} s)"
              f"{ppl}{agr} -> {res['output']}")
    return 0


def _plan(args):
    from ..distill.planner import format_plan, plan
    if not (0 < args.mfu <= 1):
        raise NanoError(f"--mfu must be in (0, 1], got {args.mfu}")
    p = plan(args.plan, args.gpus, args.gpu_mem, teacher=args.plan_teacher,
             micro_batch=args.micro_batch, seq_len=args.plan_seq_len,
             peak_tflops=args.peak_tflops, mfu=args.mfu)
    if args.json:
        print_json(p.to_dict())
    else:
        print(format_plan(p))
    if not p.fits:
        raise NanoError(f"plan for {args.plan} on {args.gpus} x {args.gpu_mem:g} GB {p.reason}")
    return 0
