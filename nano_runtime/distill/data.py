"""Training data for distillation: tokenize, pack, shuffle, split; cached teacher top-k.

Text is tokenized once with the teacher's tokenizer (the student shares it) and
packed into fixed-length sequences laid out exactly like the perplexity windows
of nano_runtime/evaluate.py: BOS (when the tokenizer adds one) followed by
seq_len - 1 text tokens. A seeded permutation picks the held-out sequences, so
the split is reproducible and the two parts never share a sequence.

The top-k teacher cache stores, for every training sequence and every input
position, the teacher's k largest log-probabilities (at the cache's
temperature) and their token ids, in one safetensors file:

    ids   int32   [N, seq_len - 1, k]
    logp  float16 [N, seq_len - 1, k]
    metadata: k, temperature, seq_len, n, data_sha256 (of the packed tokens)

so a run that repeats its data for several epochs pays for the teacher once.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch

from ..errors import NanoError
from ..progress import progress_bar
from .losses import TopK


@dataclass
class PackedData:
    train: torch.Tensor          # [N, seq_len] int64
    held: torch.Tensor           # [M, seq_len] int64

    @property
    def seq_len(self) -> int:
        return self.train.shape[1]


def pack(ids: list, seq_len: int, bos_id=None) -> torch.Tensor:
    """[N, seq_len] sequences of BOS + (seq_len - 1) tokens, the tail dropped."""
    if seq_len < 2:
        raise NanoError(f"sequence length must be >= 2, got {seq_len}")
    head = [bos_id] if bos_id is not None else []
    step = seq_len - len(head)
    n = len(ids) // step
    if n == 0:
        raise NanoError(f"the text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    body = torch.tensor(ids[:n * step], dtype=torch.int64).view(n, step)
    if head:
        body = torch.cat([torch.full((n, 1), bos_id, dtype=torch.int64), body], dim=1)
    return body


def read_text_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise NanoError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise NanoError(f"{path}: not valid UTF-8 text") from None
    if not text.strip():
        raise NanoError(f"{path}: the text file is empty")
    return text


def tokenize_text(tokenizer, text: str) -> list:
    return tokenizer.encode(text, add_bos=False)


def bos_of(tokenizer):
    return tokenizer.bos_id if (tokenizer.add_bos and tokenizer.bos_id is not None) else None


def prepare(tokenizer, text: str, seq_len: int, held_frac: float = 0.1, seed: int = 0,
            held_text: str = None) -> PackedData:
    """Pack `text`; the held-out part is `held_text` when given, else a seeded held_frac."""
    seqs = pack(tokenize_text(tokenizer, text), seq_len, bos_of(tokenizer))
    if held_text is not None:
        return PackedData(seqs, pack(tokenize_text(tokenizer, held_text), seq_len, bos_of(tokenizer)))
    if not (0.0 <= held_frac < 1.0):
        raise NanoError(f"held-out fraction must be in [0, 1), got {held_frac}")
    perm = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed))
    m = max(1, int(round(len(seqs) * held_frac))) if held_frac > 0 else 0
    if len(seqs) - m < 1:
        raise NanoError(f"only {len(seqs)} sequences of {seq_len} tokens: too few to hold "
                        "some out; give more text or a shorter --seq-len")
    held, train = perm[:m].sort().values, perm[m:].sort().values
    return PackedData(seqs[train], seqs[held])


def epoch_order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The seeded shuffle of epoch `epoch` (a pure function: resume needs no state)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def sample_ids(start: int, count: int, n: int, seed: int) -> torch.Tensor:
    """Dataset indices of global samples start .. start + count - 1 (epochs reshuffled)."""
    out, g = [], start
    while len(out) < count:
        e, i = divmod(g, n)
        order = epoch_order(n, e, seed)
        take = min(count - len(out), n - i)
        out.append(order[i:i + take])
        g += take
    return torch.cat(out)


def data_sha256(seqs: torch.Tensor) -> str:
    return hashlib.sha256(seqs.to(torch.int64).numpy().tobytes()).hexdigest()


# --------------------------------------------------------------- teacher cache
@torch.no_grad()
def build_topk_cache(teacher, seqs: torch.Tensor, path: str, k: int = 64,
                     temperature: float = 1.0, batch: int = 4, show_progress: bool = True) -> str:
    """Run the teacher once over seqs [N, L] and write its top-k to `path` (atomically)."""
    from safetensors.torch import save_file
    n, L = seqs.shape
    ids = torch.empty(n, L - 1, k, dtype=torch.int32)
    logp = torch.empty(n, L - 1, k, dtype=torch.float16)
    teacher.eval()
    with progress_bar(total=n * (L - 1), desc="teacher top-k", unit="tok",
                      disable=not show_progress) as bar:
        for s in range(0, n, batch):
            x = seqs[s:s + batch, :-1]
            tk = TopK.from_logits(teacher(x), k, temperature)
            ids[s:s + batch] = tk.ids.to(torch.int32)
            logp[s:s + batch] = tk.logp.to(torch.float16)
            bar.update(x.numel())
    meta = {"k": str(k), "temperature": repr(float(temperature)), "seq_len": str(L),
            "n": str(n), "data_sha256": data_sha256(seqs)}
    tmp = path + ".tmp"
    save_file({"ids": ids, "logp": logp}, tmp, metadata=meta)
    os.replace(tmp, path)
    return path


class TopKCache:
    """A top-k cache file opened for a given packed training set."""

    def __init__(self, path: str, seqs: torch.Tensor, temperature: float):
        from safetensors import safe_open
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                self.ids = f.get_tensor("ids")
                self.logp = f.get_tensor("logp")
        except FileNotFoundError:
            raise NanoError(f"{path}: no such teacher cache") from None
        except Exception as e:
            raise NanoError(f"{path}: not a readable teacher cache ({e})") from None
        if meta.get("data_sha256") != data_sha256(seqs):
            raise NanoError(f"{path}: the teacher cache was built for other data "
                            f"(seq_len {meta.get('seq_len')}, {meta.get('n')} sequences); rebuild it")
        t = float(meta.get("temperature", "nan"))
        if abs(t - temperature) > 1e-6:
            raise NanoError(f"{path}: cached at temperature {t}, the run uses {temperature}; "
                            "rebuild the cache or match --temperature")
        self.k = int(meta["k"])
        self.temperature = t

    def get(self, idx: torch.Tensor) -> TopK:
        return TopK(ids=self.ids[idx].long(), logp=self.logp[idx].float())


def describe(data: PackedData) -> str:
    return json.dumps({"train_sequences": len(data.train), "held_sequences": len(data.held),
                       "seq_len": data.seq_len,
                       "train_tokens": int(data.train.numel())})
