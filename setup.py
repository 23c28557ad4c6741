"""Build and install nano_runtime.

The native core (kernels/ and kernels/engine/) is plain C11 built into one
shared library, ``nano_runtime/libnano*.so``, that the Python side loads with
ctypes (no Python C API inside, so the same sources build for Android).

Each ISA lives in its own file and is compiled with its own flags, decided
by the file name (the same rule as kernels/Makefile and kernels/CMakeLists.txt):

    *_avx2.c    -mavx2 -mfma -mf16c               (x86-64 only)
    *_avx512.c  -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512dq ... (x86-64 only)
    *_neon.c    -march=armv8.2-a+dotprod+fp16     (aarch64 only)
    anything else: portable C11
"""
import glob
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
MACHINE = platform.machine().lower()
IS_X86 = MACHINE in ("x86_64", "amd64", "i686", "x86")
IS_ARM64 = MACHINE in ("aarch64", "arm64")

BASE_FLAGS = ["-std=c11", "-O3", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-D_GNU_SOURCE", "-fvisibility=hidden", "-DNANO_BUILDING_LIB"]
ISA_FLAGS = {
    "_avx2.c": (IS_X86, ["-mavx2", "-mfma", "-mf16c"]),
    "_avx512.c": (IS_X86, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                           "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]),
    "_neon.c": (IS_ARM64, ["-march=armv8.2-a+dotprod+fp16"]),
}


def native_sources():
    """All C sources of the native library, relative to the repo root."""
    pats = ["kernels/src/*.c", "kernels/engine/*.c"]
    out = []
    for pat in pats:
        for path in sorted(glob.glob(os.path.join(HERE, pat))):
            rel = os.path.relpath(path, HERE)
            keep = True
            for suffix, (enabled, _) in ISA_FLAGS.items():
                if rel.endswith(suffix):
                    keep = enabled
            if keep:
                out.append(rel)
    return out


def flags_for(source):
    for suffix, (_, flags) in ISA_FLAGS.items():
        if source.endswith(suffix):
            return BASE_FLAGS + flags
    return BASE_FLAGS


class BuildNative(build_ext):
    """Compile every source with its own flags, link one shared library."""

    def build_extension(self, ext):
        if ext.name != "nano_runtime.libnano":
            return super().build_extension(ext)
        objects = []
        for src in ext.sources:
            objects += self.compiler.compile(
                [src], output_dir=self.build_temp,
                include_dirs=["kernels/include", "kernels/src", "kernels/engine"],
                extra_postargs=flags_for(src))
        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        self.compiler.link_shared_object(objects, out, libraries=["m", "pthread"],
                                         extra_postargs=["-pthread"])

    def get_export_symbols(self, ext):  # no PyInit_*: loaded with ctypes
        return []


setup(
    name="nano_runtime",
    version="0.1.0",
    description="Distill, quantize and run small language models on phones",
    packages=["nano_runtime", "nano_runtime.formats", "nano_runtime.quant",
              "nano_runtime.distill", "nano_runtime.export", "nano_runtime.models"],
    # model cards live at the top of the repo (models/) and install as nano_runtime.models
    package_dir={"nano_runtime.models": "models"},
    package_data={"nano_runtime.models": ["*.json"], "nano_runtime": ["data/*.txt"]},
    ext_modules=[Extension("nano_runtime.libnano", sources=native_sources())],
    cmdclass={"build_ext": BuildNative},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "numpy",
        "safetensors",
        "tokenizers",
        "gguf",
        "jinja2",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "pexpect", "matplotlib"],
        "bench": ["matplotlib", "llama-cpp-python", "onnxruntime"],
        "export": ["executorch==1.5.1", "torchao==0.18.0", "onnxruntime-genai", "onnx", "onnx-ir",
                   "onnxruntime", "transformers"],
    },
    entry_points={"console_scripts": ["nano=nano_runtime.cli:main"]},
)
