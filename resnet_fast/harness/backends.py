"""Which of resnet_fast's backends can run on this machine.

Asked of the dispatch point (resnet_fast._ops.backends), not hard-coded: a
backend added there shows up in ``resnet-fast info`` and ``check`` as soon as
it exists. Each name is paired with the device its tensors live on here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._ops import backends


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


def backend_status(name: str) -> BackendStatus:
    """Whether backend ``name`` can run here, and on which device."""
    backend = backends.get(name)
    home = backend.home()
    if home is not None:
        return BackendStatus(name, home, f"runs {home} tensors here")
    # Why not, asked for the device it would run on if it could.
    failure = backend.why_not(torch.device("cuda" if name != "cpu" else "cpu"))
    if failure is None:
        return BackendStatus(name, None, "torch sees no CUDA device")
    return BackendStatus(name, None, failure[1].removeprefix(f"backend '{name}': "))


def all_backends() -> list[BackendStatus]:
    """The status of every backend in ``resnet_fast.BACKENDS``."""
    return [backend_status(name) for name in backends.BACKENDS]


def fast_backend_for(device: torch.device) -> str:
    """The name of the backend resnet_fast's ops pick for tensors on
    ``device`` (a fallback to "reference" warns once, from resnet_fast)."""
    return backends.backend_for(device).name
