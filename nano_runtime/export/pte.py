"""ExecuTorch export: the reference model as a ``.pte`` for ExecuTorch's LLM runner.

Pipeline (small chained steps, as ExecuTorch's own ``extension/llm/export``):

    reference Transformer  --PteDecoder-->  forward(tokens [1, T], input_pos [1]) -> logits [1, 1, V]
      --quantize_pte_model-->  torchao: 8da4w (int8 dynamic activations, int4 weights,
                               group 32) on every block linear, 8da8w (per-channel) on the
                               head, int8 per-channel weight-only on the embedding
      --torch.export (T dynamic, 1..max_seq_len-1)-->
      --exact_gelu_decomposition-->  gelu(approximate="tanh") spelled out as mul/add/tanh
                               (XNNPACK's GELU is the erf form whatever `approximate` says)
      --to_edge_transform_and_lower(XNNPACK, constant methods from export_metadata)-->
      --to_executorch (memory planning, quant fusion)-->  model.pte (temp file + rename)

The static KV cache is the reference model's own (gpt-fast style registered
buffers written at the positions; they become mutable buffers of the
program), so the exported program computes exactly the reference's attention
with the quantized linears. ``forward`` returns the logits of the last
position only, the contract of the runner (the first new token comes from
prefill), which keeps prefill from paying for a [T, V] head.

The quantized eager PteDecoder is "the reference running the same
quantization" that the artifact is verified against (tests/test_export.py,
benchmarks/bench_export.py).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from ..errors import NanoError
from .metadata import ExportOptions, export_metadata

PTE_NAME = "model.pte"


class PteDecoder(nn.Module):
    """The reference blocks behind the LLM runner's forward(tokens, input_pos) contract.

    The head is its own nn.Linear (a copy of the tied embedding when tied) so that the
    embedding and the head can be quantized differently.
    """

    def __init__(self, ref: nn.Module, max_seq_len: int):
        super().__init__()
        cfg = ref.cfg
        self.cfg = cfg
        ref.setup_cache(1, max_seq_len, dtype=torch.float32)
        self.embed = ref.embed
        self.layers = ref.layers
        self.norm = ref.norm
        self.embed_scale = ref.embed_scale
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        with torch.no_grad():
            self.head.weight = nn.Parameter(ref.head_weight().detach().clone())
        self.max_seq_len = max_seq_len

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [1, T] int64, input_pos [1] int64 (position of tokens[0, 0]) -> [1, 1, V]."""
        T = tokens.shape[1]
        if isinstance(self.layers[0].attn, CustomSdpaAttention):
            pos = StepContext.build(self, input_pos, T)                 # shared by every layer
        else:
            pos = input_pos + torch.arange(T, dtype=torch.long)        # [T]
        x = self.embed(tokens)                                          # [1, T, D]
        if self.embed_scale != 1.0:
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        for blk in self.layers:
            x = blk(x, pos)
        x = self.norm(x[:, -1:, :])                                     # [1, 1, D]
        return self.head(x)                                             # [1, 1, V]

    def rope_tables(self) -> dict:
        """{theta: (cos [S, hd], sin [S, hd])} registered by use_custom_sdpa."""
        return {t: (getattr(self, f"rope_cos_{i}"), getattr(self, f"rope_sin_{i}"))
                for i, t in enumerate(self.rope_keys)}

    @torch.no_grad()
    def all_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [1, T] from position 0 -> logits [1, T, V] (eager only; for perplexity)."""
        pos = torch.arange(tokens.shape[1], dtype=torch.long)
        if isinstance(self.layers[0].attn, CustomSdpaAttention):
            pos = StepContext.build(self, pos[:1], tokens.shape[1])
        x = self.embed(tokens)
        if self.embed_scale != 1.0:
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        for blk in self.layers:
            x = blk(x, pos)
        return self.head(self.norm(x))

    def reset_cache(self):
        for blk in self.layers:
            if hasattr(blk.attn, "k_cache"):
                blk.attn.k_cache.zero_()
                blk.attn.v_cache.zero_()
            else:
                blk.attn.kv_cache.k.zero_()
                blk.attn.kv_cache.v.zero_()


class XnnRMSNorm(nn.Module):
    """model.RMSNorm in the ops XNNPACK's partitioner takes (export only).

    XNNPACK lowers mean only over the two innermost dims of a 4-D tensor (global
    average pooling) and reshapes only with static sizes and one -1, so x [1, T, *tail]
    is viewed as [1, N, 1, d]; x*x instead of pow(x, 2); the weight is stored as the
    multiplier itself (1 + w for Gemma, computed in fp32 as the reference does). Same
    formula as model.RMSNorm: x * rsqrt(mean(x^2) + eps) * w.

    The mean is taken in two levels, over groups of g ~ sqrt(d) and then over the d/g
    group means: XNNPACK's pooling sums the d squares one after another (relative error
    up to 1.1e-6 against PyTorch's at d=640), two short sums land within 3e-7 and give
    the eager value bit for bit on ~60% of outputs (a 64x640 probe, commit 42ced4d).
    8da4w's int8 activation rounding turns such differences into top-1 flips.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.eps = float(norm.eps)
        w = norm.weight.detach().float()
        self.weight = nn.Parameter(1.0 + w if norm.unit_offset else w.clone(),
                                   requires_grad=False)
        d = w.numel()
        self.group = max(g for g in range(1, int(math.isqrt(d)) + 1) if d % g == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tail = tuple(int(d) for d in x.shape[2:])                       # static sizes
        d, g = tail[-1], self.group
        x4 = x.reshape(1, -1, 1, d)                                     # [1, N, 1, d]
        sq = (x4 * x4).reshape(1, -1, 1, g)                             # [1, N*d/g, 1, g]
        ms = sq.mean(dim=(2, 3), keepdim=True).reshape(1, -1, 1, d // g)
        ms = ms.mean(dim=(2, 3), keepdim=True)                          # [1, N, 1, 1]
        y = x4 * torch.rsqrt(ms + self.eps) * self.weight
        return y.reshape(1, -1, *tail)


class StepContext:
    """What every layer of one forward call shares, computed once per call.

    start: SymInt position of tokens[0, 0] (one .item() per call, not one per layer);
    rope[theta]: (cos, sin) [1, T, 1, hd] sliced from tables precomputed for every
    position (the same fp32 values model.rope_tables gives); rot: the constant
    [hd, hd] matrix with x @ rot.T == rotate_half(x); masks[window]: the additive
    [T, S] sliding-window mask of Gemma 3's local layers.
    """

    def __init__(self, start, T, rope, rot, masks):
        self.start, self.T, self.rope, self.rot, self.masks = start, T, rope, rot, masks

    @staticmethod
    def build(dec: "PteDecoder", input_pos: torch.Tensor, T) -> "StepContext":
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start < dec.max_seq_len)
        torch._check(start + T <= dec.max_seq_len)
        rope = {}
        for key, (cos, sin) in dec.rope_tables().items():
            hd = cos.shape[-1]
            rope[key] = (cos.narrow(0, start, T).reshape(1, -1, 1, hd),
                         sin.narrow(0, start, T).reshape(1, -1, 1, hd))
        masks = {}
        for w in dec.windows:
            pos = input_pos + torch.arange(T, dtype=torch.long)        # [T]
            kpos = torch.arange(dec.max_seq_len, dtype=torch.long)    # [S]
            allowed = (kpos[None, :] <= pos[:, None]) & (pos[:, None] - kpos[None, :] < w)
            masks[w] = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                allowed.logical_not(), float("-inf"))
        return StepContext(start, T, rope, dec.rope_rot, masks)


