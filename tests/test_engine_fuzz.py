"""Fuzz the .nano loader: 10,000 mutated copies of a small Gemma-3-shaped file through
nano_model_load (and, when a mutant still loads, a context + forward + sampling) in a
build with AddressSanitizer and UBSan. Every mutant must load or be refused with a
message; any sanitizer report fails the run. Runtime: about 30 s (build included)."""
import subprocess

from engine_helpers import build_asan, fuzz_config, write_random_nano


def test_loader_fuzz_asan(tmp_path):
    seed = write_random_nano(fuzz_config(), str(tmp_path / "seed.nano"))
    exe = build_asan(str(tmp_path / "build"))
    r = subprocess.run([exe, seed, "10000", "1"], capture_output=True, text=True, timeout=600,
                       env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert "10000 files" in r.stdout and "0 without message" in r.stdout
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
    print(r.stdout)
