"""nano generate MODEL --prompt P [...] [--json]."""
import sys

from ._common import (add_backend_args, add_sampling_args, check_threads, print_json,
                      sampling_params)

NAME = "generate"
HELP = "generate a continuation (or a chat reply with --chat) for one prompt"
ORDER = 40


def add_arguments(p):
    p.add_argument("model")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", default=None, help="system message (with --chat)")
    add_sampling_args(p)
    add_backend_args(p)
    p.add_argument("--json", action="store_true",
                   help='print {"text", "ids", "prompt_tokens", "prefill_tok_s", '
                        '"decode_tok_s", "peak_rss_mb"}')


def run(args):
    params = sampling_params(args)
    check_threads(args)
    if args.max_tokens < 1:
        from ..errors import NanoError
        raise NanoError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.backend == "native":
        from ..engine import native_generate
        res = native_generate(args, params)
    else:
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
