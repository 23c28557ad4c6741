"""nano tokenize MODEL (--text T | --file F) [--json]."""
from ..errors import NanoError
from ._common import print_json

NAME = "tokenize"
HELP = "print the token ids of a text (no BOS/EOS added)"
ORDER = 30


def add_arguments(p):
    p.add_argument("model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--file", help="one input per line (the line without its newline)")
    p.add_argument("--json", action="store_true", help='print {"ids": [[...], ...]}')


def run(args):
    from ..loader import load_tokenizer
    tok = load_tokenizer(args.model)
    if tok is None:
        raise NanoError(f"{args.model} has no tokenizer")
    if args.text is not None:
        lines = [args.text]
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except UnicodeDecodeError:
            raise NanoError(f"{args.file}: not valid UTF-8 text") from None
        if lines and lines[-1] == "":
            lines.pop()
    ids = [tok.encode(line, add_bos=False) for line in lines]
    if args.json:
        print_json({"ids": ids})
    else:
        for line_ids in ids:
            print(" ".join(map(str, line_ids)))
    return 0
