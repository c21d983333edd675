"""What a measurement depends on: versions, hardware, threads, allocator.

Every JSON result carries ``describe(device)`` so that a figure can always be
traced to the machine, the build and the commit it came from.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import torch

import resnet_fast

from ..conv.choice_store import cpu_name

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STEADY_MMAP_THRESHOLD = 1_000_000_000
_STEADY_TRIM_THRESHOLD = 2_000_000_000

_allocator_setting = "default"


def git_commit() -> str | None:
    """The commit of the resnet_fast source tree, with ``+dirty`` for local
    changes (results under benchmarks/results/ aside: they are what the
    benchmarks write, not what they measure); None when resnet_fast was not
    imported from a git checkout."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(resnet_fast.__file__)))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", source, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def gpu(device: torch.device) -> dict | None:
    """Name, compute capability and memory of a CUDA device; None elsewhere."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_GiB": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
    }


def set_threads(threads: int | None) -> int:
    """Fixes torch's intra-op thread count (None keeps torch's default) and
    returns the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def steady_allocator() -> str:
    """Keeps glibc from returning freed memory to the system.

    Large tensors are otherwise mmapped fresh on every allocation and pay a
    page fault per 4 KiB page on first touch, which on a busy VM scatters the
    timings of memory-bound kernels by tens of percent. Raising the mmap and
    trim thresholds (as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    do from the environment) reuses heap pages instead, for every
    implementation alike.

    Returns:
        a description of the allocator setting, recorded with the results.
    """
    global _allocator_setting
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _allocator_setting = "default (not glibc)"
        return _allocator_setting
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        ok = False
    _allocator_setting = (
        f"glibc mallopt mmap_threshold={_STEADY_MMAP_THRESHOLD} "
        f"trim_threshold={_STEADY_TRIM_THRESHOLD}"
        if ok
        else "default (mallopt refused)"
    )
    return _allocator_setting


def child_allocator_env() -> dict[str, str]:
    """The environment that gives a child process this process's allocator
    setting (glibc reads it at start-up): {} unless steady_allocator() ran."""
    if not _allocator_setting.startswith("glibc mallopt"):
        return {}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(_STEADY_MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(_STEADY_TRIM_THRESHOLD),
    }


def allocator_setting() -> str:
    """How the host allocator was set for this run (see ``steady_allocator``)."""
    from_env = [k for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ]
    if from_env and _allocator_setting == "default":
        return "environment: " + " ".join(f"{k}={os.environ[k]}" for k in from_env)
    return _allocator_setting


def optional_version(module: str) -> str | None:
    """The version of an optional package, None when it is not installed."""
    try:
        imported = __import__(module)
    except Exception:  # noqa: BLE001 - a broken optional install counts as absent
        return None
    return getattr(imported, "__version__", "unknown")


def describe(device: torch.device) -> dict:
    """Everything a result depends on, for its JSON file.

    Args:
        device: the device the measurement ran on.
    """
    return {
        "device": str(device),
        "cpu": cpu_name(),
        "gpu": gpu(device),
        "threads": torch.get_num_threads(),
        "allocator": allocator_setting(),
        "resnet_fast": resnet_fast.__version__,
        "commit": git_commit(),
        "build_info": resnet_fast.build_info(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "triton": optional_version("triton"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }
