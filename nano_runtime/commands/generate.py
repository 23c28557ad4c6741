"""nano generate MODEL --prompt P [...] [--json]."""
import sys

from ._common import (add_backend_args, add_sampling_args, check_threads, print_json,
                      sampling_params)


def add_context_shift_args(p):
    """--context-shift / --keep (generate and chat; native backend)."""
    p.add_argument("--context-shift", action="store_true",
                   help="when the context is full, keep the first --keep tokens, drop the oldest "
                        "half of the rest and continue (default: stop with reason 'context')")
    p.add_argument("--keep", type=int, default=None, metavar="N",
                   help="tokens kept at the start on a context shift (default: the BOS token, or "
                        "the system prompt with --chat)")

NAME = "generate"
HELP = "generate a continuation (or a chat reply with --chat) for one prompt"
ORDER = 40


def add_arguments(p):
    p.add_argument("model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", default=None, help="system message (with --chat)")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop when this text appears; it is not printed (repeatable, at most 16; "
                        "native backend)")
    add_context_shift_args(p)
    add_sampling_args(p)
    add_backend_args(p, default="native")
    from ..engine import add_native_args
    add_native_args(p)
    p.add_argument("--json", action="store_true",
                   help='print {"text", "ids", "prompt_tokens", "prefill_tok_s", '
                        '"decode_tok_s", "peak_rss_mb"}')


def run(args):
    from ..errors import NanoError
    if args.max_tokens < 1:
        raise NanoError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.keep is not None and args.keep < 0:
        raise NanoError(f"--keep must be >= 0, got {args.keep}")
    if args.backend == "native":  # no torch import on this path
        from ..engine import check_native_threads, native_generate, sampling_from_args
        params = sampling_from_args(args)
        check_native_threads(args.threads)
        res = native_generate(args, params)
    else:
        if args.context_shift or args.stop:
            raise NanoError("--stop and --context-shift need the native backend (--backend native)")
        params = sampling_params(args)
        check_threads(args)
        from ..generate import generate_text
        from ..loader import load_model
        lm = load_model(args.model)
        stream = None if args.json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        res = generate_text(lm, args.prompt, args.max_tokens, params, chat=args.chat,
                            system=args.system, on_text=stream)
    if args.json:
        print_json({"text": res.text, "ids": res.ids, "prompt_tokens": res.prompt_tokens,
                    "prefill_tok_s": res.prefill_tok_s, "decode_tok_s": res.decode_tok_s,
                    "peak_rss_mb": res.peak_rss_mb, "stop_reason": res.stop_reason})
    else:
        sys.stdout.write("\n")
    return 0
