"""ResNet models built from resnet_fast's fused blocks, with torchvision's
names, keyword arguments, initialization and parameter counts."""

from . import reference
from .cifar import (
    cifar_resnet18,
    cifar_resnet34,
    cifar_resnet50,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from .resnet import (
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    wide_resnet50_2,
    wide_resnet101_2,
)

__all__ = [
    "ResNet", "reference",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
    "cifar_resnet18", "cifar_resnet34", "cifar_resnet50",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
]  # fmt: skip
