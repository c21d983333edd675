#!/usr/bin/env python3
"""Runs the op fuzz (tests/test_fuzz_ops.py) under AddressSanitizer and
valgrind memcheck: the check that the C++ entry points never read or write
out of bounds, whatever arguments reach them.

1. AddressSanitizer: builds the CPU extension again into a temporary folder
   with -fsanitize=address (torch's CppExtension, the CPU sources and
   flags of resnet_fast/_native/spec.py, no CUDA), then runs the fuzz
   module in a subprocess with the ASan runtime preloaded
   (LD_PRELOAD=$(gcc -print-file-name=libasan.so), ASAN_OPTIONS=detect_leaks=0:
   Python and torch keep memory until exit) and that build standing in for resnet_fast._C.
2. valgrind memcheck, when valgrind is installed: the in-tree build (the
   one users run) on a smaller set of examples, PYTHONMALLOC=malloc so that
   valgrind sees Python's allocations. Python, torch and OpenMP have
   memcheck reports of their own; the run fails on reports whose stack
   passes through resnet_fast's library, or on a failing test.

The Triton tests are left out (pure Python under the interpreter: nothing
native of this project to check). Not part of the default test run:

    python tools/sanitize_ops.py [--examples 300] [--valgrind-examples 20]
                                 [--skip-asan] [--skip-valgrind] [--build-dir DIR]

Exits non-zero when a sanitizer reports an error or a fuzz test fails.
"""

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join("tests", "test_fuzz_ops.py")
# The native ops only: the Triton tests exercise no native code of this project.
SELECTION = "not triton"

# Loads the ASan build as resnet_fast._C before resnet_fast imports its own,
# then runs pytest: the ops register once, from the sanitized library.
BOOTSTRAP = """
import importlib.util, sys
import torch
spec = importlib.util.spec_from_file_location("resnet_fast._C", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["resnet_fast._C"] = module
spec.loader.exec_module(module)
import ctypes
# The sanitized build is the one loaded, and the ASan runtime is live.
assert module.__file__ == sys.argv[1] and hasattr(ctypes.CDLL(None), "__asan_report_load8")
print("ASan build loaded:", module.__file__, flush=True)
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-x", sys.argv[2], "-k", sys.argv[3]]))
"""


