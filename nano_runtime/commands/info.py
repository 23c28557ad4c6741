"""nano info MODEL [--json]: config, parameter count, file size, quantization scheme."""
import os

from ._common import print_json

NAME = "info"
HELP = "show a model's config, parameter count, file size and quantization"
ORDER = 10


def add_arguments(p):
    p.add_argument("model", help="a .gguf, .nano, checkpoint directory or model-card name")
    p.add_argument("--json", action="store_true")


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path) if os.path.isfile(path) else 0


def run(args):
    from ..loader import load_model
    spec = args.model
    quant = "fp32 (reference checkpoint)"
    if os.path.isfile(spec) and spec.endswith(".gguf"):
        from ..formats.gguf_import import open_gguf
        from collections import Counter
        g = open_gguf(spec)
        c = Counter(t.tensor_type.name for t in g.reader.tensors)
        quant = "GGUF " + ", ".join(f"{k} x{v}" for k, v in c.most_common())
    lm = load_model(spec, with_model=False)
    if lm.kind == "nano":
        quant = lm.config.extra.get("quant", "nano packed")
    elif lm.kind == "card-config":
        quant = "random init (no weights file)"
    cfg = lm.config
    file = spec if os.path.exists(spec) else lm.source
    if lm.kind == "card-config":
        file = None
    elif not os.path.exists(spec):
        from .. import cards
        card = cards.get_card(spec)
        file = cards.card_weights_path(card) if "source" in card else file
    info = {
        "name": cfg.name, "family": cfg.family, "params": cfg.num_params(),
        "params_non_embedding": cfg.num_params(include_embeddings=False),
        "file": file if isinstance(file, str) else None,
        "file_size_bytes": _size(file) if isinstance(file, str) else 0,
        "quant": quant, "config": cfg.to_dict(),
        "vocab_size_tokenizer": lm.tokenizer.vocab_size if lm.tokenizer else None,
    }
    if args.json:
        print_json(info)
        return 0
    print(f"model:       {cfg.name} ({cfg.family})")
    print(f"parameters:  {info['params']:,} ({info['params'] / 1e9:.3f}B; "
          f"{info['params_non_embedding']:,} non-embedding)")
    print(f"layers:      {cfg.n_layers}, dim {cfg.dim}, heads {cfg.n_heads}/{cfg.n_kv_heads} "
          f"(head_dim {cfg.head_dim}), mlp {cfg.hidden_dim}, vocab {cfg.vocab_size}")
    if cfg.sliding_window:
        print(f"attention:   sliding window {cfg.sliding_window} on local layers, 1 global layer "
              f"in {cfg.sliding_window_pattern}")
    if info["file"]:
        print(f"file:        {info['file']} ({info['file_size_bytes'] / 2**20:.1f} MiB)")
    print(f"quant:       {quant}")
    return 0
