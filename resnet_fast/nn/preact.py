"""Pre-activation residual blocks (He et al. 2016, "Identity Mappings in Deep
Residual Networks"): BN -> ReLU -> conv, with every BN + ReLU run as one
fused op (BatchNormReLU2d) in training and in eval.

The sum of the residual branch and the shortcut has no ReLU after it (the
next block's BN reads it), so it stays a plain add. A BN before a padded
convolution cannot be folded into it (the zero padding is not normalized), so
eval mode runs the fused BN + ReLU op on running statistics instead.

A block whose shortcut is a module (projection or zero padding) feeds it the
pre-activated input, as the paper does for the first unit of a stage; an
identity shortcut carries the raw input. With ``preact=False`` the block has
no first BN (its input is activated already, e.g. by an ImageNet stem).
"""

from torch import Tensor, nn

from .batchnorm import BatchNormReLU2d, fuse_batchnorm
from .blocks import conv1x1, conv3x3


def _bn_relu(channels: int) -> BatchNormReLU2d:
    return fuse_batchnorm(nn.BatchNorm2d(channels), BatchNormReLU2d)


class PreActBasicBlock(nn.Module):
    """Two 3x3 convolutions, each after a fused BN + ReLU.

    Args:
        inplanes: input channels.
        planes: output channels (expansion 1).
        stride: stride of the first convolution.
        downsample: shortcut module applied to the pre-activated input, or
            None for the identity on the raw input.
        preact: False drops the first BN + ReLU (the input is activated already).

    Shape:
        input [N, inplanes, H, W] -> output [N, planes, H / stride, W / stride].
    """

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
        self.bn1 = _bn_relu(inplanes) if preact else None
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = _bn_relu(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.bn1 is None else self.bn1(x)
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv2(self.bn2(self.conv1(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """1x1, 3x3 (with the stride), 1x1 convolutions, each after a fused BN + ReLU.

    Args:
        inplanes: input channels.
        planes: inner channels; the output has planes * 4.
        stride, downsample, preact: as in PreActBasicBlock.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes * 4, H / stride, W / stride].
    """

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
        self.bn1 = _bn_relu(inplanes) if preact else None
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = _bn_relu(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = _bn_relu(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.bn1 is None else self.bn1(x)
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv2(self.bn2(self.conv1(out)))
        out = self.conv3(self.bn3(out))
        return out + shortcut
