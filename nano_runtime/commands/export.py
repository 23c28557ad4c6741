"""nano export pte|onnx MODEL -o OUT: artifacts for ExecuTorch and ONNX Runtime GenAI apps."""
from ..errors import NanoError

NAME = "export"
HELP = "export for phones: ExecuTorch .pte (LLM runner) or ONNX Runtime GenAI folder"
ORDER = 70


def add_arguments(p):
    p.add_argument("format", choices=["pte", "onnx"],
                   help="pte: ExecuTorch program for its LLM runner (XNNPACK, 8da4w); "
                        "onnx: ONNX Runtime GenAI folder (int4 MatMulNBits, GroupQueryAttention)")
    p.add_argument("model", help="a .gguf, checkpoint directory, .nano file or model-card name")
    p.add_argument("-o", "--output", required=True,
                   help="output directory (model.pte or model.onnx + tokenizer files); "
                        "written through a temp directory, replaced only on success")
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="KV cache length / longest context of the artifact "
                        "(default: min(1024, the model's context))")
    p.add_argument("--group-size", type=int, default=32,
                   help="4-bit weight group (block) size: 32, 64 or 128 (default 32)")


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args):
    """Export; SIGTERM (like Ctrl-C) unwinds through the temp-directory cleanup."""
    import signal
    old = signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(args):
    import os
    from ..export.metadata import DEFAULT_MAX_SEQ_LEN, ExportOptions
    from ..loader import load_model
    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise NanoError(f"{out} exists and is not a directory")
    lm = load_model(args.model)
    if lm.tokenizer is None:
        raise NanoError(f"{args.model} has no tokenizer; export ships one beside the model")
    seq = args.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, lm.config.max_seq_len)
    opts = ExportOptions(max_seq_len=seq, group_size=args.group_size)
    if args.format == "pte":
        from ..export.pte import export_pte
        res = export_pte(lm, out, opts)
    else:
        from ..export.onnx_genai import export_onnx
        res = export_onnx(lm, out, opts)
    print(f"wrote {out} ({res['bytes'] / 2**20:.1f} MiB, context {seq})")
    return 0