def rotate_half_matrix(hd: int) -> torch.Tensor:
    """R [hd, hd] with F.linear(x, R) == cat([-x[hd/2:], x[:hd/2]]): a signed permutation,
    so the product is exact in fp32 and runs in XNNPACK (a slice of a dynamic-shape
    tensor does not)."""
    half = hd // 2
    r = torch.zeros(hd, hd)
    idx = torch.arange(half)
    r[idx, idx + half] = -1.0
    r[idx + half, idx] = 1.0
    return r


class CustomSdpaAttention(nn.Module):
    """The reference Attention rewritten on ExecuTorch's LLM custom ops (export only).

    Same projections (the module's own, quantized, linears), QK-norm and RoPE as
    model.Attention, but in the [B, T, H, hd] layout of ExecuTorch's custom ops:

    * ``llama::update_cache(k, k_cache, start_pos)`` writes the T new rows of the
      static cache [1, S, Hkv, hd] in place (no index_put + copy_ of the whole buffer);
    * ``llama::custom_sdpa(q, k_cache, v_cache, start_pos, is_causal=True, scale)``
      attends query t to cache positions <= start_pos + t only, and handles GQA
      itself (no repeat of the full cache).

    Sliding-window (Gemma 3 local) layers pass an additive float mask [T, S]
    instead (custom_sdpa then ignores start_pos and is_causal).

    Everything between the linears stays inside the XNNPACK delegate: reshapes use
    static sizes and one -1, RoPE is x*cos + (x @ rot.T)*sin with tables from the
    StepContext (no per-layer table, slice or cat).
    """

    def __init__(self, attn: nn.Module, max_seq_len: int):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = attn.n_heads, attn.n_kv, attn.hd
        self.window, self.theta, self.scale = attn.window, attn.theta, attn.scale
        self.qk_norm = bool(attn.cfg.qk_norm)
        self.wq, self.wk, self.wv, self.wo = attn.wq, attn.wk, attn.wv, attn.wo
        if self.qk_norm:
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.max_seq_len = max_seq_len
        shape = (1, max_seq_len, self.n_kv, self.hd)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    @staticmethod
    def _rope(x, cos, sin, rot):
        """model.apply_rope for x [1, T, H, hd] (cos/sin [1, T, 1, hd])."""
        return x * cos + torch.nn.functional.linear(x, rot) * sin

    def forward(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.parts(x, ctx)["o"]

    def parts(self, x: torch.Tensor, ctx: StepContext) -> dict:
        """forward's intermediates by name (the per-op probe, benchmarks/pte_gemma_sdpa.py,
        exports this very code): q, k, v [1, T, H(kv), hd] from the linears; qn, kn after
        QK-norm; qr, kr after RoPE; y [1, T, H*hd] from custom_sdpa; o from wo."""
        H, Hkv, hd = self.n_heads, self.n_kv, self.hd
        r = {"q": self.wq(x).reshape(1, -1, H, hd),
             "k": self.wk(x).reshape(1, -1, Hkv, hd),
             "v": self.wv(x).reshape(1, -1, Hkv, hd)}
        q, k = r["q"], r["k"]
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        r["qn"], r["kn"] = q, k
        cos, sin = ctx.rope[self.theta]
        q, k = self._rope(q, cos, sin, ctx.rot), self._rope(k, cos, sin, ctx.rot)
        r["qr"], r["kr"] = q, k
        start = ctx.start
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(r["v"], self.v_cache, start)
        if self.window:
            y = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start,
                                            ctx.masks[self.window], 0.0, False, self.scale)
        else:
            y = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0,
                                            True, self.scale)
        r["y"] = y.reshape(1, -1, H * hd)
        r["o"] = self.wo(r["y"])
        return r


