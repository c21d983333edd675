"""Which of resnet_fast's backends can run on this machine.

Discovered, not hard-coded: the names come from ``resnet_fast.BACKENDS`` and
the compiled ones from ``resnet_fast.build_info()["backends"]``, so a backend
added to the package shows up in ``resnet-fast info`` and ``check`` as soon as
it is built. Each name is paired with the device its tensors live on here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

import resnet_fast
from resnet_fast._backend import triton_interpreting


@dataclass(frozen=True)
class BackendStatus:
    """One backend on this machine.

    Attributes:
        name: as accepted by ``resnet_fast.use_backend``.
        device: the device its tensors live on here ("cpu", "cuda"), or None
            when it cannot run.
        reason: why it can or cannot run, for humans.
    """

    name: str
    device: str | None
    reason: str

    @property
    def available(self) -> bool:
        return self.device is not None


def _triton_status() -> BackendStatus:
    if importlib.util.find_spec("triton") is None:
        return BackendStatus("triton", None, "the triton package is not installed")
    if torch.cuda.is_available():
        return BackendStatus("triton", "cuda", "triton installed, GPU present")
    if triton_interpreting():
        return BackendStatus("triton", "cpu", "triton interpreter (TRITON_INTERPRET=1)")
    return BackendStatus(
        "triton", None, "no GPU (TRITON_INTERPRET=1 runs the interpreter on the CPU)"
    )


def backend_status(name: str) -> BackendStatus:
    """Whether backend ``name`` can run here, and on which device."""
    compiled = list(resnet_fast.build_info()["backends"])
    if name == "reference":
        return BackendStatus(name, "cpu", "pure PyTorch, always available")
    if name == "triton":
        return _triton_status()
    if name not in compiled:
        return BackendStatus(name, None, f"not compiled into this build (compiled: {compiled})")
    if name == "cpu":
        return BackendStatus(name, "cpu", "compiled")
    if name == "cuda":
        if not torch.cuda.is_available():
            return BackendStatus(name, None, "compiled, but torch sees no CUDA device")
        return BackendStatus(name, "cuda", "compiled, GPU present")
    # A compiled backend this module has no rule for: its name is its device
    # type when torch knows one (e.g. a future "xpu" backend).
    module = getattr(torch, name, None)
    if module is not None and getattr(module, "is_available", lambda: False)():
        return BackendStatus(name, name, "compiled, device present")
    return BackendStatus(name, None, "compiled, but no device for it was found")


def all_backends() -> list[BackendStatus]:
    """The status of every backend in ``resnet_fast.BACKENDS``."""
    return [backend_status(name) for name in resnet_fast.BACKENDS]


def fast_backend_for(device: torch.device) -> str:
    """The backend resnet_fast's ops pick for tensors on ``device`` (a fallback
    to "reference" warns once, from resnet_fast itself)."""
    from resnet_fast import _backend

    return _backend.resolve(device)
