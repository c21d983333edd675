"""The one place that decides which backend runs the resnet_fast ops.

Every backend is an op namespace with the one contract: the schemas of
csrc/registration.cpp, the fake kernels of contract.py, the autograd
formulas of csrc/autograd.cpp (registered by contract.py), the argument
checks of checks.py.

    name           namespace (torch.ops.*)       kernels                        tensors
    cpu            resnet_fast                   C++ (csrc/)                    CPU
    cuda           resnet_fast                   CUDA (csrc/cuda/)              CUDA
    triton         resnet_fast_triton            Triton (resnet_fast/triton/)   CUDA; CPU under
                                                                                TRITON_INTERPRET=1
    reference      resnet_fast_reference         pure PyTorch (reference_ops)   any device
    cuda_emulated  resnet_fast_cuda_emulated     CUDA (csrc/cuda/) on the CPU   CPU; test-only,
                                                 (_native/emulation.py)         where built

``backend_for(device)`` picks one: the backend forced by ``use_backend(name)``
(a context manager) or the environment variable ``RESNET_FAST_BACKEND`` (read
at import), else by device: CPU tensors run the C++ kernels, CUDA tensors the
CUDA kernels when they were built, else Triton, else (with a warning) the
reference. Callers then call ``backend.ops.<op>``: nothing else branches on a
backend's name. A backend chosen at call time cannot be a dispatch key of the
same op, hence one namespace per backend with the same ops.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .._native import build_info
from ..triton.interpreter import triton_interpreting

_Failure = tuple[type, str]  # (exception type, message) of a backend that cannot run


@dataclass(frozen=True)
class Backend:
    """One backend of the resnet_fast ops.

    Attributes:
        name: as accepted by :func:`use_backend`.
        namespace: the torch.ops namespace holding its kernels.
        module: the module whose import registers them.
        measures: whether choices that depend on the machine (lean, standard or eager
            blocks, convolution algorithms: resnet_fast.conv.measured) are
            timed when it runs; only the CPU's timings mean something here.
        why_not: the failure of running tensors on a device, or None.
        home: the device type its tensors live on here, or None when it
            cannot run on this machine (for ``resnet-fast info`` and ``check``).
        fuses_conv: whether its module offers ``conv_bn_act`` (a convolution
            with the BN statistics or the folded BN in its epilogue, the
            arguments of resnet_fast.functional.conv_bn_relu).
    """

    name: str
    namespace: str
    module: str
    measures: bool
    why_not: Callable[[torch.device], _Failure | None]
    home: Callable[[], str | None]
    fuses_conv: bool = False

    @property
    def ops(self):
        """The op namespace (torch.ops.<namespace>), registered on first use."""
        if self.namespace not in _LOADED:
            importlib.import_module(self.module)
            _LOADED.add(self.namespace)
        return getattr(torch.ops, self.namespace)

    @property
    def conv_bn_act(self) -> Callable | None:
        """The backend's own conv + BN (+ residual) (+ ReLU), or None: then
        the convolution runs through PyTorch and the BN through the ops."""
        return importlib.import_module(self.module).conv_bn_act if self.fuses_conv else None

    def require(self, device: torch.device) -> Backend:
        """Self, or raises why tensors on ``device`` cannot run here."""
        failure = self.why_not(device)
        if failure is not None:
            kind, message = failure
            raise kind(message)
        return self


# Namespaces whose registering module has been imported: the C++ ops and the
# reference's are, by resnet_fast itself (its __init__ imports both) before
# any submodule runs. (A traced call must not import: torch.compile refuses
# importlib.)
_LOADED: set[str] = {"resnet_fast", "resnet_fast_reference"}


def _compiled() -> list[str]:
    return list(build_info()["backends"])


def _cpu_why_not(device: torch.device) -> _Failure | None:
    if device.type != "cpu":
        return ValueError, f"backend 'cpu' cannot run tensors on {device}"
    return None


def _cuda_why_not(device: torch.device) -> _Failure | None:
    if device.type != "cuda":
        return ValueError, f"backend 'cuda' needs CUDA tensors, got tensors on {device}"
    if "cuda" not in _compiled():
        return RuntimeError, (
            "backend 'cuda': this build of resnet_fast has no CUDA kernels "
            f"(build_info()['backends'] = {_compiled()})"
        )
    return None


def _cuda_home() -> str | None:
    return "cuda" if "cuda" in _compiled() and torch.cuda.is_available() else None


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_why_not(device: torch.device) -> _Failure | None:
    if not _triton_installed():
        return RuntimeError, "backend 'triton': the triton package is not installed"
    if device.type == "cuda" or (device.type == "cpu" and triton_interpreting()):
        return None
    return ValueError, (
        f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set "
        f"before triton is imported), got tensors on {device}"
    )


def _triton_home() -> str | None:
    if not _triton_installed():
        return None
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if triton_interpreting() else None


def _emulation():
    from .._native import emulation  # declares its namespace and loads it, where built

    return emulation


def _cuda_emulated_why_not(device: torch.device) -> _Failure | None:
    if not _emulation().available():
        return RuntimeError, f"backend 'cuda_emulated': {_emulation().why_absent()}"
    if device.type != "cpu":
        return ValueError, (
            "backend 'cuda_emulated' runs the CUDA kernels on the CPU (a test-only backend) "
            f"and needs CPU tensors, got tensors on {device}"
        )
    return None


def _cuda_emulated_home() -> str | None:
    return "cpu" if _emulation().available() else None


_NATIVE = "resnet_fast._ops.contract"  # loads resnet_fast._C and registers the contract
CPU = Backend("cpu", "resnet_fast", _NATIVE, True, _cpu_why_not, lambda: "cpu")
CUDA = Backend("cuda", "resnet_fast", _NATIVE, False, _cuda_why_not, _cuda_home)
TRITON = Backend(
    "triton", "resnet_fast_triton", "resnet_fast.triton.backend", False, _triton_why_not,
    _triton_home, fuses_conv=True,
)  # fmt: skip
REFERENCE = Backend(
    "reference", "resnet_fast_reference", "resnet_fast._ops.reference_ops", False,
    lambda device: None, lambda: "cpu",
)  # fmt: skip
CUDA_EMULATED = Backend(
    "cuda_emulated", "resnet_fast_cuda_emulated", "resnet_fast._native.emulation", False,
    _cuda_emulated_why_not, _cuda_emulated_home,
)  # fmt: skip
_BY_NAME = {b.name: b for b in (CPU, CUDA, TRITON, REFERENCE, CUDA_EMULATED)}
BACKENDS = tuple(_BY_NAME)
"""Every backend's name, as use_backend() accepts it."""

_state = threading.local()
_warned: set[str] = set()


def _check_name(name: str, source: str) -> str:
    if name not in _BY_NAME:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def get(name: str) -> Backend:
    """The backend called ``name``."""
    return _BY_NAME[_check_name(name, "backend")]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Routes the fused ops through one backend inside a ``with`` block.

    Args:
        name: "cpu" (C++ kernels), "cuda" (CUDA kernels), "triton",
            "reference" (pure PyTorch, any device), or "cuda_emulated" (the
            CUDA kernels on CPU tensors, test-only, where built).

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


def backend_for(device: torch.device) -> Backend:
    """The backend that runs the ops on tensors of ``device``.

    Raises:
        ValueError, RuntimeError: the forced backend cannot run tensors on
            ``device`` here (the message says why).
    """
    forced = current_backend()
    if forced is not None:
        return _BY_NAME[forced].require(device)
    if device.type == "cpu":
        return CPU
    if device.type == "cuda":
        for backend in (CUDA, TRITON):
            if backend.why_not(device) is None:
                return backend
    _warn_once(
        device.type,
        f"resnet_fast has no native kernels for {device.type} tensors in this build; "
        "falling back to the pure-PyTorch reference implementation (slower, unfused)",
    )
    return REFERENCE
