"""Plain models: torchvision's ResNet architecture (and the pre-activation
ResNets of resnet_fast.models.preact) in plain PyTorch (no fused op), the
baseline of the equivalence tests and what resnet_fast.revert() gives back
when torchvision is not installed. ("reference" means one thing in this
project: resnet_fast.reference, the ops' oracle, which the "reference"
backend runs.)

They match torchvision.models' modules, parameter names, initialization and
forward exactly, so a plain model and a resnet_fast model built after the
same torch.manual_seed hold the same weights.
"""

import torch
from torch import Tensor, nn

from ..nn.blocks import BasicLayout, BottleneckLayout
from ..nn.preact import PreActBasicLayout, PreActBottleneckLayout
from .cifar import CIFAR_SPECS, build_cifar
from .preact import PREACT_SPECS, build_preact
from .resnet import SPECS, build


class BasicBlock(BasicLayout):
    """torchvision.models.resnet.BasicBlock, unfused."""


class Bottleneck(BottleneckLayout):
    """torchvision.models.resnet.Bottleneck (stride on the 3x3), unfused."""


class _PlainBNReLU:
    """BN then ReLU as two steps: an nn.BatchNorm2d module and torch.relu."""

    @staticmethod
    def _make_bn_relu(channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    @staticmethod
    def _bn_relu(bn: nn.Module, x: Tensor) -> Tensor:
        return torch.relu(bn(x))


class PreActBasicBlock(_PlainBNReLU, PreActBasicLayout):
    """resnet_fast.nn.preact.PreActBasicBlock, unfused: BN -> ReLU -> conv, twice."""


class PreActBottleneck(_PlainBNReLU, PreActBottleneckLayout):
    """resnet_fast.nn.preact.PreActBottleneck, unfused: BN -> ReLU -> conv, three times."""


REFERENCE_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
PLAIN_PREACT_BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}


def plain_model(name: str, **kwargs) -> nn.Module:
    """The plain-PyTorch twin of resnet_fast.models.<name> (e.g. "resnet50",
    "resnet20", "preact_resnet18"), with the same keyword arguments."""
    if name in SPECS:
        return build(name, REFERENCE_BLOCKS, False, **kwargs)
    if name in CIFAR_SPECS:
        return build_cifar(name, REFERENCE_BLOCKS, False, **kwargs)
    if name in PREACT_SPECS:
        return build_preact(name, PLAIN_PREACT_BLOCKS, False, **kwargs)
    known = ", ".join([*SPECS, *CIFAR_SPECS, *PREACT_SPECS])
    raise ValueError(f"unknown model {name!r}; known: {known}")
