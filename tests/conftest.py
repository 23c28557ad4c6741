"""Shared fixtures: the CLI as a subprocess, real models loaded once per session."""
import functools
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, input=None, timeout=600, env=None):
    """Run `python -m nano_runtime ARGS` and return the CompletedProcess (text mode)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "nano_runtime", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


def one_error(r, *needles):
    """Assert a CLI run failed with exit 2 and one `error: ` line naming every needle."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in last, last


@functools.lru_cache(maxsize=None)
def load_real(name):
    from nano_runtime.loader import load_model
    lm = load_model(name)
    lm.model.eval()
    return lm


@pytest.fixture(scope="session")
def smollm2():
    return load_real("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3():
    return load_real("gemma3-270m")


@pytest.fixture
def eval_text_file(tmp_path):
    from nano_runtime.data import write_text
    return write_text("eval", str(tmp_path / "eval.txt"))