def use_custom_sdpa(model: PteDecoder) -> PteDecoder:
    """In place: every layer's attention on ExecuTorch's custom_sdpa + update_cache, every
    RMSNorm as XnnRMSNorm, RoPE tables precomputed for all positions.

    Applied after quantization (the quantized linears are shared, not copied); the
    reference attention and its KV cache are dropped from the module.
    """
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  registers llama::*
    from ..model import RMSNorm, rope_tables
    for blk in model.layers:
        if not isinstance(blk.attn, CustomSdpaAttention):
            blk.attn = CustomSdpaAttention(blk.attn, model.max_seq_len)
    for mod in list(model.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, RMSNorm):
                setattr(mod, name, XnnRMSNorm(child))
    attns = [blk.attn for blk in model.layers]
    hd = attns[0].hd
    allpos = torch.arange(model.max_seq_len, dtype=torch.long)
    model.rope_keys = sorted({a.theta for a in attns})
    for i, theta in enumerate(model.rope_keys):
        cos, sin = rope_tables(hd, theta, allpos)                       # [S, hd] each
        model.register_buffer(f"rope_cos_{i}", cos.contiguous(), persistent=False)
        model.register_buffer(f"rope_sin_{i}", sin.contiguous(), persistent=False)
    model.register_buffer("rope_rot", rotate_half_matrix(hd), persistent=False)
    model.windows = sorted({a.window for a in attns if a.window})
    return model


