"""Modules: fused BatchNorm subclasses, drop-in ResNet blocks, pre-activation
blocks, synchronized BatchNorm; memory modes and the choices measured on this
machine (resnet_fast.conv.measured), as module-level settings."""

from ..conv.measured import load_measured_choices, measured_choices, reset_measured_choices
from .batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .blocks import BasicBlock, Bottleneck
from .memory import MEMORY_MODES, set_memory
from .preact import PreActBasicBlock, PreActBottleneck
from .sync_batchnorm import SyncBatchNorm2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "BatchNormReLU2d",
    "BatchNormAddReLU2d",
    "MEMORY_MODES",
    "set_memory",
    "measured_choices",
    "load_measured_choices",
    "reset_measured_choices",
    "SyncBatchNorm2d",
    "SyncBatchNormReLU2d",
    "SyncBatchNormAddReLU2d",
]
