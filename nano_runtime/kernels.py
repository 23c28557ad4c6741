"""Python access to the native int4/int8 kernels (kernels/include/nano_kernels.h).

Three layers, each usable on its own:

* **Reference packing** (pure numpy, no native code): ``pack_q4`` / ``unpack_q4`` /
  ``dequantize_q4`` and the int8 twins follow the packed layout of
  ``kernels/include/nano_format.h`` exactly:

  - Q4, per row groups of ``G`` in {32, 64, 128} columns along K (K % 32 == 0, last group
    may be shorter): ``qweight`` uint8 [N, K/2] where, inside each 32-column block, byte j
    holds column j in its low nibble and column j+16 in its high nibble (ggml Q4_0/Q4_1
    order); ``scales`` float16 [N, ceil(K/G)]; ``mins`` float16 [N, ceil(K/G)] or None.
    Symmetric: ``x = s * (q - 8)``; asymmetric: ``x = s * q + min`` (exactly GGUF Q4_1).
  - Q8: ``qweight8`` int8 [N, K], ``scales`` float16 [N, K/32], ``x = s * q`` (GGUF Q8_0).

* **Kernel calls** on numpy arrays (torch CPU tensors are accepted too):
  ``q4_matmul(x, qweight, scales, mins, group_size, act="f32"|"q8", variant=, threads=)``,
  ``q8_matmul``, ``quantize_act_q8``, fp16 helpers; ``variants()`` lists what this
  build and CPU can run, ``variant=`` forces one for one call. Errors in the inputs raise
  ``ValueError`` (status text of the C library included), anything else ``KernelError``.

* **PyTorch**: the custom op ``torch.ops.nano.q4_linear(x, qweight, scales, mins,
  group_size, act)`` and the ``Q4Linear`` module, so the reference model can run packed
  layers through the kernels.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading
from contextlib import contextmanager
from typing import Optional

import numpy as np

from . import _native

GROUP_SIZES = (32, 64, 128)
QK = 32  # columns per packed block (NANO_QK)
VARIANTS = ("scalar", "avx2", "avx512", "neon", "neondot")

_STATUS_VALUE_ERRORS = {-1, -2, -3, -4, -6}  # null, shape, group, align, scratch


class KernelError(RuntimeError):
    """A native kernel failed for a reason other than bad input."""


# --------------------------------------------------------------------------- ctypes
class _Q4Matrix(ctypes.Structure):
    _fields_ = [("qweight", ctypes.c_void_p), ("scales", ctypes.c_void_p),
                ("mins", ctypes.c_void_p), ("n", ctypes.c_int32), ("k", ctypes.c_int32),
                ("group_size", ctypes.c_int32)]


class _Q8Matrix(ctypes.Structure):
    _fields_ = [("qweight", ctypes.c_void_p), ("scales", ctypes.c_void_p),
                ("n", ctypes.c_int32), ("k", ctypes.c_int32)]


class _Q8Act(ctypes.Structure):
    _fields_ = [("q", ctypes.c_void_p), ("d", ctypes.c_void_p), ("ds", ctypes.c_void_p),
                ("m", ctypes.c_int32), ("k", ctypes.c_int32)]


_LIB = None
_P = ctypes.c_void_p


def _lib():
    """The libnano CDLL with the kernel signatures declared."""
    global _LIB
    if _LIB is None:
        lib = _native.load()
        sig = {
            "nano_kernel_status_string": (ctypes.c_char_p, [ctypes.c_int]),
            "nano_q8_act_bytes": (ctypes.c_size_t, [ctypes.c_int, ctypes.c_int]),
            "nano_q8_act_init": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]),
            "nano_pool_create": (_P, [ctypes.c_int]),
            "nano_pool_free": (None, [_P]),
            "nano_pool_size": (ctypes.c_int, [_P]),
            "nano_quantize_act_q8": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_int, _P, _P]),
            "nano_q4_matmul_f32": (ctypes.c_int, [_P, _P, _P, ctypes.c_int, _P]),
            "nano_q4_matmul_q8act": (ctypes.c_int, [_P, _P, _P, _P]),
            "nano_q8_matmul_f32": (ctypes.c_int, [_P, _P, _P, ctypes.c_int, _P]),
            "nano_q8_matmul_q8act": (ctypes.c_int, [_P, _P, _P, _P]),
            "nano_q4_dequant_row": (ctypes.c_int, [_P, ctypes.c_int, _P]),
            "nano_q8_dequant_row": (ctypes.c_int, [_P, ctypes.c_int, _P]),
            "nano_fp16_to_fp32_array": (None, [_P, _P, ctypes.c_size_t]),
            "nano_fp32_to_fp16_array": (None, [_P, _P, ctypes.c_size_t]),
            "nano_kernel_variant": (ctypes.c_int, []),
            "nano_kernel_variant_name": (ctypes.c_char_p, [ctypes.c_int]),
            "nano_kernel_variant_available": (ctypes.c_int, [ctypes.c_int]),
            "nano_kernel_set_variant": (ctypes.c_int, [ctypes.c_int]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _LIB = lib
    return _LIB


def _check(status: int, what: str) -> None:
    if status == 0:
        return
    msg = f"{what}: {_lib().nano_kernel_status_string(status).decode()} (status {status})"
    if status in _STATUS_VALUE_ERRORS:
        raise ValueError(msg)
    raise KernelError(msg)


# --------------------------------------------------------------------------- variants & threads
_VARIANT_LOCK = threading.RLock()


def variants() -> list[str]:
    """Variants compiled into this build and supported by this CPU, scalar first."""
    lib = _lib()
    return [n for i, n in enumerate(VARIANTS) if lib.nano_kernel_variant_available(i)]


def current_variant() -> str:
    """The variant kernels use now (chosen from CPU features or NANO_KERNEL)."""
    return _lib().nano_kernel_variant_name(_lib().nano_kernel_variant()).decode()


def set_variant(name: Optional[str]) -> None:
    """Force a variant for every later call (None = automatic choice again)."""
    if name is None:
        _check(_lib().nano_kernel_set_variant(-1), "set_variant")
        return
    if name not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")
    st = _lib().nano_kernel_set_variant(VARIANTS.index(name))
    if st != 0:
        raise ValueError(f"variant {name!r} is not available here (available: {variants()})")


@contextmanager
def use_variant(name: Optional[str]):
    """Run the body with `name` forced (None: leave the current choice)."""
    if name is None:
        yield
        return
    with _VARIANT_LOCK:
        old = current_variant()
        set_variant(name)
        try:
            yield
        finally:
            set_variant(old)


_POOLS: dict[int, int] = {}
_POOL_LOCK = threading.Lock()


def default_threads() -> int:
    env = os.environ.get("NANO_THREADS")
    return int(env) if env else (os.cpu_count() or 1)


def _pool(threads: Optional[int]):
    """A cached persistent pool for `threads` threads (None for one thread)."""
    n = default_threads() if threads is None else int(threads)
    if n < 1 or n > 256:
        raise ValueError(f"threads must be in 1..256, got {threads}")
    if n == 1:
        return None
    with _POOL_LOCK:
        if n not in _POOLS:
            p = _lib().nano_pool_create(n)
            if not p:
                raise KernelError(f"could not start a pool of {n} threads")
            _POOLS[n] = p
        return _POOLS[n]


@atexit.register
def _free_pools():
    for p in _POOLS.values():
        _lib().nano_pool_free(p)
    _POOLS.clear()


# --------------------------------------------------------------------------- reference packing (numpy)
def _ngroups(k: int, group_size: int) -> int:
    return (k + group_size - 1) // group_size


def _check_qk(k: int, group_size: Optional[int] = None) -> None:
    if k < QK or k % QK:
        raise ValueError(f"K must be a positive multiple of {QK}, got {k}")
    if group_size is not None and group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")


def pack_q4_codes(codes: np.ndarray) -> np.ndarray:
    """codes uint8 [N, K] in 0..15 -> qweight uint8 [N, K/2] (nano_format.h nibble order)."""
    codes = np.asarray(codes, dtype=np.uint8)
    n, k = codes.shape
    _check_qk(k)
    if codes.max(initial=0) > 15:
        raise ValueError("4-bit codes must be in 0..15")
    blocks = codes.reshape(n, k // QK, 2, 16)  # [n, block, half, j]: half 0 = cols j, 1 = j+16
    return (blocks[:, :, 0, :] | (blocks[:, :, 1, :] << 4)).reshape(n, k // 2)


def unpack_q4_codes(qweight: np.ndarray) -> np.ndarray:
    """qweight uint8 [N, K/2] -> codes uint8 [N, K] (inverse of pack_q4_codes)."""
    qweight = np.asarray(qweight, dtype=np.uint8)
    n, kh = qweight.shape
    b = qweight.reshape(n, (2 * kh) // QK, 16)
    return np.stack([b & 0x0F, b >> 4], axis=2).reshape(n, 2 * kh)


def _expand_groups(v: np.ndarray, k: int, group_size: int) -> np.ndarray:
    """[N, ceil(K/G)] per-group values -> [N, K] per column (short last group included)."""
    return np.repeat(v.astype(np.float32), group_size, axis=1)[:, :k]


def pack_q4(w, group_size: int = 32, symmetric: bool = True):
    """Round-to-nearest int4 quantization of w [N, K] -> (qweight, scales, mins).

    Symmetric (ggml Q4_0 style): per group, the value of largest magnitude m maps to code 0
    (s = -m / 8), codes q = clip(round(x / s) + 8, 0, 15); mins is None.
    Asymmetric (Q4_1): s = (max - min) / 15, min = group min, q = clip(round((x - min) / s)).
    Scales and mins are rounded to fp16 first and the codes computed with the rounded values,
    so dequantize_q4 reproduces exactly what the kernels compute with.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {w.shape}")
    n, k = w.shape
    _check_qk(k, group_size)
    if not np.isfinite(w).all():
        raise ValueError("weight has NaN or Inf values")
    ng = _ngroups(k, group_size)
    pad = ng * group_size - k
    wp = np.pad(w, ((0, 0), (0, pad)), mode="edge") if pad else w
    g = wp.reshape(n, ng, group_size)
    if symmetric:
        idx = np.abs(g).argmax(axis=2)
        m = np.take_along_axis(g, idx[..., None], axis=2)[..., 0]
        scales = (-m / 8.0).astype(np.float16)
        mins = None
        s = _expand_groups(scales, k, group_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(s != 0, np.rint(w / s) + 8, 8)
    else:
        lo, hi = g.min(axis=2), g.max(axis=2)
        scales = ((hi - lo) / 15.0).astype(np.float16)
        mins = lo.astype(np.float16)
        s = _expand_groups(scales, k, group_size)
        mn = _expand_groups(mins, k, group_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(s != 0, np.rint((w - mn) / s), 0)
    codes = np.clip(q, 0, 15).astype(np.uint8)
    return pack_q4_codes(codes), scales, mins


def dequantize_q4(qweight, scales, mins, group_size: int, k: Optional[int] = None) -> np.ndarray:
    """(qweight [N, K/2], scales [N, ng], mins [N, ng] | None) -> float32 [N, K]."""
    qweight = np.asarray(qweight, dtype=np.uint8)
    k = 2 * qweight.shape[1] if k is None else k
    _check_qk(k, group_size)
    codes = unpack_q4_codes(qweight).astype(np.float32)
    s = _expand_groups(np.asarray(scales, dtype=np.float16), k, group_size)
    if mins is None:
        return s * (codes - 8.0)
    return s * codes + _expand_groups(np.asarray(mins, dtype=np.float16), k, group_size)


def pack_q8(w):
    """w [N, K] -> (qweight8 int8 [N, K], scales fp16 [N, K/32]); s = max|x| / 127 (Q8_0)."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    _check_qk(k)
    g = w.reshape(n, k // QK, QK)
    scales = (np.abs(g).max(axis=2) / 127.0).astype(np.float16)
    s = scales.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s != 0, np.rint(g / s), 0)
    return np.clip(q, -127, 127).astype(np.int8).reshape(n, k), scales


def dequantize_q8(qweight8, scales) -> np.ndarray:
    q = np.asarray(qweight8, dtype=np.int8).astype(np.float32)
    return q * np.repeat(np.asarray(scales, dtype=np.float16).astype(np.float32), QK, axis=1)


# --------------------------------------------------------------------------- kernel calls
def _arr(a, dtype, name):
    """numpy view of a numpy array or CPU torch tensor, C-contiguous, of dtype."""
    if hasattr(a, "detach"):  # torch tensor: zero-copy when already CPU-contiguous
        t = a.detach().cpu()
        if name == "x" and str(t.dtype) != "torch.float32":
            t = t.float()  # bf16/fp16 activations have no numpy view
        try:
            a = t.contiguous().numpy()
        except TypeError as e:
            raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {t.dtype}") from e
    a = np.asarray(a)
    if a.dtype != dtype:
        if name in ("x",):
            a = a.astype(dtype)
        else:
            raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _ptr(a) -> Optional[int]:
    return None if a is None else a.ctypes.data


def _q4_struct(qweight, scales, mins, group_size):
    qweight = _arr(qweight, np.uint8, "qweight")
    scales = _arr(scales, np.float16, "scales")
    mins = None if mins is None else _arr(mins, np.float16, "mins")
    if qweight.ndim != 2:
        raise ValueError(f"qweight must be [N, K/2], got shape {qweight.shape}")
    n, k = qweight.shape[0], 2 * qweight.shape[1]
    _check_qk(k, group_size)
    ng = _ngroups(k, group_size)
    if scales.shape != (n, ng):
        raise ValueError(f"scales must be [{n}, {ng}] for K={k}, G={group_size}, got {scales.shape}")
    if mins is not None and mins.shape != (n, ng):
        raise ValueError(f"mins must be [{n}, {ng}], got {mins.shape}")
    keep = (qweight, scales, mins)
    return _Q4Matrix(_ptr(qweight), _ptr(scales), _ptr(mins), n, k, group_size), keep


def _q8_struct(qweight8, scales):
    qweight8 = _arr(qweight8, np.int8, "qweight8")
    scales = _arr(scales, np.float16, "scales")
    if qweight8.ndim != 2:
        raise ValueError(f"qweight8 must be [N, K], got shape {qweight8.shape}")
    n, k = qweight8.shape
    _check_qk(k)
    if scales.shape != (n, k // QK):
        raise ValueError(f"scales must be [{n}, {k // QK}], got {scales.shape}")
    return _Q8Matrix(_ptr(qweight8), _ptr(scales), n, k), (qweight8, scales)


def _x2d(x, k):
    x = _arr(x, np.float32, "x")
    lead = x.shape[:-1]
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"x must end in K={k} columns, got shape {x.shape}")
    m = int(np.prod(lead)) if lead else 1
    if m < 1:
        raise ValueError("x has no rows")
    return x.reshape(m, k), lead


class Q8Act:
    """Activations quantized by nano_quantize_act_q8: q int8 [M, K], d / ds float32 [M, K/32]."""

    def __init__(self, m: int, k: int):
        nbytes = _lib().nano_q8_act_bytes(m, k)
        if nbytes == 0:
            raise ValueError(f"bad activation shape [{m}, {k}]")
        self.buf = np.zeros(nbytes, dtype=np.uint8)
        self.struct = _Q8Act()
        _check(_lib().nano_q8_act_init(ctypes.byref(self.struct), _ptr(self.buf), nbytes, m, k),
               "q8_act_init")
        self.m, self.k = m, k

    @property
    def q(self) -> np.ndarray:
        return self.buf[: self.m * self.k].view(np.int8).reshape(self.m, self.k)

    def _floats(self, ptr) -> np.ndarray:
        off = ptr - self.buf.ctypes.data
        nb = self.m * self.k // QK
        return self.buf[off: off + 4 * nb].view(np.float32).reshape(self.m, self.k // QK)

    @property
    def d(self) -> np.ndarray:
        return self._floats(self.struct.d)

    @property
    def ds(self) -> np.ndarray:
        return self._floats(self.struct.ds)


def quantize_act_q8(x, *, variant: Optional[str] = None, threads: Optional[int] = None) -> Q8Act:
    """x [..., K] float32 -> Q8Act (per-32 scales, round half to even)."""
    x = _arr(x, np.float32, "x")
    k = x.shape[-1]
    _check_qk(k)
    x2, _ = _x2d(x, k)
    act = Q8Act(x2.shape[0], k)
    with use_variant(variant):
        _check(_lib().nano_quantize_act_q8(_ptr(x2), x2.shape[0], k, ctypes.byref(act.struct),
                                           _pool(threads)), "quantize_act_q8")
    return act


def _matmul(kind, wstruct, keep, x, act, variant, threads):
    lib = _lib()
    k, n = wstruct.k, wstruct.n
    x2, lead = _x2d(x, k)
    m = x2.shape[0]
    y = np.empty((m, n), dtype=np.float32)
    if act not in ("f32", "q8"):
        raise ValueError(f"act must be 'f32' or 'q8', got {act!r}")
    with use_variant(variant):
        pool = _pool(threads)
        if act == "f32":
            fn = lib.nano_q4_matmul_f32 if kind == "q4" else lib.nano_q8_matmul_f32
            _check(fn(ctypes.byref(wstruct), _ptr(x2), _ptr(y), m, pool), f"{kind}_matmul_f32")
        else:
            a = Q8Act(m, k)
            _check(lib.nano_quantize_act_q8(_ptr(x2), m, k, ctypes.byref(a.struct), pool),
                   "quantize_act_q8")
            fn = lib.nano_q4_matmul_q8act if kind == "q4" else lib.nano_q8_matmul_q8act
            _check(fn(ctypes.byref(wstruct), ctypes.byref(a.struct), _ptr(y), pool),
                   f"{kind}_matmul_q8act")
    del keep
    return y.reshape(*lead, n) if lead else y.reshape(n)


def q4_matmul(x, qweight, scales, mins, group_size: int, *, act: str = "f32",
              variant: Optional[str] = None, threads: Optional[int] = None) -> np.ndarray:
    """y [..., N] = x [..., K] @ W^T for packed int4 W (see module docstring).

    act="f32": fp32 activations; act="q8": activations quantized per 32 to int8 first
    (integer dot products, the fast path). variant forces one kernel variant for this call,
    threads sets the pool size (default: NANO_THREADS or all CPUs).
    """
    ws, keep = _q4_struct(qweight, scales, mins, group_size)
    return _matmul("q4", ws, keep, x, act, variant, threads)


def q8_matmul(x, qweight8, scales, *, act: str = "f32", variant: Optional[str] = None,
              threads: Optional[int] = None) -> np.ndarray:
    """y [..., N] = x [..., K] @ W^T for int8 W (qweight8 [N, K], scales fp16 [N, K/32])."""
    ws, keep = _q8_struct(qweight8, scales)
    return _matmul("q8", ws, keep, x, act, variant, threads)


def q4_dequant_row(qweight, scales, mins, group_size: int, row: int) -> np.ndarray:
    """One dequantized row [K] through the C helper (the engine's embedding lookup)."""
    ws, keep = _q4_struct(qweight, scales, mins, group_size)
    out = np.empty(ws.k, dtype=np.float32)
    _check(_lib().nano_q4_dequant_row(ctypes.byref(ws), row, _ptr(out)), "q4_dequant_row")
    return out


def fp16_to_fp32(a) -> np.ndarray:
    a = _arr(a, np.float16, "a")
    out = np.empty(a.shape, dtype=np.float32)
    _lib().nano_fp16_to_fp32_array(_ptr(a), _ptr(out), a.size)
    return out


def fp32_to_fp16(a) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.float16)
    _lib().nano_fp32_to_fp16_array(_ptr(a), _ptr(out), a.size)
    return out


# --------------------------------------------------------------------------- torch
def _register_torch():
    import torch

    @torch.library.custom_op("nano::q4_linear", mutates_args=())
    def q4_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                  mins: Optional[torch.Tensor], group_size: int, act: str = "f32") -> torch.Tensor:
        """x [..., K] -> [..., N] through the native int4 kernels (CPU, computes in fp32)."""
        y = q4_matmul(x.detach().to(torch.float32).cpu().contiguous().numpy(), qweight, scales,
                      mins, group_size, act=act)
        return torch.from_numpy(np.ascontiguousarray(y)).to(x.dtype)

    @q4_linear.register_fake
    def _(x, qweight, scales, mins, group_size, act="f32"):
        return x.new_empty((*x.shape[:-1], qweight.shape[0]))

    return q4_linear


try:  # the kernels work without torch; the op and module need it
    import torch
    import torch.nn as nn

    q4_linear = _register_torch()

    class Q4Linear(nn.Module):
        """nn.Linear with packed int4 weights run by the native kernels.

        Buffers are exactly the .nano tensors: qweight uint8 [out, in/2], scales fp16
        [out, ceil(in/G)], mins fp16 (asymmetric only), optional fp32 bias.
        """

        def __init__(self, in_features: int, out_features: int, group_size: int = 32,
                     symmetric: bool = True, bias: bool = False, act: str = "f32"):
            super().__init__()
            _check_qk(in_features, group_size)
            ng = _ngroups(in_features, group_size)
            self.in_features, self.out_features = in_features, out_features
            self.group_size, self.act = group_size, act
            self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
            self.register_buffer("scales", torch.zeros(out_features, ng, dtype=torch.float16))
            self.register_buffer("mins", None if symmetric else torch.zeros(out_features, ng, dtype=torch.float16))
            self.register_buffer("bias", torch.zeros(out_features) if bias else None)

        @classmethod
        def from_linear(cls, linear: nn.Linear, group_size: int = 32, symmetric: bool = True,
                        act: str = "f32") -> "Q4Linear":
            """RTN-quantize an nn.Linear with pack_q4."""
            m = cls(linear.in_features, linear.out_features, group_size, symmetric,
                    linear.bias is not None, act)
            qw, sc, mn = pack_q4(linear.weight.detach().float().cpu().numpy(), group_size, symmetric)
            m.qweight.copy_(torch.from_numpy(qw))
            m.scales.copy_(torch.from_numpy(sc))
            if mn is not None:
                m.mins.copy_(torch.from_numpy(mn))
            if linear.bias is not None:
                m.bias.copy_(linear.bias.detach().float())
            return m

        def _apply(self, fn, recurse=True):
            """module.to(dtype) must not touch the packed fp16 scales/mins (only move them)."""
            keep = {k: self._buffers[k] for k in ("scales", "mins") if self._buffers.get(k) is not None}
            super()._apply(fn, recurse)
            for k, v in keep.items():
                self._buffers[k] = v.to(self._buffers[k].device)
            return self

        def dequantized_weight(self) -> torch.Tensor:
            mins = None if self.mins is None else self.mins.numpy()
            return torch.from_numpy(dequantize_q4(self.qweight.numpy(), self.scales.numpy(), mins,
                                                  self.group_size, self.in_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.nano.q4_linear(x, self.qweight, self.scales, self.mins,
                                         self.group_size, self.act)
            return y if self.bias is None else y + self.bias.to(y.dtype)

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"group_size={self.group_size}, symmetric={self.mins is None}, act={self.act}")
except ImportError:  # pragma: no cover
    pass