def quantize_pte_model(model: PteDecoder, group_size: int):
    """In place: the torchao recipe named in metadata.PTE_SCHEME."""
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import (Int8DynamicActivationIntxWeightConfig,
                                                IntxWeightOnlyConfig, quantize_)
    algo = "affine"   # min/max RTN: seconds even for a 262k-row embedding (HQQ takes minutes)
    quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0),
                                          intx_choose_qparams_algorithm=algo),
              filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    quantize_(model, Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8, weight_granularity=PerAxis(0),
        intx_choose_qparams_algorithm=algo),
        filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn == "head")
    quantize_(model, Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(group_size),
        intx_choose_qparams_algorithm=algo),
        filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn != "head")
    return model


def build_quantized_decoder(ref: nn.Module, opts: ExportOptions) -> PteDecoder:
    """The eager model that gets exported (also the same-quantization reference).

    Works on a copy: `ref` keeps its float weights and no cache.
    """
    import copy
    m = PteDecoder(copy.deepcopy(ref), opts.max_seq_len).eval()
    with torch.no_grad():
        quantize_pte_model(m, opts.group_size)
        round_group_scales_bf16(m)
    return m


def weight_only_twin(qmodel: PteDecoder) -> PteDecoder:
    """A copy of the quantized decoder with every quantized weight dequantized to fp32.

    Same weights as the .pte (int4 groups with bf16 scales, int8 embedding and head),
    activations left in fp32: the weight-only reference, as the ONNX check uses one
    (the artifact's int8 activation quantization is what then differs).
    """
    import copy
    twin = copy.deepcopy(qmodel)
    for mod in twin.modules():
        w = getattr(mod, "weight", None)
        if w is not None and hasattr(w, "dequantize") and type(w) is not nn.Parameter \
                and hasattr(w, "qdata"):
            mod.weight = nn.Parameter(w.dequantize().float(), requires_grad=False)
    return twin


def round_group_scales_bf16(model: nn.Module) -> int:
    """Round every groupwise (per-channel-group) weight scale to bfloat16, in place.

    ExecuTorch's XNNPACK delegate stores blockwise 4-bit scales as bf16 (its
    node_visitor casts per_channel_group scales to torch.bfloat16), so the
    program's weights are the torchao weights with bf16-rounded scales. Doing
    the same here makes the eager model "the same quantization" as the .pte; the
    exported program is unchanged (bf16 rounding is idempotent). Returns the
    number of tensors rounded.
    """
    n = 0
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        bs = getattr(w, "block_size", None)
        sc = getattr(w, "scale", None)
        if bs is None or sc is None or len(bs) != 2 or bs[0] != 1 or bs[1] >= w.shape[-1]:
            continue            # per-channel (head) and per-row (embedding) scales stay fp32
        sc.copy_(sc.to(torch.bfloat16).to(sc.dtype))
        n += 1
    return n


def _gelu_tanh_decomposition(x, approximate="none"):
    """aten.gelu(x, approximate="tanh") as primitive ops, PyTorch's CPU kernel formula:
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The erf form is left to XNNPACK."""
    if approximate != "tanh":
        return NotImplemented
    beta = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
    inner = beta * (x + 0.044715 * (x * x * x))
    return 0.5 * x * (1.0 + torch.tanh(inner))


def exact_gelu_decomposition(ep):
    """Make the program compute the GELU the model asks for.

    ExecuTorch's XNNPACK partitioner claims every aten.gelu node and serializes it as
    XNNPACK's GELU, which is the exact erf form, dropping `approximate` (executorch 1.5.1
    backends/xnnpack/operators/op_gelu.py). Gemma's MLP uses the tanh form; the two differ
    by up to 4.7e-4 per element (at |x| ~ 2.7), an op computed differently, not rounding.
    Decomposing the tanh form into mul/add/tanh before partitioning keeps the whole MLP
    in the delegate (XNNPACK has all three) with the model's math.
    """
    ep = ep.run_decompositions({torch.ops.aten.gelu.default: _gelu_tanh_decomposition})
    for node in ep.graph.nodes:
        if node.target == torch.ops.aten.gelu.default and \
                node.kwargs.get("approximate", "none") == "tanh":
            raise NanoError("export: gelu(approximate='tanh') left in the program")
    return ep


