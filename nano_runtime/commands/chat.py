"""nano chat [MODEL]: interactive, streaming chat in the terminal."""
import sys

from ._common import add_backend_args, check_threads, sampling_params

NAME = "chat"
HELP = "chat with a model in the terminal (default: smollm2-135m-instruct)"
ORDER = 5

HELP_TEXT = "commands: /reset (forget the conversation), /stats, /help, /exit"


def add_arguments(p):
    p.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=["low", "high"], default=None,
                   help="device memory profile (native backend)")
    add_backend_args(p)


def run(args):
    params = sampling_params(args)
    check_threads(args)
    if args.backend == "native":
        from ..engine import native_chat
        return native_chat(args, params)
    return torch_chat(args, params)


def torch_chat(args, params):
    from ..generate import generate_ids
    from ..loader import load_model
    lm = load_model(args.model)
    tok = lm.tokenizer
    sys.stderr.write(f"nano chat: {lm.config.name} (torch backend). {HELP_TEXT}\n")
    history, stats = [], {}
    while True:
        try:
            sys.stdout.write("> ")
            sys.stdout.flush()
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/help":
            print(HELP_TEXT)
            continue
        if line == "/reset":
            history = []
            print("(conversation reset)")
            continue
        if line == "/stats":
            print(stats or "(no reply yet)")
            continue
        msgs = ([{"role": "system", "content": args.system}] if args.system else []) + history + \
            [{"role": "user", "content": line}]
        ids = tok.encode_chat(msgs)
        out, shown = [], [""]

        def on_token(t):
            out.append(t)
            text = tok.decode(out)
            if not text.endswith("\ufffd"):
                sys.stdout.write(text[len(shown[0]):])
                sys.stdout.flush()
                shown[0] = text
        try:
            _, reason, tm = generate_ids(lm.model, ids, args.max_tokens, params, set(tok.stop_ids),
                                         on_token)
            stats = {"prompt_tokens": len(ids), "prefill_tok_s": round(tm["prefill_tok_s"], 1),
                     "decode_tok_s": round(tm["decode_tok_s"], 1)}
        except KeyboardInterrupt:
            lm.model.clear_cache()
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        history += [{"role": "user", "content": line},
                    {"role": "assistant", "content": tok.decode(out)}]
