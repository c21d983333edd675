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


class PreActLayout(nn.Module):
    """A pre-activation block's constructor, fused or plain: the first BN +
    ReLU (unless ``preact`` is False), the convolutions and their BN + ReLU
    (``_build``), the shortcut. A subclass says how a BN + ReLU is built
    (``_make_bn_relu``) and run (``_bn_relu``).
    """

    expansion: int

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        preact: bool = True,
    ) -> None:
        super().__init__()
        self.bn1 = self._make_bn_relu(inplanes) if preact else None
        self._build(inplanes, planes, stride)
        self.downsample = downsample
        self.stride = stride

    def _build(self, inplanes: int, planes: int, stride: int) -> None:
        raise NotImplementedError

    @staticmethod
    def _make_bn_relu(channels: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def _bn_relu(bn: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _activate_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the first convolution's input, the shortcut): a shortcut module
        reads the pre-activated input, the identity the raw one."""
        out = x if self.bn1 is None else self._bn_relu(self.bn1, x)
        return out, x if self.downsample is None else self.downsample(out)


class PreActBasicLayout(PreActLayout):
    """Two 3x3 convolutions, each after a BN + ReLU (the stride on the first)."""

    expansion: int = 1

    def _build(self, inplanes: int, planes: int, stride: int) -> None:
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = self._make_bn_relu(planes)
        self.conv2 = conv3x3(planes, planes)

    def forward(self, x: Tensor) -> Tensor:
        out, shortcut = self._activate_input(x)
        out = self.conv2(self._bn_relu(self.bn2, self.conv1(out)))
        return out + shortcut


class PreActBottleneckLayout(PreActLayout):
    """1x1, 3x3 (with the stride), 1x1 convolutions, each after a BN + ReLU;
    the output has planes * 4 channels."""

    expansion: int = 4

    def _build(self, inplanes: int, planes: int, stride: int) -> None:
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = self._make_bn_relu(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = self._make_bn_relu(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        out, shortcut = self._activate_input(x)
        out = self.conv2(self._bn_relu(self.bn2, self.conv1(out)))
        out = self.conv3(self._bn_relu(self.bn3, out))
        return out + shortcut


class _FusedBNReLU:
    """BN + ReLU as one fused module (BatchNormReLU2d), in training and eval."""

    @staticmethod
    def _make_bn_relu(channels: int) -> nn.Module:
        return fuse_batchnorm(nn.BatchNorm2d(channels), BatchNormReLU2d)

    @staticmethod
    def _bn_relu(bn: nn.Module, x: Tensor) -> Tensor:
        return bn(x)


class PreActBasicBlock(_FusedBNReLU, PreActBasicLayout):
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


class PreActBottleneck(_FusedBNReLU, PreActBottleneckLayout):
    """1x1, 3x3 (with the stride), 1x1 convolutions, each after a fused BN + ReLU.

    Args:
        inplanes: input channels.
        planes: inner channels; the output has planes * 4.
        stride, downsample, preact: as in PreActBasicBlock.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes * 4, H / stride, W / stride].
    """
