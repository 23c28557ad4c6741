"""The .nano file (format version 1): one packed model file for the native engine.

This docstring is the Python half of the layout spec; kernels/include/nano_format.h
is the C half and /work/notes/nano_file_spec.md the agreed text.
tests/test_format_layout.py checks that the two halves and this writer agree bit for bit.

Container
---------
A .nano file is ONE safetensors file: an 8-byte little-endian header length n, n bytes
of JSON header (padded with spaces so the data starts at a multiple of 64 bytes), then
the raw tensor bytes. Header entries are {"dtype", "shape", "data_offsets": [begin, end]}
with offsets relative to the start of the data; the data has no holes (any safetensors
reader opens the file). Tensors whose byte size is a multiple of 64 are placed first, so
their data offsets are 64-byte aligned and the C engine can mmap them zero-copy; the
remaining (odd-sized) tensors and "tokenizer.json" follow.

``__metadata__`` (all values are strings):

- "nano.format_version": "1"
- "nano.config": ModelConfig JSON (nano_runtime.config.ModelConfig.to_json())
- "nano.quant": recipe JSON, e.g. {"method": "rtn"|"gptq"|"awq"|"gguf-exact", "bits": 4,
  "group_size": 32|64|128, "symmetric": false, "embed": "q8"|"q4"|"f16"|"f32",
  "head": "q8"|"q4"|"f16"|"tied", "calib": "...", "bits_per_weight": 4.5}
  plus optional "overrides": {prefix: "q4"|"q8"|"f16"|"f32"} for mixed precision.
- "nano.tokenizer_config": JSON {"bos_id", "eos_id", "add_bos", "stop_ids", "chat_template"}

Tensors
-------
- "tokenizer.json": uint8 [n], the HF tokenizer.json bytes (UTF-8). Readers ignore
  other "tokenizer.*" tensors.
- Every linear weight of the reference model, named P.weight there (P = "layers.3.attn.wq",
  "layers.3.mlp.w_down", "output", ...), of logical shape [N, K] (N output rows, K input
  columns, row-major, y = W x), is stored as one of:

  Q4 (int4, groupwise along K, group size G in {32, 64, 128}, G = recipe "group_size"):
    P.qweight  uint8   [N, K/2]      two 4-bit codes per byte, see below
    P.scales   float16 [N, ceil(K/G)]
    P.mins     float16 [N, ceil(K/G)]  asymmetric groups only

    K must be a multiple of 32 (NANO_QK). The last group of a row may be
    shorter than G (it covers K - (ngroups-1)*G columns, a multiple of 32);
    nothing is padded.

    Codes come in blocks of 32 consecutive columns. Inside one block of a
    row, byte j (0 <= j < 16) holds column 32b+j in its low nibble and
    column 32b+j+16 in its high nibble (the ggml Q4_0/Q4_1 order, so a
    16-byte load unpacks to 32 in-order codes with one AND and one shift).

    dequantized value of code q (0..15) in group g:
      symmetric : x = scales[g] * (q - 8)
      asymmetric: x = scales[g] * q + mins[g]      (exactly GGUF Q4_1)

  Q8 (int8, embeddings and output head; group fixed at 32):
    P.qweight8 int8    [N, K]
    P.scales   float16 [N, K/32]
      x = scales[g] * q                           (exactly GGUF Q8_0)

  plain: P.weight float16/float32 [N, K]

- Embeddings "embed" [vocab, dim]: Q8 by default (embed.qweight8 + embed.scales), Q4 in the
  recipe's group size and symmetry (embed.qweight + embed.scales [+ embed.mins]; with a tied
  head this halves the bytes decode reads per token for the head), or embed.weight
  float16/float32. With config.tie_embeddings the output head IS the
  embedding and there are no "output.*" tensors.
- Norms under their plain reference names ("layers.3.attn_norm.weight", "norm.weight",
  "layers.3.attn.q_norm.weight", ...) as float32, holding the EFFECTIVE multiplier: for
  Gemma (config.norm_unit_offset) the file stores 1 + w, so an engine multiplies by the
  stored vector for both families (load_reference subtracts the 1 again).

Readers refuse an unknown format version, a missing or extra tensor for the config, a
wrong dtype or shape, data past the end of the file (truncated) and a malformed header,
each with one message naming the tensor or field.

Writing is streamed: ``write_nano`` computes the whole header from the config and recipe,
then takes (name, array) pairs one at a time from any iterable and writes each at its
offset in a temporary sibling file, which is fsynced and renamed over the target only
when every tensor has arrived (an interrupted write leaves no .nano behind).
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from ..config import ModelConfig
from ..errors import ModelFormatError, NanoError

FORMAT_VERSION = 1          # NANO_FORMAT_VERSION
QK = 32                     # NANO_QK: columns per packed block
Q4_BLOCK_BYTES = 16         # NANO_Q4_BLOCK_BYTES
Q8_GROUP = 32               # NANO_Q8_GROUP
GROUP_SIZES = (32, 64, 128)
ALIGN = 64
MAX_HEADER = 64 << 20

TENSOR_FORMATS = ("q4", "q8", "f16", "f32")
EMBED_FORMATS = ("q8", "q4", "f16", "f32")
HEAD_FORMATS = ("q8", "q4", "f16", "f32", "tied")

# safetensors dtype names <-> numpy
_DTYPES = {"U8": np.uint8, "I8": np.int8, "F16": np.float16, "F32": np.float32}
_DTYPE_NAMES = {np.dtype(v).str: k for k, v in _DTYPES.items()}


def dtype_name(dt) -> str:
    return _DTYPE_NAMES[np.dtype(dt).str]


def ngroups(k: int, group_size: int) -> int:
    return (k + group_size - 1) // group_size


# --------------------------------------------------------------------------- layout
def linear_shapes(cfg: ModelConfig) -> list:
    """[(prefix, N, K)] of every linear weight of the reference model, in model order."""
    out = []
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        out += [(p + "attn.wq", cfg.q_dim, cfg.dim), (p + "attn.wk", cfg.kv_dim, cfg.dim),
                (p + "attn.wv", cfg.kv_dim, cfg.dim), (p + "attn.wo", cfg.dim, cfg.q_dim),
                (p + "mlp.w_gate", cfg.hidden_dim, cfg.dim),
                (p + "mlp.w_up", cfg.hidden_dim, cfg.dim),
                (p + "mlp.w_down", cfg.dim, cfg.hidden_dim)]
    if not cfg.tie_embeddings:
        out.append(("output", cfg.vocab_size, cfg.dim))
    return out


def norm_shapes(cfg: ModelConfig) -> list:
    """[(name, length)] of every norm vector, in model order."""
    out = []
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        out.append((p + "attn_norm.weight", cfg.dim))
        if cfg.qk_norm:
            out += [(p + "attn.q_norm.weight", cfg.head_dim), (p + "attn.k_norm.weight", cfg.head_dim)]
        if cfg.post_norms:
            out.append((p + "post_attn_norm.weight", cfg.dim))
        out.append((p + "mlp_norm.weight", cfg.dim))
        if cfg.post_norms:
            out.append((p + "post_mlp_norm.weight", cfg.dim))
    out.append(("norm.weight", cfg.dim))
    return out


def check_recipe(recipe: dict) -> dict:
    """Validate a quantization recipe; returns a copy with defaults filled in."""
    r = {"method": "rtn", "bits": 4, "group_size": 32, "symmetric": False, "embed": "q8",
         "head": "q8", "overrides": {}}
    r.update(recipe or {})
    if r["bits"] != 4:
        raise NanoError(f"recipe bits must be 4, got {r['bits']!r}")
    if r["group_size"] not in GROUP_SIZES:
        raise NanoError(f"group size must be one of {', '.join(map(str, GROUP_SIZES))}, "
                        f"got {r['group_size']!r}")
    if r["embed"] not in EMBED_FORMATS:
        raise NanoError(f"embedding format must be one of {EMBED_FORMATS}, got {r['embed']!r}")
    if r["head"] not in HEAD_FORMATS:
        raise NanoError(f"head format must be one of {HEAD_FORMATS}, got {r['head']!r}")
    for p, f in (r.get("overrides") or {}).items():
        if f not in TENSOR_FORMATS:
            raise NanoError(f"format of {p} must be one of {TENSOR_FORMATS}, got {f!r}")
    return r


def tensor_format(cfg: ModelConfig, recipe: dict, prefix: str) -> str:
    """q4 | q8 | f16 | f32 for a linear prefix or "embed"."""
    ov = recipe.get("overrides") or {}
    if prefix in ov:
        return ov[prefix]
    if prefix == "embed":
        return recipe["embed"]
    if prefix == "output":
        return "q8" if recipe["head"] == "tied" else recipe["head"]
    return "q4"


def prefix_entries(prefix: str, fmt: str, n: int, k: int, group_size: int, symmetric: bool) -> list:
    """[(name, dtype, shape)] of the tensors storing one [n, k] weight in format fmt."""
    if fmt == "q4":
        ng = ngroups(k, group_size)
        e = [(prefix + ".qweight", np.uint8, (n, k // 2)),
             (prefix + ".scales", np.float16, (n, ng))]
        if not symmetric:
            e.append((prefix + ".mins", np.float16, (n, ng)))
        return e
    if fmt == "q8":
        return [(prefix + ".qweight8", np.int8, (n, k)),
                (prefix + ".scales", np.float16, (n, k // Q8_GROUP))]
    return [(prefix + ".weight", np.float16 if fmt == "f16" else np.float32, (n, k))]


def check_shape_quantizable(name: str, n: int, k: int, fmt: str):
    if fmt in ("q4", "q8") and (k % QK or k == 0):
        raise NanoError(f"tensor {name} has K={k} columns, not a multiple of {QK}: "
                        f"cannot store it as {fmt}")


def tensor_layout(cfg: ModelConfig, recipe: dict) -> list:
    """[(name, numpy dtype, shape)] of every weight tensor a .nano of this config/recipe holds
    (tokenizer tensors excluded), in model order."""
    r = check_recipe(recipe)
    g, sym = r["group_size"], r["symmetric"]
    out = []
    fmt = tensor_format(cfg, r, "embed")
    check_shape_quantizable("embed", cfg.vocab_size, cfg.dim, fmt)
    out += prefix_entries("embed", fmt, cfg.vocab_size, cfg.dim, g, sym)
    for prefix, n, k in linear_shapes(cfg):
        fmt = tensor_format(cfg, r, prefix)
        check_shape_quantizable(prefix, n, k, fmt)
        out += prefix_entries(prefix, fmt, n, k, g, sym)
    out += [(name, np.float32, (n,)) for name, n in norm_shapes(cfg)]
    return out


def bits_per_weight(cfg: ModelConfig, recipe: dict) -> dict:
    """Storage bits per weight, scales and mins included: linear layers only, and whole model."""
    lay = tensor_layout(cfg, recipe)
    lin = {p for p, _, _ in linear_shapes(cfg)}
    lin_bytes = lin_params = tot_bytes = 0
    for name, dt, shape in lay:
        nb = int(np.prod(shape)) * np.dtype(dt).itemsize
        tot_bytes += nb
        if name.rsplit(".", 1)[0] in lin:
            lin_bytes += nb
    lin_params = sum(n * k for _, n, k in linear_shapes(cfg))
    return {"linear": 8.0 * lin_bytes / lin_params,
            "total": 8.0 * tot_bytes / cfg.num_params()}


# --------------------------------------------------------------------------- writer
def _plan(entries: list) -> tuple:
    """Header dict and data size for [(name, dtype, shape)], aligned entries first."""
    sized = []
    for name, dt, shape in entries:
        nb = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
        sized.append((name, dt, tuple(int(s) for s in shape), nb))
    tok_last = lambda e: e[0].startswith("tokenizer.")  # noqa: E731
    order = ([e for e in sized if e[3] % ALIGN == 0 and not tok_last(e)]
             + [e for e in sized if e[3] % ALIGN and not tok_last(e)]
             + [e for e in sized if tok_last(e)])
    header, off = {}, 0
    for name, dt, shape, nb in order:
        header[name] = {"dtype": dtype_name(dt), "shape": list(shape),
                        "data_offsets": [off, off + nb]}
        off += nb
    return header, off


def _header_bytes(header: dict, metadata: dict) -> bytes:
    h = {"__metadata__": metadata}
    h.update(header)
    raw = json.dumps(h, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    pad = (-(8 + len(raw))) % ALIGN
    return raw + b" " * pad


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(a)


def write_nano(path: str, cfg: ModelConfig, tensors: Iterable, tokenizer, recipe: dict,
               progress=None) -> dict:
    """Write a .nano file from a stream of (name, array) pairs; returns the header.

    `tensors` yields every tensor of ``tensor_layout(cfg, recipe)`` exactly once, in any
    order (numpy arrays or CPU torch tensors of exactly the listed dtype and shape); norms
    already hold the effective multiplier (1 + w for Gemma). The target appears only when
    the whole file is written and synced.
    """
    recipe = check_recipe(recipe)
    entries = tensor_layout(cfg, recipe)
    tok_bytes = b""
    tok_cfg = {}
    if tokenizer is not None:
        tok_bytes = tokenizer.tokenizer_json.encode("utf-8")
        tok_cfg = tokenizer.config_dict()
        entries = entries + [("tokenizer.json", np.uint8, (len(tok_bytes),))]
    recipe = dict(recipe, bits_per_weight=round(bits_per_weight(cfg, recipe)["linear"], 4))
    metadata = {"nano.format_version": str(FORMAT_VERSION), "nano.config": cfg.to_json(),
                "nano.quant": json.dumps(recipe, sort_keys=True),
                "nano.tokenizer_config": json.dumps(tok_cfg)}
    header, data_size = _plan(entries)
    hb = _header_bytes(header, metadata)
    data_start = 8 + len(hb)
    expected = {name: (np.dtype(dt), tuple(shape)) for name, dt, shape in entries}

    path = os.path.abspath(path)
    d = os.path.dirname(path)
    if os.path.isdir(path):
        raise NanoError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    except OSError as e:
        raise NanoError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        try:
            os.ftruncate(fd, data_start + data_size)
            os.pwrite(fd, struct.pack("<Q", len(hb)) + hb, 0)
            written = set()

            def put(name, arr):
                want = expected.get(name)
                if want is None:
                    raise NanoError(f"tensor {name} is not part of the .nano layout for this "
                                    "config and recipe")
                if name in written:
                    raise NanoError(f"tensor {name} was given twice")
                arr = _as_numpy(arr)
                if arr.dtype != want[0] or tuple(arr.shape) != want[1]:
                    raise NanoError(f"tensor {name}: expected {want[0].name} {list(want[1])}, "
                                    f"got {arr.dtype.name} {list(arr.shape)}")
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    raise NanoError(f"tensor {name} has NaN or Inf values")
                off = data_start + header[name]["data_offsets"][0]
                mv = memoryview(arr.reshape(-1).view(np.uint8))
                step = 1 << 26
                for s in range(0, len(mv), step):
                    os.pwrite(fd, mv[s:s + step], off + s)
                written.add(name)

            for name, arr in tensors:
                put(name, arr)
                if progress is not None:
                    progress.update(1)
            if tokenizer is not None:
                put("tokenizer.json", np.frombuffer(tok_bytes, dtype=np.uint8))
            missing = [n for n in expected if n not in written]
            if missing:
                raise NanoError(f"tensor {missing[0]} was never written "
                                f"({len(missing)} missing)")
            os.fsync(fd)
            # the pages written tensor by tensor sit in the page cache in small folios,
            # which the engine's huge-page-advised mapping cannot map with 2 MiB entries;
            # dropped now (clean after the fsync), the first load reads them back as 2 MiB
            # folios (Linux 6.x, ext4 and others) and decode streams them through huge pages
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise NanoError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        _unlink(tmp)
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
    except OSError:
        pass
    return header


def _unlink(p):
    try:
        os.unlink(p)
    except OSError:
        pass


# --------------------------------------------------------------------------- reader
@dataclass
class NanoFile:
    """An opened, validated .nano file. Tensors are read-only numpy views of an mmap."""
    path: str
    config: ModelConfig
    recipe: dict
    tokenizer_config: dict
    metadata: dict
    header: dict
    tensors: dict = field(repr=False)
    formats: dict = field(default_factory=dict)  # prefix -> "q4" | "q4a" | "q8" | "f16" | "f32"

    @property
    def group_size(self) -> int:
        return int(self.recipe.get("group_size", 32))

    def tokenizer(self):
        from ..tokenizer import Tokenizer
        t = self.tensors.get("tokenizer.json")
        if t is None:
            return None
        try:
            tj = bytes(t).decode("utf-8")
            return Tokenizer.from_strings(tj, self.tokenizer_config)
        except Exception as e:
            raise ModelFormatError(f"{self.path}: tensor tokenizer.json is not a valid "
                                   f"tokenizer ({e})") from None

    def weight(self, prefix: str) -> np.ndarray:
        """Dequantized float32 [N, K] weight of a linear prefix or "embed"."""
        from ..kernels import dequantize_q4, dequantize_q8
        f, t = self.formats[prefix], self.tensors
        if f in ("q4", "q4a"):
            q = t[prefix + ".qweight"]
            return dequantize_q4(q, t[prefix + ".scales"], t.get(prefix + ".mins"),
                                 self.group_size, 2 * q.shape[1])
        if f == "q8":
            return dequantize_q8(t[prefix + ".qweight8"], t[prefix + ".scales"])
        return np.asarray(t[prefix + ".weight"], dtype=np.float32)

    def norm(self, name: str) -> np.ndarray:
        """A norm vector as the reference model holds it (w, not 1 + w, for Gemma)."""
        v = np.asarray(self.tensors[name], dtype=np.float32)
        return v - 1.0 if self.config.norm_unit_offset else v.copy()

    def describe(self) -> str:
        r = self.recipe
        from collections import Counter
        c = Counter(self.formats.values())
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(c.items()))
        return (f"nano v{FORMAT_VERSION}: {r.get('method', '?')} int4 g{r.get('group_size')} "
                f"{'sym' if r.get('symmetric') else 'asym'}, embed {r.get('embed')}, head "
                f"{r.get('head')}, {r.get('bits_per_weight', '?')} bits/weight in linear layers "
                f"({kinds})")


def _fail(path, msg):
    raise ModelFormatError(f"{path}: {msg}")


def open_nano(path: str) -> NanoFile:
    """Open and validate a .nano file (see the module docstring for what is refused)."""
    if not os.path.exists(path):
        _fail(path, "no such file")
    if os.path.isdir(path):
        _fail(path, "is a directory, not a .nano file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            _fail(path, f"not a .nano file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER:
            _fail(path, f"not a .nano file (bad header length {n})")
        if 8 + n > size:
            _fail(path, f"truncated .nano file (header of {n} bytes, file of {size})")
        raw = f.read(n)
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"malformed .nano header (not JSON: {e})")
    if not isinstance(hdr, dict):
        _fail(path, "malformed .nano header (not a JSON object)")
    meta = hdr.pop("__metadata__", None)
    if not isinstance(meta, dict) or "nano.format_version" not in meta:
        _fail(path, "not a .nano file (safetensors without nano.format_version metadata)")
    ver = meta["nano.format_version"]
    if ver != str(FORMAT_VERSION):
        _fail(path, f"unsupported .nano format version {ver!r} (this reader supports "
                    f"{FORMAT_VERSION})")
    for key in ("nano.config", "nano.quant", "nano.tokenizer_config"):
        if not isinstance(meta.get(key), str):
            _fail(path, f"metadata field {key} is missing")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["nano.config"]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        _fail(path, f"metadata field nano.config is invalid ({e})")
    try:
        recipe = json.loads(meta["nano.quant"])
        tok_cfg = json.loads(meta["nano.tokenizer_config"])
        assert isinstance(recipe, dict) and isinstance(tok_cfg, dict)
    except (json.JSONDecodeError, AssertionError):
        _fail(path, "metadata field nano.quant or nano.tokenizer_config is not a JSON object")
    g = recipe.get("group_size")
    if g not in GROUP_SIZES:
        _fail(path, f"metadata field nano.quant has group_size {g!r} (allowed "
                    f"{', '.join(map(str, GROUP_SIZES))})")

    data_start = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > 0 else None
    tensors = {}
    for name, e in hdr.items():
        try:
            dt = _DTYPES[e["dtype"]]
            shape = tuple(int(s) for s in e["shape"])
            a, b = (int(x) for x in e["data_offsets"])
            assert all(s >= 0 for s in shape)
        except KeyError as k:
            if isinstance(e, dict) and "dtype" in e and e["dtype"] not in _DTYPES:
                _fail(path, f"tensor {name} has unsupported dtype {e['dtype']!r}")
            _fail(path, f"malformed .nano header: tensor {name} lacks {k}")
        except (TypeError, ValueError, AssertionError):
            _fail(path, f"malformed .nano header entry for tensor {name}")
        nb = int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
        if b - a != nb or a < 0:
            _fail(path, f"tensor {name}: data_offsets {[a, b]} do not match its shape "
                        f"{list(shape)} and dtype {e['dtype']}")
        if data_start + b > size:
            _fail(path, f"truncated .nano file: tensor {name} runs past the end of the file "
                        f"({data_start + b} > {size} bytes)")
        tensors[name] = np.frombuffer(mm, dtype=dt, count=nb // np.dtype(dt).itemsize,
                                      offset=data_start + a).reshape(shape)

    formats = _validate_tensors(path, cfg, recipe, tensors)
    cfg.extra = dict(cfg.extra, quant=None)
    nf = NanoFile(os.path.abspath(path), cfg, recipe, tok_cfg, meta, hdr, tensors, formats)
    cfg.extra["quant"] = nf.describe()
    return nf


def _validate_tensors(path, cfg: ModelConfig, recipe: dict, tensors: dict) -> dict:
    """Check names, dtypes and shapes against the config; returns prefix -> format."""
    g = recipe["group_size"]
    seen, formats = set(), {}

    def need(name, dtypes, shape):
        t = tensors.get(name)
        if t is None:
            _fail(path, f"tensor {name} is missing")
        if np.dtype(t.dtype) not in [np.dtype(d) for d in dtypes]:
            _fail(path, f"tensor {name} has dtype {dtype_name(t.dtype)}, expected "
                        f"{' or '.join(dtype_name(d) for d in dtypes)}")
        if tuple(t.shape) != tuple(shape):
            _fail(path, f"tensor {name} has shape {list(t.shape)}, expected {list(shape)} "
                        "for this config")
        seen.add(name)

    prefixes = [("embed", cfg.vocab_size, cfg.dim)] + linear_shapes(cfg)
    for prefix, n, k in prefixes:
        if prefix + ".qweight" in tensors:
            if k % QK:
                _fail(path, f"tensor {prefix}.qweight: K={k} is not a multiple of {QK}")
            need(prefix + ".qweight", [np.uint8], (n, k // 2))
            need(prefix + ".scales", [np.float16], (n, ngroups(k, g)))
            if prefix + ".mins" in tensors:
                need(prefix + ".mins", [np.float16], (n, ngroups(k, g)))
                formats[prefix] = "q4a"
            else:
                formats[prefix] = "q4"
        elif prefix + ".qweight8" in tensors:
            need(prefix + ".qweight8", [np.int8], (n, k))
            need(prefix + ".scales", [np.float16], (n, k // Q8_GROUP))
            formats[prefix] = "q8"
        elif prefix + ".weight" in tensors:
            need(prefix + ".weight", [np.float16, np.float32], (n, k))
            formats[prefix] = "f16" if tensors[prefix + ".weight"].dtype == np.float16 else "f32"
        else:
            _fail(path, f"tensor {prefix}.qweight (or .qweight8 / .weight) is missing")
    for name, ln in norm_shapes(cfg):
        need(name, [np.float32, np.float16], (ln,))
    if "tokenizer.json" in tensors:
        need("tokenizer.json", [np.uint8], tensors["tokenizer.json"].shape)
        if tensors["tokenizer.json"].ndim != 1:
            _fail(path, "tensor tokenizer.json must be 1-D")
    extra = [t for t in tensors if t not in seen and not t.startswith("tokenizer.")]
    if extra:
        _fail(path, f"unexpected tensor {extra[0]} for this config"
                    + (f" ({len(extra)} unexpected)" if len(extra) > 1 else ""))
    return formats


def read_tokenizer(path: str):
    return open_nano(path).tokenizer()


def read_config(path: str) -> ModelConfig:
    return open_nano(path).config


# --------------------------------------------------------------------------- reference model
def _kernels_available() -> bool:
    if os.environ.get("NANO_Q4_KERNELS", "1") == "0":
        return False
    try:
        from .. import kernels
        kernels.variants()
        return hasattr(kernels, "Q4Linear")
    except Exception:
        return False


def load_reference(path: str, dtype=None, with_model: bool = True, use_kernels=None):
    """LoadedModel(kind="nano") of a .nano file.

    The reference model gets the dequantized weights (embeddings, Q8/f16 layers, norms);
    Q4 layers run through the native kernels (``kernels.Q4Linear``, the torch op
    ``torch.ops.nano.q4_linear``) when they are built, else they are dequantized too
    (also when use_kernels=False or NANO_Q4_KERNELS=0).
    """
    import torch
    from ..loader import LoadedModel
    dtype = dtype or torch.float32
    nf = open_nano(path)
    tok = nf.tokenizer()
    if not with_model:
        return LoadedModel(nf.config, tok, None, nf.path, "nano")
    if use_kernels is None:
        use_kernels = _kernels_available()
    model = build_reference_model(nf, dtype, use_kernels)
    return LoadedModel(nf.config, tok, model, nf.path, "nano")


def build_reference_model(nf: NanoFile, dtype, use_kernels: bool):
    import torch
    from ..model import Transformer
    cfg = nf.config
    with torch.device("meta"):
        m = Transformer(cfg)
    state = {}
    q4_prefixes = [p for p, f in nf.formats.items() if f in ("q4", "q4a") and p != "embed"]
    if use_kernels:
        from ..kernels import Q4Linear
        for p in q4_prefixes:
            parent_name, _, child = p.rpartition(".")
            parent = m.get_submodule(parent_name) if parent_name else m
            lin = getattr(parent, child)
            q = Q4Linear(lin.in_features, lin.out_features, nf.group_size,
                         symmetric=nf.formats[p] == "q4")
            for b in ("qweight", "scales", "mins"):
                if getattr(q, b) is not None:
                    getattr(q, b).copy_(torch.from_numpy(np.array(nf.tensors[f"{p}.{b}"])))
            setattr(parent, child, q)
        dequant = [p for p in nf.formats if p not in q4_prefixes]
    else:
        dequant = list(nf.formats)
    for p in dequant:
        state[p + ".weight"] = torch.from_numpy(nf.weight(p)).to(dtype)
    for name, _ in norm_shapes(cfg):
        state[name] = torch.from_numpy(nf.norm(name)).to(dtype)
    missing, unexpected = m.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not any(k.startswith(p + ".") for p in q4_prefixes)
               or not use_kernels]
    if missing or unexpected:
        raise ModelFormatError(f"{nf.path}: weights do not match the model: missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}")
    m.eval()
    return m
