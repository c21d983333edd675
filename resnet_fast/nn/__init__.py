"""Modules: fused BatchNorm subclasses and drop-in ResNet blocks."""

from .batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .blocks import BasicBlock, Bottleneck
from .lean import MEMORY_MODES, set_memory

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "BatchNormReLU2d",
    "BatchNormAddReLU2d",
    "MEMORY_MODES",
    "set_memory",
]
