"""Locate and load the native library (libnano) built by setup.py.

The library has no Python C API inside: bindings use ctypes, so the same C
sources serve Android (JNI) and the host.
"""
import ctypes
import glob
import os

_LIB = None


def lib_path():
    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ.get("NANO_LIB")
    if env:
        return env
    cands = sorted(glob.glob(os.path.join(here, "libnano*.so")))
    if not cands:
        raise OSError("native library libnano is not built: run `pip install -e .` "
                      "or `python setup.py build_ext --inplace`")
    return cands[0]


def load():
    """Return the ctypes handle of libnano (loaded once)."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(lib_path())
        lib.nano_version.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def version():
    return load().nano_version().decode()
