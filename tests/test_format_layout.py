"""The .nano layout is specified twice (kernels/include/nano_format.h and the docstring of
nano_runtime/formats/nano_file.py); check both halves and the writer agree bit for bit."""
import json
import os
import re
import struct
import subprocess

import numpy as np
import pytest

from nano_runtime.config import ModelConfig
from nano_runtime.formats import nano_file as nf
from nano_runtime.kernels import unpack_q4_codes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "kernels", "include", "nano_format.h")


def _norm(s):
    return re.sub(r"\s+", " ", s).strip()


def test_constants_match_header():
    src = open(HEADER).read()
    defs = dict(re.findall(r"#define (NANO_\w+)\s+(\d+)", src))
    assert int(defs["NANO_FORMAT_VERSION"]) == nf.FORMAT_VERSION
    assert int(defs["NANO_QK"]) == nf.QK
    assert int(defs["NANO_Q4_BLOCK_BYTES"]) == nf.Q4_BLOCK_BYTES
    assert int(defs["NANO_Q8_GROUP"]) == nf.Q8_GROUP


def test_docstring_mirrors_header_layout_text():
    comment = open(HEADER).read().split("*/")[0]
    lines = [_norm(l.lstrip(" /*")) for l in comment.splitlines()]
    start = next(i for i, l in enumerate(lines) if l.startswith("P.qweight uint8"))
    end = next(i for i, l in enumerate(lines) if "(exactly GGUF Q8_0)" in l)
    doc = _norm(nf.__doc__)
    for l in lines[start:end + 1]:
        if l:
            assert l in doc, f"nano_format.h line not in nano_file docstring: {l!r}"


def _tiny_file(tmp_path, group_size=32, symmetric=False):
    from nano_runtime.quant.pipeline import quantize_model
    out = str(tmp_path / "t.nano")
    quantize_model("tiny-llama", out, group_size=group_size, symmetric=symmetric,
                   show_progress=False)
    return out


def test_header_is_aligned_safetensors(tmp_path):
    out = _tiny_file(tmp_path)
    raw = open(out, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 64 == 0
    hdr = json.loads(raw[8:8 + n])
    ents = sorted((v["data_offsets"], k) for k, v in hdr.items() if k != "__metadata__")
    pos = 0
    for (a, b), k in ents:  # no holes, exact end: any safetensors reader opens it
        assert a == pos, k
        pos = b
    assert 8 + n + pos == len(raw)
    for (a, b), k in ents:
        if (b - a) % 64 == 0 and not k.startswith("tokenizer."):
            assert a % 64 == 0, k
    from safetensors import safe_open
    with safe_open(out, "np") as f:
        assert f.metadata()["nano.format_version"] == "1"


@pytest.mark.parametrize("group_size,symmetric", [(32, False), (128, True)])
def test_c_header_reads_writer_codes_bit_for_bit(tmp_path, group_size, symmetric):
    """Compile a C program around nano_q4_code() and check it decodes the file's bytes."""
    out = _tiny_file(tmp_path, group_size, symmetric)
    f = nf.open_nano(out)
    name = "layers.0.mlp.w_down.qweight"
    qw = np.array(f.tensors[name])
    n, kh = qw.shape
    off = 8 + struct.unpack("<Q", open(out, "rb").read(8))[0] + f.header[name]["data_offsets"][0]
    c = tmp_path / "rd.c"
    c.write_text(r'''
#include <stdio.h>
#include <stdlib.h>
#include "nano_format.h"
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb"); long off = atol(argv[2]); int n = atoi(argv[3]), k = atoi(argv[4]);
    unsigned char *buf = malloc((size_t)n * k / 2);
    fseek(f, off, SEEK_SET); if (fread(buf, 1, (size_t)n * k / 2, f) != (size_t)n * k / 2) return 1;
    for (int r = 0; r < n; r++) for (int j = 0; j < k; j++) putchar('a' + nano_q4_code(buf + (size_t)r * k / 2, j));
    return 0;
}''')
    exe = tmp_path / "rd"
    subprocess.run(["gcc", "-O1", "-I", os.path.dirname(HEADER), str(c), "-o", str(exe)], check=True)
    res = subprocess.run([str(exe), out, str(off), str(n), str(2 * kh)], capture_output=True, check=True)
    c_codes = np.frombuffer(res.stdout, dtype=np.uint8) - ord("a")
    py_codes = unpack_q4_codes(qw).reshape(-1)
    assert np.array_equal(c_codes, py_codes)
    # and the docstring's formula is what the reader dequantizes with
    s = np.repeat(np.array(f.tensors["layers.0.mlp.w_down.scales"], np.float32), group_size, 1)[:, :2 * kh]
    codes = py_codes.reshape(n, 2 * kh).astype(np.float32)
    if symmetric:
        want = s * (codes - 8)
    else:
        want = s * codes + np.repeat(np.array(f.tensors["layers.0.mlp.w_down.mins"], np.float32),
                                     group_size, 1)[:, :2 * kh]
    assert np.array_equal(f.weight("layers.0.mlp.w_down"), want)


def test_norms_store_effective_multiplier(tmp_path):
    from nano_runtime.quant.pipeline import quantize_model
    out = str(tmp_path / "g.nano")
    quantize_model("tiny-gemma3", out, show_progress=False)
    f = nf.open_nano(out)
    assert f.config.norm_unit_offset
    # random init of a Gemma norm is w = 0, so the file holds exactly 1 + 0
    assert np.all(np.array(f.tensors["layers.0.attn_norm.weight"]) == 1.0)
    assert np.all(f.norm("layers.0.attn_norm.weight") == 0.0)
