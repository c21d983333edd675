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

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..nn.blocks import conv1x1, conv3x3
from .cifar import CIFAR_SPECS, build_cifar
from .preact import PREACT_SPECS, build_preact
from .resnet import SPECS, build


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, unfused."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (stride on the 3x3), unfused."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PreActBasicBlock(nn.Module):
    """resnet_fast.nn.preact.PreActBasicBlock, unfused: BN -> ReLU -> conv, twice."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        preact: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes) if preact else None
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.bn1 is None else torch.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """resnet_fast.nn.preact.PreActBottleneck, unfused: BN -> ReLU -> conv, three times."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        preact: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes) if preact else None
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.bn1 is None else torch.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + shortcut


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