def lower_to_executorch(model: PteDecoder, metadata: dict, progress=None,
                        exact_gelu: bool = True) -> bytes:
    """torch.export -> edge (XNNPACK) -> ExecuTorch program bytes.

    exact_gelu=False skips exact_gelu_decomposition (only to measure what it fixes:
    benchmarks/pte_gemma_gap.py)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import (EdgeCompileConfig, ExecutorchBackendConfig,
                                 to_edge_transform_and_lower)
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    def step(name):
        if progress is not None:
            progress.set_postfix_str(name)
            progress.update(1)

    max_t = model.max_seq_len - 1
    example = (torch.tensor([[1, 2]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
    dyn = ({1: torch.export.Dim("token_dim", min=1, max=max_t)}, None)
    with torch.no_grad():
        ep = torch.export.export(model, example, dynamic_shapes=dyn, strict=False)
        if exact_gelu:
            ep = exact_gelu_decomposition(ep)
    step("export")
    edge = to_edge_transform_and_lower(
        ep, partitioner=[XnnpackPartitioner()], constant_methods=metadata,
        compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True))
    step("lower (XNNPACK)")
    prog = edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        do_quant_fusion_and_const_prop=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
    step("to_executorch")
    return prog.buffer


def export_pte(lm, out_dir: str, opts: ExportOptions, show_progress: bool = True,
               custom_sdpa: bool = True) -> dict:
    """Write OUT/model.pte + tokenizer files atomically; returns a summary dict.

    custom_sdpa: attention and KV-cache update on ExecuTorch's llama::custom_sdpa /
    llama::update_cache (use_custom_sdpa); False keeps the reference attention with its
    index_put cache and a GQA repeat of the whole cache (the earlier, slower program)."""
    from ..formats.checkpoint import AtomicDir
    from ..progress import progress_bar
    from .metadata import PTE_SCHEME, check_supported
    cfg = lm.config
    check_supported(cfg, opts, "pte")
    meta = export_metadata(cfg, lm.tokenizer, opts.max_seq_len)
    _require("executorch", "executorch==1.5.1")
    _require("torchao", "torchao==0.18.0")
    with progress_bar(total=4, desc=f"export pte {cfg.name}", unit="step",
                      disable=not show_progress) as bar:
        model = build_quantized_decoder(lm.model, opts)
        if custom_sdpa:
            use_custom_sdpa(model)
        bar.set_postfix_str("quantize")
        bar.update(1)
        data = lower_to_executorch(model, meta, bar)
    with AtomicDir(out_dir) as tmp:
        with open(os.path.join(tmp, PTE_NAME), "wb") as f:
            f.write(data)
        lm.tokenizer.save(tmp)
        _write_json(os.path.join(tmp, "export_config.json"),
                    {"format": "executorch-pte", "model": cfg.name, "family": cfg.family,
                     "quantization": PTE_SCHEME, "group_size": opts.group_size,
                     "attention": "llama::custom_sdpa+update_cache" if custom_sdpa
                     else "reference (index_put cache)",
                     "metadata": meta, "config": cfg.to_dict()})
    return {"path": os.path.join(out_dir, PTE_NAME), "bytes": len(data), "metadata": meta}


def plan_op_counts(pte_path: str, method: str = "forward") -> dict:
    """{operator name: number of calls} of a .pte method's plan; delegate calls count as
    "DELEGATE". Shows what runs outside XNNPACK (portable/custom kernels)."""
    from collections import Counter
    from executorch.exir._serialize._program import deserialize_pte_binary
    with open(pte_path, "rb") as f:
        prog = deserialize_pte_binary(f.read()).program
    plan = next(p for p in prog.execution_plan if p.name == method)
    n = Counter()
    for chain in plan.chains:
        for ins in chain.instructions:
            arg = ins.instr_args
            if hasattr(arg, "op_index"):
                op = plan.operators[arg.op_index]
                n[op.name + (f".{op.overload}" if op.overload else "")] += 1
            elif hasattr(arg, "delegate_index"):
                n["DELEGATE"] += 1
    return dict(n)


def _write_json(path, obj):
    import json
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


def _require(module: str, pip_name: str):
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise NanoError(f"export needs the package {pip_name} (pip install 'nano_runtime[export]')")
