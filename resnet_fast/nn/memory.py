"""What the blocks and stems keep for backward (``memory=``), and when a
block runs as one memory-lean autograd node (resnet_fast/lean/)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._ops.backends import Backend, backend_for
from .batchnorm import is_plain_batchnorm2d
from .folding import has_hooks

MEMORY_MODES = ("auto", "lean", "standard")
"""``memory=`` choices: "lean" saves each block's convolution outputs only;
"standard" saves what the op-level autograd saves (as eager does); "auto"
runs each residual block lean unless "standard" or eager PyTorch's training
step is measurably faster for that block's shape on this machine (measured once per
shape, see resnet_fast/lean/residual.py), and the stem lean."""

DEFAULT_MEMORY = "auto"


def runs_lean(memory: str) -> bool:
    """Whether ``memory`` runs lean nodes (always or where measured faster)."""
    return memory in ("auto", "lean")


def check_memory_mode(memory: str) -> str:
    """Validates a ``memory=`` argument and returns it."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {memory!r}")
    return memory


def set_memory(model: nn.Module, memory: str) -> nn.Module:
    """Sets the ``memory`` mode of every resnet_fast block and stem in
    ``model`` (their classes declare a ``memory`` default); returns ``model``."""
    check_memory_mode(memory)
    for module in model.modules():
        if getattr(type(module), "memory", None) in MEMORY_MODES:
            module.memory = memory
    return model


def lean_backend(x: Tensor, norms: Sequence[nn.Module]) -> Backend | None:
    """The backend a lean node over these norms would run on, or None when
    the block must run the standard path: eval-mode BN (folded instead), no
    gradient needed, or a norm that is not a plain BatchNorm2d."""
    if not torch.is_grad_enabled():
        return None
    if not all(is_plain_batchnorm2d(bn) and bn.training for bn in norms):
        return None
    return backend_for(x.device)


def is_projection(downsample: nn.Module | None) -> bool:
    """torchvision's projection shortcut, Sequential(Conv2d, BatchNorm2d),
    without hooks (a lean node calls its tensors directly)."""
    return (
        isinstance(downsample, nn.Sequential)
        and len(downsample) == 2
        and type(downsample[0]) is nn.Conv2d
        and is_plain_batchnorm2d(downsample[1])
        and not has_hooks(downsample, *downsample)
    )
