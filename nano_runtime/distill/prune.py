"""Prune a teacher into a smaller student: depth (layers) and width (channels).

Follows Minitron (Muralidharan et al. 2024, "Compact Language Models via
Pruning and Knowledge Distillation") for width and ShortGPT / Gromov et al.
for depth. Everything is ranked on calibration text with the teacher itself:

* depth, ``bi``: block influence of layer i = 1 - cos(x_in, x_out) averaged
  over tokens (ShortGPT); the layers that change the residual stream least go.
* depth, ``angular``: the contiguous block of n layers whose input and output
  hidden states have the smallest angular distance arccos(cos)/pi (Gromov et al.).
* MLP channels: mean |act(x W_gate) * (x W_up)| per channel.
* attention heads: mean L2 norm of each head's output (the input of wo); heads
  are dropped inside every KV group alike, whole KV groups by their heads' sum.
* embedding channels: mean |RMSNorm output| per channel over every norm.

The spec string is ``prune:key=value,...`` with keys ``layers`` (kept layers),
``hidden`` (MLP width), ``heads``, ``kv_heads``, ``dim`` and ``depth``
(``bi`` | ``angular``), e.g. ``prune:layers=24,hidden=768``. The result is an
ordinary ModelConfig plus a state dict with the teacher's weights sliced, so
the student is a plain checkpoint for every other tool.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import NanoError

DEPTH_METHODS = ("bi", "angular")


@dataclass
class PruneSpec:
    layers: Optional[int] = None
    hidden: Optional[int] = None
    heads: Optional[int] = None
    kv_heads: Optional[int] = None
    dim: Optional[int] = None
    depth: str = "bi"

    @classmethod
    def parse(cls, text: str) -> "PruneSpec":
        body = text[len("prune:"):] if text.startswith("prune:") else text
        spec = cls()
        ints = {"layers", "hidden", "heads", "kv_heads", "dim"}
        for part in filter(None, (p.strip() for p in body.split(","))):
            if "=" not in part:
                raise NanoError(f"prune spec: {part!r} is not key=value (keys: "
                                f"{', '.join(sorted(ints | {'depth'}))})")
            k, v = (s.strip() for s in part.split("=", 1))
            if k in ints:
                try:
                    n = int(v)
                except ValueError:
                    raise NanoError(f"prune spec: {k} must be an integer, got {v!r}") from None
                if n <= 0:
                    raise NanoError(f"prune spec: {k} must be positive, got {n}")
                setattr(spec, k, n)
            elif k == "depth":
                if v not in DEPTH_METHODS:
                    raise NanoError(f"prune spec: depth must be one of {DEPTH_METHODS}, got {v!r}")
                spec.depth = v
            else:
                raise NanoError(f"prune spec: unknown key {k!r} (keys: "
                                f"{', '.join(sorted(ints | {'depth'}))})")
        return spec

    def check(self, cfg: ModelConfig):
        def over(name, v, limit):
            if v is not None and v > limit:
                raise NanoError(f"prune spec: {name}={v} exceeds the teacher's {limit}")
        over("layers", self.layers, cfg.n_layers)
        over("hidden", self.hidden, cfg.hidden_dim)
        over("heads", self.heads, cfg.n_heads)
        over("kv_heads", self.kv_heads, cfg.n_kv_heads)
        over("dim", self.dim, cfg.dim)
        kv = self.kv_heads or cfg.n_kv_heads
        heads = self.heads or (cfg.n_heads // cfg.n_kv_heads) * kv
        if heads % kv:
            raise NanoError(f"prune spec: heads={heads} must be a multiple of kv_heads={kv}")
        if heads // kv > cfg.n_heads // cfg.n_kv_heads:
            raise NanoError(f"prune spec: {heads // kv} heads per KV group exceeds the "
                            f"teacher's {cfg.n_heads // cfg.n_kv_heads}")
        if self.layers and self.layers < cfg.n_layers and cfg.sliding_window:
            raise NanoError("prune spec: depth pruning a sliding-window (Gemma 3) model would "
                            "shift its local/global layer pattern; prune width only")


# ------------------------------------------------------------------ calibration
@dataclass
class Importance:
    """Per-structure scores from calibration (higher = more important)."""
    block_influence: torch.Tensor     # [L]
    angular: torch.Tensor             # [L+1, L+1] angular distance between hidden states i, j
    mlp: torch.Tensor                 # [L, hidden]
    heads: torch.Tensor               # [L, n_heads]
    channels: torch.Tensor            # [dim]


@torch.no_grad()
def compute_importance(model, batches) -> Importance:
    """Run `model` over `batches` (list of [B, T] token tensors) and score its parts."""
    cfg = model.cfg
    L = cfg.n_layers
    mlp = torch.zeros(L, cfg.hidden_dim, dtype=torch.float64)
    heads = torch.zeros(L, cfg.n_heads, dtype=torch.float64)
    chans = torch.zeros(cfg.dim, dtype=torch.float64)
    cos_sum = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    ntok = 0
    hooks = []

    def mlp_hook(i):
        def fn(mod, inp):
            a = inp[0].float().abs().reshape(-1, inp[0].shape[-1])
            mlp[i] += a.sum(0).double()
        return fn

    def head_hook(i):
        def fn(mod, inp):
            x = inp[0].float().reshape(-1, cfg.n_heads, cfg.head_dim)
            heads[i] += x.norm(dim=-1).sum(0).double()
        return fn

    def norm_hook(mod, inp, out):
        chans.add_(out.float().abs().reshape(-1, out.shape[-1]).sum(0).double())

    for i, blk in enumerate(model.layers):
        hooks.append(blk.mlp.w_down.register_forward_pre_hook(mlp_hook(i)))
        hooks.append(blk.attn.wo.register_forward_pre_hook(head_hook(i)))
        hooks.append(blk.attn_norm.register_forward_hook(norm_hook))
        hooks.append(blk.mlp_norm.register_forward_hook(norm_hook))
    hooks.append(model.norm.register_forward_hook(norm_hook))
    try:
        was_training = model.training
        model.eval()
        for tokens in batches:
            x0 = model.embed(tokens) * (model.embed_scale if model.embed_scale != 1.0 else 1.0)
            _, hidden = model(tokens, output_hidden_states=True)
            hs = [x0.float()] + [h.float() for h in hidden]                    # L+1 x [B,T,D]
            flat = torch.stack([F.normalize(h.reshape(-1, h.shape[-1]), dim=-1) for h in hs])
            # cos between every pair of hidden states, summed over tokens: [L+1, L+1]
            cos_sum += torch.einsum("itd,jtd->ij", flat, flat).double()
            ntok += flat.shape[1]
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    cos = (cos_sum / ntok).clamp(-1, 1)
    bi = 1.0 - torch.diagonal(cos, offset=1)                                   # [L]
    return Importance(block_influence=bi.float(), angular=(torch.arccos(cos) / torch.pi).float(),
                      mlp=(mlp / ntok).float(), heads=(heads / ntok).float(),
                      channels=(chans / ntok).float())


# ------------------------------------------------------------------ selection
def select_layers(imp: Importance, n_keep: int, method: str) -> list:
    """Indices of the layers to keep, in order."""
    L = imp.block_influence.numel()
    if n_keep >= L:
        return list(range(L))
    if method == "bi":
        keep = torch.topk(imp.block_influence, n_keep).indices
        return sorted(int(i) for i in keep)
    n_drop = L - n_keep
    # contiguous block [s, s+n_drop) whose in/out states are closest; never the last layer
    best = min(range(0, L - n_drop), key=lambda s: float(imp.angular[s, s + n_drop]))
    return [i for i in range(L) if not (best <= i < best + n_drop)]


def _topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


def select_heads(imp_heads: torch.Tensor, cfg: ModelConfig, heads: int, kv: int):
    """(kv groups kept [kv], heads kept [heads]) for one layer; heads stay grouped."""
    per = cfg.n_heads // cfg.n_kv_heads
    new_per = heads // kv
    grouped = imp_heads.view(cfg.n_kv_heads, per)
    groups = _topk_sorted(grouped.sum(1), kv)
    keep = []
    for g in groups.tolist():
        within = _topk_sorted(grouped[g], new_per)
        keep += [g * per + int(h) for h in within]
    return groups, torch.tensor(keep)


def pruned_config(cfg: ModelConfig, spec: PruneSpec, name: str = "pruned") -> ModelConfig:
    kv = spec.kv_heads or cfg.n_kv_heads
    heads = spec.heads or (cfg.n_heads // cfg.n_kv_heads) * kv
    d = dataclasses.asdict(cfg)
    d.update(name=name, n_layers=spec.layers or cfg.n_layers, hidden_dim=spec.hidden or cfg.hidden_dim,
             n_heads=heads, n_kv_heads=kv, dim=spec.dim or cfg.dim, head_dim=cfg.head_dim,
             query_pre_attn_scalar=cfg.query_pre_attn_scalar,
             extra=dict(cfg.extra, pruned_from=cfg.name))
    return ModelConfig.from_dict(d)


def prune_state(model, imp: Importance, spec: PruneSpec, name: str = "pruned"):
    """(config, state dict, kept layer indices) of the student cut from `model`."""
    cfg = model.cfg
    spec.check(cfg)
    new = pruned_config(cfg, spec, name)
    layers = select_layers(imp, new.n_layers, spec.depth)
    sd = model.state_dict()
    ch = _topk_sorted(imp.channels, new.dim) if new.dim < cfg.dim else None
    hd = cfg.head_dim

    def cols(w):   # input channels of a [out, dim] weight
        return w[:, ch] if ch is not None else w

    def rows(w):   # output channels of a [dim, in] weight
        return w[ch] if ch is not None else w

    out = {"embed.weight": cols(sd["embed.weight"]).clone(), "norm.weight": rows(sd["norm.weight"]).clone()}
    if not cfg.tie_embeddings:
        out["output.weight"] = cols(sd["output.weight"]).clone()
    for j, i in enumerate(layers):
        p, q = f"layers.{i}.", f"layers.{j}."
        groups, hkeep = select_heads(imp.heads[i], cfg, new.n_heads, new.n_kv_heads)
        qrows = (hkeep[:, None] * hd + torch.arange(hd)[None]).reshape(-1)
        kvrows = (groups[:, None] * hd + torch.arange(hd)[None]).reshape(-1)
        hid = _topk_sorted(imp.mlp[i], new.hidden_dim)
        a = p + "attn."
        out[q + "attn.wq.weight"] = cols(sd[a + "wq.weight"][qrows])
        out[q + "attn.wk.weight"] = cols(sd[a + "wk.weight"][kvrows])
        out[q + "attn.wv.weight"] = cols(sd[a + "wv.weight"][kvrows])
        out[q + "attn.wo.weight"] = rows(sd[a + "wo.weight"][:, qrows])
        out[q + "mlp.w_gate.weight"] = cols(sd[p + "mlp.w_gate.weight"][hid])
        out[q + "mlp.w_up.weight"] = cols(sd[p + "mlp.w_up.weight"][hid])
        out[q + "mlp.w_down.weight"] = rows(sd[p + "mlp.w_down.weight"][:, hid])
        for n in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm"):
            if p + n + ".weight" in sd:
                out[q + n + ".weight"] = rows(sd[p + n + ".weight"])
        for n in ("attn.q_norm", "attn.k_norm"):
            if p + n + ".weight" in sd:
                out[q + n + ".weight"] = sd[p + n + ".weight"]
    out = {k: v.detach().clone().contiguous() for k, v in out.items()}
    return new, out, layers


def calibration_batches(tokenizer, text: str, seq_len: int = 256, n_seqs: int = 16,
                        batch: int = 4) -> list:
    """Up to n_seqs windows of seq_len tokens (BOS first when the tokenizer adds one)."""
    ids = tokenizer.encode(text, add_bos=False)
    bos = [tokenizer.bos_id] if (tokenizer.add_bos and tokenizer.bos_id is not None) else []
    step = seq_len - len(bos)
    wins = [bos + ids[s:s + step] for s in range(0, len(ids) - step + 1, step)][:n_seqs]
    if not wins:
        raise NanoError(f"calibration text is too short for one window of {seq_len} tokens")
    return [torch.tensor(wins[i:i + batch]) for i in range(0, len(wins), batch)]


def prune_model(teacher, tokenizer, spec, calib_text: str, seq_len: int = 256,
                n_seqs: int = 16, name: str = "pruned"):
    """Prune a loaded teacher by `spec` (PruneSpec or 'prune:...'): (cfg, state, kept_layers)."""
    if isinstance(spec, str):
        spec = PruneSpec.parse(spec)
    spec.check(teacher.cfg)
    imp = compute_importance(teacher, calibration_batches(tokenizer, calib_text, seq_len, n_seqs))
    return prune_state(teacher, imp, spec, name)


def pad_hidden(cfg: ModelConfig, state: dict, multiple: int = 32):
    """(cfg, state) with the MLP width rounded up to `multiple` by zero channels.

    int4 groups need K % 32 == 0 (w_down's input is the MLP width). A zero row in
    w_gate and w_up gives act(0) * 0 = 0 and a zero column in w_down adds nothing,
    so the padded model computes exactly the same function.
    """
    h = cfg.hidden_dim
    new_h = -(-h // multiple) * multiple
    if new_h == h:
        return cfg, state
    pad = new_h - h
    out = dict(state)
    for i in range(cfg.n_layers):
        p = f"layers.{i}.mlp."
        for n in ("w_gate", "w_up"):
            w = state[p + n + ".weight"]
            out[p + n + ".weight"] = torch.cat([w, w.new_zeros(pad, w.shape[1])], 0)
        w = state[p + "w_down.weight"]
        out[p + "w_down.weight"] = torch.cat([w, w.new_zeros(w.shape[0], pad)], 1)
    d = dataclasses.asdict(cfg)
    d.update(hidden_dim=new_h, extra=dict(cfg.extra, hidden_padded_from=h))
    return ModelConfig.from_dict(d), out
