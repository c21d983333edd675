"""Builds resnet_fast._C at first import when the install shipped sources
instead of a compiled library (a plain ``pip install .``: pip's isolated
build environment has no torch to compile against).

The build runs torch.utils.cpp_extension.load on the csrc/ shipped inside the
package, with the sources and flags of spec.py, into
a cache folder keyed by everything the binary depends on: the sources, the
torch version, the flags, the CUDA choice. Later imports load the cached
library in milliseconds; concurrent first imports (DDP ranks, pytest-xdist
workers) wait on a file lock and build once.

Environment:
    RESNET_FAST_CACHE_DIR: the cache's root (default ~/.cache/resnet_fast,
        or $XDG_CACHE_HOME/resnet_fast).
    RESNET_FAST_CUDA, TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS: as for the
        ahead-of-time build (README, Set up).
"""

import fcntl
import hashlib
import importlib.util
import os
import sys
import time
from types import ModuleType

import torch

from . import spec

# resnet_fast/, which holds csrc/ in an installed package.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sources_root() -> str | None:
    """The folder holding csrc/: the installed package, or a source checkout."""
    for root in (PACKAGE_DIR, os.path.dirname(PACKAGE_DIR)):
        if os.path.isfile(os.path.join(root, "csrc", "registration.cpp")):
            return root
    return None


def cache_root() -> str:
    if os.environ.get("RESNET_FAST_CACHE_DIR"):
        return os.environ["RESNET_FAST_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resnet_fast")


def build_plan(root: str) -> dict:
    """Sources, flags and the cache key of the build for the installed torch.

    Raises:
        RuntimeError: from spec.want_cuda (a forced CUDA build
            that is impossible).
    """
    cuda, home, why = spec.want_cuda(root, torch.version.cuda)
    sources = spec.cpu_sources(root)
    cflags, cuda_flags = list(spec.CXX_FLAGS), []
    archs = ""
    if cuda:
        archs = spec.cuda_archs()
        sources += spec.cuda_sources(root)
        cflags += spec.cuda_defines(archs)
        cuda_flags = spec.NVCC_FLAGS + spec.cuda_defines(archs)
    digest = hashlib.sha256()
    torch_build = f"{torch.__version__} {torch.version.git_version} {torch.version.cuda}"
    parts = (torch_build, sys.version, repr(sources), repr(cflags), repr(cuda_flags),
             repr(spec.LINK_FLAGS), archs, home or "")  # fmt: skip
    for part in parts:
        digest.update(part.encode() + b"\0")
    for rel in spec.all_source_files(root):
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            digest.update(f.read())
    return {
        "sources": [os.path.join(root, s) for s in sources],
        "cflags": cflags,
        "cuda_flags": cuda_flags,
        "ldflags": list(spec.LINK_FLAGS),
        "cuda": cuda,
        "cuda_home": home,
        "cpu_only_reason": why,
        "archs": archs,
        "key": digest.hexdigest()[:16],
    }


def load() -> ModuleType:
    """The compiled resnet_fast._C, built on first use and cached.

    Raises:
        ImportError: no sources shipped, the cache folder is not writable,
            or the build failed (the compiler's output is in the message).
    """
    root = sources_root()
    if root is None:
        raise ImportError("resnet_fast._C is not built and no csrc/ sources were installed")
    try:
        plan = build_plan(root)
    except RuntimeError as error:
        raise ImportError(f"resnet_fast: cannot build the C++ extension: {error}") from error
    folder = os.path.join(cache_root(), plan["key"])
    try:
        os.makedirs(folder, exist_ok=True)
        lock = open(os.path.join(folder, "build.lock"), "w")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise ImportError(
            f"resnet_fast: cannot write the build cache {folder} ({error}); set "
            "RESNET_FAST_CACHE_DIR to a writable folder"
        ) from error
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build; the others wait, then load it
        try:
            return _build_or_load(plan, folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_or_load(plan: dict, folder: str) -> ModuleType:
    done = os.path.join(folder, "built")
    library = os.path.join(folder, "_C.so")
    if os.path.exists(done) and os.path.exists(library):
        return _import(library)
    what = "C++ and CUDA" if plan["cuda"] else "C++"
    minutes = "~15 min" if plan["cuda"] else "~3 min"
    print(
        f"resnet_fast: building the {what} extension for torch {torch.__version__} "
        f"(first import, {minutes}), cached in {folder}",
        file=sys.stderr,
        flush=True,
    )
    if plan["cuda"]:
        spec.use_cuda_home(plan["cuda_home"])
        os.environ["TORCH_CUDA_ARCH_LIST"] = plan["archs"]
    elif torch.version.cuda is not None:
        print(f"resnet_fast: CPU kernels only: {plan['cpu_only_reason']}", file=sys.stderr)
    from torch.utils import cpp_extension

    # cpp_extension's own lock file, left behind by a build that was killed,
    # would make load() wait forever; holding build.lock, no one else builds.
    stale = os.path.join(folder, "lock")
    if os.path.exists(stale):
        os.remove(stale)
    start = time.time()
    try:
        module = cpp_extension.load(
            name="_C",  # PYBIND11_MODULE(_C, m) in csrc/registration.cpp
            sources=plan["sources"],
            extra_cflags=plan["cflags"],
            extra_cuda_cflags=plan["cuda_flags"],
            extra_ldflags=plan["ldflags"],
            build_directory=folder,
            with_cuda=plan["cuda"],
            is_python_module=True,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as error:
        raise ImportError(
            f"resnet_fast: building the C++ extension in {folder} failed: {error}\n"
            "Set RESNET_FAST_CUDA=0 for a CPU-only build."
        ) from error
    open(done, "w").close()
    print(f"resnet_fast: built in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return _register(module)


def _import(library: str) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location("resnet_fast._C", library)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return _register(module)


def _register(module: ModuleType) -> ModuleType:
    """Makes the library resnet_fast._C, as an ahead-of-time build is."""
    sys.modules["resnet_fast._C"] = module
    sys.modules["resnet_fast"]._C = module
    return module
