"""Modules: fused BatchNorm subclasses and drop-in ResNet blocks."""

from .batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .blocks import BasicBlock, Bottleneck

__all__ = ["BasicBlock", "Bottleneck", "BatchNormReLU2d", "BatchNormAddReLU2d"]
