"""nano chat [MODEL]: interactive, streaming chat in the terminal."""
import signal
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
    from .generate import add_context_shift_args
    add_context_shift_args(p)
    add_backend_args(p, default="native")
    from ..engine import add_native_args
    add_native_args(p, precise_default=True)  # chat: answers as the reference gives them


def run(args):
    if args.max_tokens < 1:
        from ..errors import NanoError
        raise NanoError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.keep is not None and args.keep < 0:
        from ..errors import NanoError
        raise NanoError(f"--keep must be >= 0, got {args.keep}")
    if args.backend == "native":  # no torch import on this path
        from ..engine import check_native_threads, native_chat, sampling_from_args
        params = sampling_from_args(args)
        check_native_threads(args.threads)
        return native_chat(args, params)
    if args.context_shift:
        from ..errors import NanoError
        raise NanoError("--context-shift needs the native backend (--backend native)")
    params = sampling_params(args)
    check_threads(args)
    return torch_chat(args, params)


def _command(line: str, reset, stats) -> str:
    """The slash commands of both chat loops. "exit", "done" (handled: read the next line)
    or "message" (send it to the model). reset() forgets the conversation, stats() -> str."""
    if line in ("/exit", "/quit"):
        return "exit"
    if line == "/help":
        print(HELP_TEXT)
    elif line == "/reset":
        reset()
        print("(conversation reset)")
    elif line == "/stats":
        print(stats())
    elif line.startswith("/"):
        print(f"unknown command {line.split()[0]}; {HELP_TEXT}")
    else:
        return "message"
    return "done"


class _CtrlC:
    """The chat's SIGINT handler: a Ctrl-C raises KeyboardInterrupt once; more Ctrl-C while that
    one is being handled (stopping the worker, printing " [stopped]") are dropped until the loop
    re-arms, so mashing Ctrl-C stops a reply but never the session."""

    def __init__(self):
        self.pending = False

    def __call__(self, signum, frame):
        if not self.pending:
            self.pending = True
            raise KeyboardInterrupt

    def rearm(self):
        self.pending = False


def _loop(turn) -> int:
    """Read lines and hand each to turn(line) -> "exit" | "done", until /exit or EOF (0).
    Ctrl-C at the prompt clears the line; Ctrl-C at any point of a turn (also before the first
    token, or between reading the line and starting the reply) stops it with " [stopped]" and
    the session goes on, conversation kept."""
    ctrl_c = _CtrlC()
    try:
        previous = signal.signal(signal.SIGINT, ctrl_c)
    except ValueError:  # not the main thread: keep Python's handler
        previous = None
    try:
        while True:
            line = None
            try:
                line = _read_line(ctrl_c.rearm)
                if line is None:
                    sys.stdout.write("\n")
                    return 0
                if line and turn(line) == "exit":
                    return 0
            except KeyboardInterrupt:
                sys.stdout.write(" [stopped]\n" if line else "\n")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _read_line(rearm, prompt="> "):
    """One line from stdin (stripped); None at EOF. Ctrl-C at the prompt clears the line;
    rearm() re-arms the chat's Ctrl-C handler before each prompt."""
    while True:
        try:
            rearm()
            sys.stdout.write(prompt)
            sys.stdout.flush()
            line = sys.stdin.readline()
            return None if not line else line.strip()
        except KeyboardInterrupt:
            sys.stdout.write("\n")


def _format_stats(eng, session) -> str:
    s = eng.stats()
    last = session.last or {}
    return (f"prefill {s['prefill_tok_s']:.1f} tok/s, decode {s['decode_tok_s']:.1f} tok/s "
            f"({s['prefill_tokens']} prompt + {s['decode_tokens']} generated tokens); "
            f"context {s['n_past']}/{s['n_ctx']} tokens, KV {s['kv_type']} "
            f"{s['kv_bytes'] / 2**20:.1f} MB, weights {s['weights_bytes'] / 2**20:.1f} MB (mmap), "
            f"peak RSS {s['peak_rss_mb']:.1f} MB; {s['n_threads']} threads, kernels {s['kernel']}"
            + (f"; last reply {last.get('reply_tokens', 0)} tokens in {last.get('seconds', 0)} s"
               if last else ""))


def chat_loop(eng, args, params):
    """The interactive loop over a native Engine (see nano_runtime.engine.native_chat)."""
    if eng.tokenizer is None or not eng.tokenizer.chat_template:
        from ..errors import NanoError
        raise NanoError(f"{args.model} has no chat template; use `nano generate`")
    session = eng.chat_session(system=args.system, sampling=params, max_tokens=args.max_tokens,
                               context_shift=getattr(args, "context_shift", False),
                               keep=getattr(args, "keep", None))
    plan = eng.plan
    sys.stderr.write(f"nano chat: {args.model} (native, {eng.info['family']}, context "
                     f"{plan['n_ctx']} tokens, KV {plan['kv_type']}). {HELP_TEXT}\n")

    def turn(line):
        what = _command(line, session.reset, lambda: _format_stats(eng, session))
        if what != "message":
            return what
        try:
            for piece in session.send(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except Exception as e:  # a NanoError (e.g. context full) ends the turn, not the session
            from ..errors import NanoError
            if not isinstance(e, NanoError):
                raise
            sys.stdout.write(f"\nerror: {e}")
        sys.stdout.write("\n")
        return "done"
    return _loop(turn)


def torch_chat(args, params):
    from ..generate import generate_ids
    from ..loader import load_model
    lm = load_model(args.model)
    tok = lm.tokenizer
    sys.stderr.write(f"nano chat: {lm.config.name} (torch backend). {HELP_TEXT}\n")
    history, stats = [], {}

    def turn(line):
        nonlocal stats
        what = _command(line, history.clear, lambda: str(stats or "(no reply yet)"))
        if what != "message":
            return what
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
        history.extend([{"role": "user", "content": line},
                        {"role": "assistant", "content": tok.decode(out)}])
        return "done"
    return _loop(turn)
