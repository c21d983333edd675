"""CIFAR ResNets written the way the common PyTorch tutorials write them: plain
PyTorch, no resnet_fast import, the code a user brings to ``resnet_fast.convert``.

What makes them "user code" rather than torchvision's: the shortcut is an
attribute ``shortcut`` holding an empty ``nn.Sequential()`` (identity) or
conv1x1 + BN; the ReLU is ``F.relu``; the residual sum is an in-place ``+=``;
the stem is a 3x3 stride-1 conv + BN + ReLU with no max-pool; the head is a
fixed 4x4 average pool (so the input must be 32x32) and a layer named
``linear``. PyTorch's default initialization, 10 classes.

    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    out = F.relu(out)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """The shortcut: empty (identity) when the shape is kept, else conv1x1 + BN."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class TutorialBasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between, shortcut added before the last ReLU.

    Shape:
        [N, in_planes, H, W] -> [N, planes, H / stride, W / stride].
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class TutorialBottleneck(nn.Module):
    """1x1, 3x3 (with the stride), 1x1 conv + BN; output planes * 4.

    Shape:
        [N, in_planes, H, W] -> [N, planes * 4, H / stride, W / stride].
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class TutorialCifarResNet(nn.Module):
    """The tutorials' CIFAR ResNet: 3x3 stem, four stages (width, 2, 4 and 8
    times width: 64..512 by default), 4x4 average pool, ``linear`` classifier.

    Args:
        block: TutorialBasicBlock or TutorialBottleneck.
        num_blocks: blocks per stage, e.g. [2, 2, 2, 2] for ResNet-18.
        num_classes: classifier outputs.
        width: channels of the stem and the first stage (the tests shrink it).

    Shape:
        input [N, 3, 32, 32] -> logits [N, num_classes].
    """

    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: list[int],
        num_classes: int = 10,
        width: int = 64,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or any(not isinstance(n, int) or n < 1 for n in num_blocks):
            raise ValueError(f"num_blocks must be four positive ints, got {num_blocks!r}")
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, num_blocks[3], stride=2)
        self.linear = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def tutorial_cifar_resnet18(num_classes: int = 10) -> TutorialCifarResNet:
    """The tutorials' CIFAR ResNet-18 (BasicBlock, [2, 2, 2, 2]), 32x32 inputs."""
    return TutorialCifarResNet(TutorialBasicBlock, [2, 2, 2, 2], num_classes)


def tutorial_cifar_resnet50(num_classes: int = 10) -> TutorialCifarResNet:
    """The tutorials' CIFAR ResNet-50 (Bottleneck, [3, 4, 6, 3]), 32x32 inputs."""
    return TutorialCifarResNet(TutorialBottleneck, [3, 4, 6, 3], num_classes)


TUTORIAL_MODELS = {
    "tutorial_cifar_resnet18": tutorial_cifar_resnet18,
    "tutorial_cifar_resnet50": tutorial_cifar_resnet50,
}
