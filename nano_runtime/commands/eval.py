"""nano eval ppl MODEL --text FILE [--ctx N] [--backend native|torch] [--json]."""
from ..errors import NanoError
from ._common import check_threads, print_json

NAME = "eval"
HELP = "evaluate a model (perplexity on a text file)"
ORDER = 60


def add_arguments(p):
    sub = p.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    pp = sub.add_parser("ppl", help="perplexity over non-overlapping windows")
    pp.add_argument("model")
    pp.add_argument("--text", required=True, help="UTF-8 text file")
    pp.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    pp.add_argument("--max-windows", type=int, default=0, help="score only the first N windows")
    pp.add_argument("--backend", choices=["native", "torch"], default="native")
    pp.add_argument("--threads", type=int, default=None, help="worker threads (default: one per core)")
    from ..engine import add_native_args
    add_native_args(pp, ctx_option=False)
    pp.add_argument("--json", action="store_true", help='print {"ppl", "tokens"}')


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise NanoError(f"{path}: not valid UTF-8 text") from None
    if not text.strip():
        raise NanoError(f"{path}: the text file is empty")
    return text


def run(args):
    from ..evaluate import perplexity, ppl_windows, torch_logits_fn
    from ..progress import progress_bar
    if args.backend == "native":
        from ..engine import check_native_threads
        check_native_threads(args.threads)
    else:
        check_threads(args)
    text = read_text(args.text)
    if args.ctx < 2:
        raise NanoError(f"--ctx must be >= 2, got {args.ctx}")
    if args.backend == "native":
        from ..engine import native_ppl_setup
        tok, logits_fn, max_ctx = native_ppl_setup(args)
    else:
        from ..loader import load_model
        lm = load_model(args.model)
        tok, logits_fn, max_ctx = lm.tokenizer, torch_logits_fn(lm.model), lm.config.max_seq_len
    if tok is None:
        raise NanoError(f"{args.model} has no tokenizer")
    if args.ctx > max_ctx:
        raise NanoError(f"--ctx {args.ctx} exceeds the model's context of {max_ctx} tokens")
    ids = tok.encode(text, add_bos=False)
    wins = ppl_windows(ids, args.ctx, tok.bos_id if tok.add_bos else None)
    if args.max_windows > 0:
        wins = wins[:args.max_windows]
    with progress_bar(total=len(wins), desc="ppl", unit="window") as bar:
        res = perplexity(wins, logits_fn, bar)
    if args.json:
        print_json({"ppl": res["ppl"], "tokens": res["tokens"]})
    else:
        print(f"perplexity {res['ppl']:.4f} over {res['tokens']} tokens "
              f"({len(wins)} windows of {args.ctx})")
    return 0