def extension_spec():
    """resnet_fast/_native/spec.py, loaded by path (importing resnet_fast
    would load the uninstrumented _C into this process)."""
    path = os.path.join(ROOT, "resnet_fast", "_native", "spec.py")
    module_spec = importlib.util.spec_from_file_location("_resnet_fast_extension_spec", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def build_asan(build_dir: str) -> str:
    """Compiles the CPU extension with AddressSanitizer into ``build_dir``;
    returns the library's path. Built through setuptools, never loaded here:
    an ASan library only loads in a process that starts with the runtime."""
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    spec = extension_spec()
    # The project's flags, with -O1 -g for readable reports instead of -O3.
    cxx = [f for f in spec.CXX_FLAGS if not f.startswith("-O")]
    cxx += ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
    extension = CppExtension(
        "_C",
        [os.path.join(ROOT, s) for s in spec.cpu_sources(ROOT)],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fsanitize=address", *spec.LINK_FLAGS],
    )
    setup(
        name="resnet_fast_asan",
        ext_modules=[extension],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        script_args=["-q", "build_ext", "--build-temp", os.path.join(build_dir, "temp"),
                     "--build-lib", build_dir],
    )  # fmt: skip
    built = glob.glob(os.path.join(build_dir, "_C*.so"))
    if len(built) != 1:
        raise SystemExit(f"ASan build: expected one _C*.so in {build_dir}, found {built}")
    return built[0]


def gcc_library(name: str) -> str:
    path = subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise SystemExit(f"{name} not found (gcc -print-file-name={name}: {path!r})")
    return os.path.realpath(path)


def asan_preload() -> str:
    """The ASan runtime, then libstdc++: Python itself does not link libstdc++,
    and without it loaded at start the runtime's __cxa_throw interceptor finds
    no real __cxa_throw and aborts on the first C++ exception (every refused
    call throws one)."""
    return " ".join([gcc_library("libasan.so"), gcc_library("libstdc++.so.6")])


def fuzz_env(examples: int) -> dict:
    env = dict(os.environ)
    env["RESNET_FAST_FUZZ_EXAMPLES"] = str(examples)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RESNET_FAST_POISON_OUTPUTS"] = "1"
    env.setdefault("TRITON_INTERPRET", "1")
    return env


def run_asan(examples: int, build_dir: str | None) -> bool:
    keep = build_dir is not None
    build_dir = build_dir or tempfile.mkdtemp(prefix="resnet_fast_asan_")
    try:
        built = glob.glob(os.path.join(build_dir, "_C*.so"))
        if keep and len(built) == 1:
            library = built[0]
            print(f"== ASan: reusing {library} (delete it to rebuild)", flush=True)
        else:
            start = time.time()
            print(f"== ASan: building the CPU extension in {build_dir}", flush=True)
            library = build_asan(build_dir)
            print(f"   built in {time.time() - start:.0f} s: {library}", flush=True)
        env = fuzz_env(examples)
        env["LD_PRELOAD"] = asan_preload()
        # Leaks: Python and torch hold memory until exit by design.
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:symbolize=1"
        print(f"== ASan: {FUZZ} -k '{SELECTION}', {examples} examples per test", flush=True)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", BOOTSTRAP, library, FUZZ, SELECTION],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        output = proc.stdout + proc.stderr
        print(output[-6000:])
        report = "ERROR: AddressSanitizer" in output
        ok = proc.returncode == 0 and not report
        print(
            f"== ASan: {'clean' if ok else 'FAILED'} (exit {proc.returncode}, "
            f"{'a report' if report else 'no report'}, {time.time() - start:.0f} s)",
            flush=True,
        )
        return ok
    finally:
        if not keep:
            shutil.rmtree(build_dir, ignore_errors=True)


def memcheck_errors(log: str) -> tuple[int, list[str]]:
    """(error reports in all, those whose stack passes through this project's
    library). Python, torch and OpenMP have reports of their own under
    memcheck (uninitialised reads in optimized code, mostly): only the
    project's count."""
    blocks, current = [], []
    for line in log.splitlines():
        text = line.split("== ", 1)[1] if "== " in line else ""
        if text.strip():
            current.append(text)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    kinds = ("Invalid ", "Conditional jump", "Use of uninitialised", "Syscall param", "Mismatched")
    errors = [b for b in blocks if b.startswith(kinds)]
    ours = [b for b in errors if "resnet_fast" in b or "/_C." in b]
    return len(errors), ours


def run_valgrind(examples: int) -> bool | None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("== valgrind: not installed, memcheck skipped", flush=True)
        return None
    env = fuzz_env(examples)
    env["PYTHONMALLOC"] = "malloc"
    with tempfile.TemporaryDirectory(prefix="resnet_fast_valgrind_") as tmp:
        log_path = os.path.join(tmp, "memcheck.log")
        cmd = [
            valgrind, "--tool=memcheck", "--leak-check=no", f"--log-file={log_path}",
            "--num-callers=40",
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", FUZZ,
            "-k", SELECTION,
        ]  # fmt: skip
        print(f"== valgrind memcheck: {FUZZ} -k '{SELECTION}', {examples} examples per test",
              flush=True)  # fmt: skip
        start = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        with open(log_path) as f:
            log = f.read()
    print("\n".join((proc.stdout + proc.stderr).splitlines()[-5:]))
    total, ours = memcheck_errors(log)
    for block in ours[:5]:
        print(block, "\n")
    ok = proc.returncode == 0 and not ours
    print(f"== valgrind: {'clean' if ok else 'FAILED'} (pytest exit {proc.returncode}; "
          f"{len(ours)} of {total} memcheck reports in resnet_fast's library; "
          f"{time.time() - start:.0f} s)", flush=True)  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="per test, under ASan")
    parser.add_argument("--valgrind-examples", type=int, default=20, help="per test")
    parser.add_argument("--skip-asan", action="store_true")
    parser.add_argument("--skip-valgrind", action="store_true")
    parser.add_argument(
        "--build-dir", help="keep the ASan build here, and reuse it when already built"
    )
    args = parser.parse_args()
    results = []
    if not args.skip_asan:
        results.append(run_asan(args.examples, args.build_dir))
    if not args.skip_valgrind:
        results.append(run_valgrind(args.valgrind_examples))
    return 0 if all(r is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
