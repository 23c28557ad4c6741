"""Real English text available on every machine, without a network.

Source: the reference documentation that ships inside CPython itself
(``pydoc_data.topics``, PSF license): ~80 topics, ~465k characters of English
technical prose. Topics are split deterministically into disjoint parts so
that calibration, training and evaluation text never overlap:

    eval  : every topic whose index % 8 == 0   (~12%)
    calib : every topic whose index % 8 == 1   (~12%)
    train : the rest                           (~75%)

Usage: ``english_text("eval")`` or ``python -m nano_runtime.data eval > eval.txt``.
"""
from __future__ import annotations

import sys

SPLITS = ("eval", "calib", "train", "all")


def _topics():
    import pydoc_data.topics as t
    return [t.topics[k].strip() for k in sorted(t.topics)]


def english_text(split: str = "eval") -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    topics = _topics()
    pick = {
        "eval": lambda i: i % 8 == 0,
        "calib": lambda i: i % 8 == 1,
        "train": lambda i: i % 8 >= 2,
        "all": lambda i: True,
    }[split]
    return "\n\n".join(t for i, t in enumerate(topics) if pick(i)) + "\n"


def write_text(split: str, path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(english_text(split))
    return path


if __name__ == "__main__":
    sys.stdout.write(english_text(sys.argv[1] if len(sys.argv) > 1 else "eval"))
