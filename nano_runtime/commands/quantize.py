"""nano quantize MODEL -o OUT.nano [--method rtn|gptq|awq|awq-gptq|gguf-exact] [--group-size G]
[--calib FILE] [--sym] [--embed q8|f16|f32] [--head tied|q8|q4|f16|f32] [--act-order]
[--keep-q8 PREFIXES] [--tune-steps N [--tune-lr LR] [--tune-seqs N]]. RTN streams numpy-only (no torch import)."""
import json
import signal

from ..errors import NanoError

NAME = "quantize"
HELP = "quantize a model to 4 bits into one packed .nano file"
ORDER = 40


def add_arguments(p):
    p.add_argument("model", help="a .gguf, checkpoint directory, .nano or model-card name")
    p.add_argument("-o", "--output", required=True, help="output .nano file")
    p.add_argument("--method", default="rtn",
                   help="rtn (default, streamed), gptq, awq, awq-gptq, or gguf-exact "
                        "(lossless import of GGUF Q4_1/Q8_0 tensors)")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size: 32 (default), 64, 128")
    p.add_argument("--sym", action="store_true", help="symmetric int4 groups (default asymmetric)")
    p.add_argument("--embed", default="q8", help="embedding format: q8 (default), q4 (int4 in --group-size/--sym; with a tied "
                   "head it is the head too; with gguf-exact: int4 asym g32, a tied head fitted by GPTQ "
                   "on --calib), f16, f32")
    p.add_argument("--head", default=None,
                   help="untied output head format: q8 (default), q4, f16, f32 ('tied' when the "
                        "model ties it to the embeddings)")
    p.add_argument("--calib", default=None,
                   help="calibration text file for gptq/awq (default: the built-in English "
                        "calibration split, disjoint from the eval split)")
    p.add_argument("--calib-seqs", type=int, default=16, help="calibration windows (default 16)")
    p.add_argument("--calib-len", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--act-order", action="store_true", help="GPTQ: quantize columns by decreasing Hessian diagonal")
    p.add_argument("--damp", type=float, default=0.01, help="GPTQ Hessian damping (default 0.01)")
    p.add_argument("--keep-q8", default="", metavar="PREFIXES",
                   help="mixed precision: comma-separated linear layers stored as int8 per-32 "
                        "(e.g. layers.0.mlp.w_down,layers.29.attn.wv); the rest int4")
    p.add_argument("--tune-steps", type=int, default=0, metavar="N",
                   help="after quantizing, train the int4 group scales (and mins) end to end for N "
                        "steps (one calibration window each) to match the fp model's next-token "
                        "distribution; codes and bits per weight unchanged (default 0: off)")
    p.add_argument("--tune-lr", type=float, default=1e-3,
                   help="learning rate of --tune-steps, relative to each scale (default 1e-3)")
    p.add_argument("--tune-seqs", type=int, default=None, metavar="N",
                   help="calibration windows for --tune-steps, the last one held out (default: "
                        "--calib-seqs; more than the text has takes all of its windows)")
    p.add_argument("--seed", type=int, default=0, help="seed of random-init model cards")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # unwinds through write_nano, which removes its temp file


def run(args):
    from ..quant.pipeline import quantize_model
    if args.calib_seqs < 1 or args.calib_len < 16:
        raise NanoError("--calib-seqs must be >= 1 and --calib-len >= 16")
    if not (0 <= args.damp < 1):
        raise NanoError(f"--damp must be in [0, 1), got {args.damp}")
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        res = quantize_model(args.model, args.output, method=args.method,
                             group_size=args.group_size, symmetric=args.sym, embed=args.embed,
                             head=args.head, calib=args.calib, n_calib=args.calib_seqs,
                             seq_len=args.calib_len, act_order=args.act_order, damp=args.damp,
                             seed=args.seed, tune_steps=args.tune_steps, tune_lr=args.tune_lr,
                             tune_seqs=args.tune_seqs,
                             overrides={p.strip(): "q8" for p in args.keep_q8.split(",")
                                        if p.strip()})
    finally:
        signal.signal(signal.SIGTERM, old)
    if args.json:
        res = {k: v for k, v in res.items() if k != "layer_errors"}
        print(json.dumps(res))
    else:
        print(f"wrote {args.output}: {res['file_size_bytes'] / 2**20:.1f} MiB, "
              f"{res['bits_per_weight']:.3f} bits/weight in linear layers "
              f"({res['bits_per_weight_total']:.3f} overall), {res['seconds']:.1f} s, "
              f"peak RSS {res['peak_rss_mb']:.0f} MB")
    return 0
