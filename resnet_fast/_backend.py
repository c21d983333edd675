"""Backend selection for the fused ops.

The default picks by device: CPU tensors run the C++ kernels, CUDA tensors the
CUDA kernels when they were built. ``use_backend(name)`` (a context manager)
and the environment variable ``RESNET_FAST_BACKEND`` (read when resnet_fast is
imported) override the choice.
"""

import contextlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Iterator

import torch

from . import _ops  # the contract of torch.ops.resnet_fast: fake kernels, autograd
from ._native import _BUILD_INFO

BACKENDS = ("cpu", "cuda", "triton", "reference")

_state = threading.local()
_warned: set[str] = set()


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Routes the fused ops through one backend inside a ``with`` block.

    Args:
        name: "cpu" (C++ kernels), "cuda" (CUDA kernels), "triton" or
            "reference" (pure PyTorch, resnet_fast.reference).

    Example:
        >>> with resnet_fast.use_backend("reference"):
        ...     y = resnet_fast.functional.add_relu(a, b)
    """
    _check_name(name, "backend")
    previous = getattr(_state, "name", None)
    _state.name = name
    try:
        yield
    finally:
        _state.name = previous


# Read once, at import: the environment is a process-wide default.
_ENV_BACKEND = os.environ.get("RESNET_FAST_BACKEND", "") or None
if _ENV_BACKEND is not None:
    _check_name(_ENV_BACKEND, "RESNET_FAST_BACKEND")


def current_backend() -> str | None:
    """The backend forced by use_backend() or RESNET_FAST_BACKEND, if any."""
    name = getattr(_state, "name", None)
    return name if name is not None else _ENV_BACKEND


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def resolve(device: torch.device) -> str:
    """The backend that runs an op on tensors of ``device``."""
    forced = current_backend()
    native = _BUILD_INFO["backends"]
    if forced is not None:
        if forced == "reference":
            return forced
        if forced == "cpu" and device.type != "cpu":
            raise ValueError(f"backend 'cpu' cannot run tensors on {device}")
        if forced == "cuda" and device.type != "cuda":
            raise ValueError(f"backend 'cuda' needs CUDA tensors, got tensors on {device}")
        if forced == "cuda" and "cuda" not in native:
            raise RuntimeError(
                "backend 'cuda' was asked for but this build of resnet_fast has no CUDA kernels "
                f"(build_info()['backends'] = {native})"
            )
        if forced == "triton":
            _check_triton(device)
        return forced
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda" and "cuda" in native:
        return "cuda"
    if device.type == "cuda" and _triton_installed():
        return "triton"
    _warn_once(
        device.type,
        f"resnet_fast has no native kernels for {device.type} tensors in this build; "
        "falling back to the pure-PyTorch reference implementation (slower, unfused)",
    )
    return "reference"


def op_namespace(backend: str):
    """The torch.ops namespace that holds ``backend``'s kernels of the
    resnet_fast ops: torch.ops.resnet_fast for "cpu" and "cuda" (C++ and CUDA
    kernels, one op per schema, dispatched by device), and
    torch.ops.resnet_fast_triton for "triton" (the same schemas; importing
    resnet_fast.triton registers them). The "reference" backend has no ops."""
    if backend in ("cpu", "cuda"):
        return _ops.ops
    if backend == "triton":
        from . import triton  # noqa: F401  (imports Triton: only when asked for)

        return torch.ops.resnet_fast_triton
    raise ValueError(f"backend {backend!r} has no op namespace")


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when Triton runs its kernels on the CPU (TRITON_INTERPRET set to
    anything but "" or "0", as Triton itself reads it).

    Triton reads the variable when it is imported, so this reflects the
    state of the process, not a switch that can be flipped later."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_triton(device: torch.device) -> None:
    """Triton runs CUDA tensors, and CPU tensors under its interpreter
    (TRITON_INTERPRET=1, set before triton is imported: slow, for tests)."""
    if not _triton_installed():
        raise RuntimeError("backend 'triton' was asked for but triton is not installed")
    if device.type == "cuda" or (device.type == "cpu" and triton_interpreting()):
        return
    raise ValueError(
        f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set "
        f"before triton is imported), got tensors on {device}"
    )
