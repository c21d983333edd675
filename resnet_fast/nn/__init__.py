"""Modules: fused BatchNorm subclasses and drop-in ResNet blocks."""

from .batchnorm import BatchNormAddReLU2d, BatchNormReLU2d
from .blocks import BasicBlock, Bottleneck
from .sync_batchnorm import SyncBatchNorm2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "BatchNormReLU2d",
    "BatchNormAddReLU2d",
    "SyncBatchNorm2d",
    "SyncBatchNormReLU2d",
    "SyncBatchNormAddReLU2d",
]
