"""ResNet models built from resnet_fast's fused blocks, with torchvision's
names, keyword arguments, initialization and parameter counts, and the
pre-activation ResNets (He et al. 2016) with fused BN + ReLU before every
convolution."""

from . import plain
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
from .preact import (
    PreActResNet,
    cifar_preact_resnet18,
    cifar_preact_resnet34,
    cifar_preact_resnet50,
    preact_resnet18,
    preact_resnet20,
    preact_resnet32,
    preact_resnet34,
    preact_resnet44,
    preact_resnet50,
    preact_resnet56,
    preact_resnet101,
    preact_resnet110,
    preact_resnet152,
    preact_resnet164,
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
    "ResNet", "plain",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
    "cifar_resnet18", "cifar_resnet34", "cifar_resnet50",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "PreActResNet",
    "preact_resnet18", "preact_resnet34", "preact_resnet50", "preact_resnet101",
    "preact_resnet152",
    "cifar_preact_resnet18", "cifar_preact_resnet34", "cifar_preact_resnet50",
    "preact_resnet20", "preact_resnet32", "preact_resnet44", "preact_resnet56",
    "preact_resnet110", "preact_resnet164",
]  # fmt: skip
