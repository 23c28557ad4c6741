"""nano import SRC -o DIR: GGUF (or safetensors checkpoint) -> fp checkpoint directory."""
import os

from ..errors import NanoError

NAME = "import"
HELP = "convert a GGUF file (or model card) into an fp checkpoint directory"
ORDER = 20


def add_arguments(p):
    p.add_argument("src", help="a .gguf file or a model-card name")
    p.add_argument("-o", "--output", required=True, help="output directory")


def run(args):
    from .. import cards
    from ..loader import import_gguf
    src, name, tmpl = args.src, "custom", None
    if not os.path.exists(src) and os.path.sep not in src and cards.is_card_name(src):
        card = cards.get_card(src)
        if "source" not in card:
            raise NanoError(f"model card {src!r} has no weights to import")
        name, tmpl, src = card["name"], card.get("chat_template"), cards.card_weights_path(card)
    import_gguf(src, args.output, name, tmpl)
    print(f"wrote {args.output}")
    return 0
