"""Pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual
Networks"): every convolution after a fused BN + ReLU, a final BN + ReLU
before the pooling.

- preact_resnet18/34/50/101/152: the ImageNet stages (stride on the 3x3 of a
  bottleneck). The 7x7 stem runs conv -> BN -> ReLU -> max-pool, and that
  activation is the first unit's: the first block of layer1 has no BN of its
  own (as in the paper's released ImageNet code).
- cifar_preact_resnet18/34/50: the same stages after a 3x3 stride-1 stem of
  64 channels with no BN and no max-pool, as in the widely copied CIFAR
  pre-activation ResNet-18 (with the paper's final BN + ReLU).
- preact_resnet20/32/44/56/110 (6n+2, basic) and preact_resnet164 (9n+2,
  bottleneck): the paper's CIFAR networks, 16/32/64 base channels, a plain
  3x3 stem.

Shortcuts, where the shape changes: a 1x1 convolution without BN (the
pre-activated input is already normalized), or for the 6n+2 networks the
parameter-free zero padding ("option A") of the zoo's resnet20..110.
Both read the block's pre-activated input; identity shortcuts the raw one.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..nn import arguments as check
from ..nn.batchnorm import BatchNormReLU2d, fuse_batchnorm
from ..nn.blocks import conv1x1, conv3x3
from ..nn.preact import PreActBasicBlock, PreActBottleneck
from .cifar import stage_shortcut
from .resnet import StemNet, init_named

BlockType = type[nn.Module]


class PreActResNet(StemNet):
    """A pre-activation ResNet.

    Args:
        block: block class (its ``expansion`` sets the stage widths).
        layers: blocks per stage.
        widths: base channels per stage.
        stem: "imagenet" (7x7 stride-2 conv, BN + ReLU, 3x3 max-pool) or
            "cifar" (3x3 stride-1 conv of widths[0] channels, nothing else).
        shortcut: "projection" (1x1 conv) or "pad" (option A).
        num_classes: classifier outputs.
        fused: run the stem's and the final BN + ReLU as fused ops (the
            blocks' BNs are set by ``block``).
        init: "torchvision" (Kaiming fan_out on convolutions) or "he"
            (Kaiming fan_in on convolutions and the classifier).

    Shape:
        input [N, 3, H, W] -> logits [N, num_classes].
    """

    def __init__(
        self,
        block: BlockType,
        layers: list[int],
        widths: list[int],
        stem: str,
        shortcut: str,
        num_classes: int,
        fused: bool,
        init: str,
    ) -> None:
        super().__init__()
        self._norm_layer = nn.BatchNorm2d
        self.shortcut = shortcut
        self.imagenet_stem = stem == "imagenet"
        if self.imagenet_stem:
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self._init_stem_norm(64, fused)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.inplanes = widths[0]
            self.conv1 = conv3x3(3, widths[0])
        self.num_stages = len(widths)
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            stage = self._make_layer(block, planes, blocks, 1 if i == 0 else 2, i == 0)
            self.add_module(f"layer{i + 1}", stage)
        self.final_bn = nn.BatchNorm2d(self.inplanes)
        self.final_fused = fused
        if fused:
            fuse_batchnorm(self.final_bn, BatchNormReLU2d)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        self.classifier_prepacked = fused
        init_named(self, init)

    def _make_layer(
        self, block: BlockType, planes: int, blocks: int, stride: int, first_stage: bool
    ) -> nn.Sequential:
        out = planes * block.expansion
        downsample = stage_shortcut(
            self.shortcut, self.inplanes, out, stride, lambda: conv1x1(self.inplanes, out, stride)
        )
        # After the ImageNet stem's BN + ReLU the first unit is activated already.
        preact = not (first_stage and self.imagenet_stem)
        layers = [block(self.inplanes, planes, stride, downsample, preact=preact)]
        self.inplanes = out
        layers += [block(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self._stem(x)) if self.imagenet_stem else self.conv1(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = self.final_bn(x)
        if not self.final_fused:
            x = torch.relu(x)
        return self._classify(torch.flatten(self.avgpool(x), 1))


class PreActSpec(NamedTuple):
    block: str  # "basic" | "bottleneck"
    layers: list[int]
    widths: list[int]
    stem: str  # "imagenet" | "cifar"
    shortcut: str  # "projection" | "pad"
    init: str  # "torchvision" | "he"
    num_classes: int  # the default


_WIDE = [64, 128, 256, 512]


def _imagenet(block: str, layers: list[int]) -> PreActSpec:
    return PreActSpec(block, layers, _WIDE, "imagenet", "projection", "torchvision", 1000)


def _cifar(block: str, layers: list[int], widths: list[int], shortcut: str, init: str):
    return PreActSpec(block, layers, widths, "cifar", shortcut, init, 10)


PREACT_SPECS = {
    "preact_resnet18": _imagenet("basic", [2, 2, 2, 2]),
    "preact_resnet34": _imagenet("basic", [3, 4, 6, 3]),
    "preact_resnet50": _imagenet("bottleneck", [3, 4, 6, 3]),
    "preact_resnet101": _imagenet("bottleneck", [3, 4, 23, 3]),
    "preact_resnet152": _imagenet("bottleneck", [3, 8, 36, 3]),
    "cifar_preact_resnet18": _cifar("basic", [2, 2, 2, 2], _WIDE, "projection", "torchvision"),
    "cifar_preact_resnet34": _cifar("basic", [3, 4, 6, 3], _WIDE, "projection", "torchvision"),
    "cifar_preact_resnet50": _cifar("bottleneck", [3, 4, 6, 3], _WIDE, "projection", "torchvision"),
    **{
        f"preact_resnet{6 * n + 2}": _cifar("basic", [n] * 3, [16, 32, 64], "pad", "he")
        for n in (3, 5, 7, 9, 18)
    },
    "preact_resnet164": _cifar("bottleneck", [18] * 3, [16, 32, 64], "projection", "he"),
}


def build_preact(name: str, blocks: dict[str, BlockType], fused: bool, **kwargs) -> PreActResNet:
    """A PREACT_SPECS model from the given block classes; kwargs: num_classes."""
    kind, layers, widths, stem, shortcut, init, classes = PREACT_SPECS[name]
    kwargs = check.model_kwargs(name, kwargs, ("num_classes",))
    num_classes = check.positive_int(name, "num_classes", kwargs.get("num_classes", classes))
    return PreActResNet(
        blocks[kind], layers, widths, stem, shortcut, num_classes, fused=fused, init=init
    )


FUSED_PREACT_BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}


def _builder(name: str) -> Callable[..., PreActResNet]:
    spec = PREACT_SPECS[name]
    input_size = "224x224" if spec.stem == "imagenet" else "32x32"

    def make(**kwargs) -> PreActResNet:
        return build_preact(name, FUSED_PREACT_BLOCKS, True, **kwargs)

    make.__name__ = name
    make.__doc__ = (
        f"{name}: pre-activation ResNet for {input_size} inputs with fused BN + ReLU before "
        f"every convolution; kwargs: num_classes (default {spec.num_classes}). "
        "Returns a PreActResNet."
    )
    return make


preact_resnet18 = _builder("preact_resnet18")
preact_resnet34 = _builder("preact_resnet34")
preact_resnet50 = _builder("preact_resnet50")
preact_resnet101 = _builder("preact_resnet101")
preact_resnet152 = _builder("preact_resnet152")
cifar_preact_resnet18 = _builder("cifar_preact_resnet18")
cifar_preact_resnet34 = _builder("cifar_preact_resnet34")
cifar_preact_resnet50 = _builder("cifar_preact_resnet50")
preact_resnet20 = _builder("preact_resnet20")
preact_resnet32 = _builder("preact_resnet32")
preact_resnet44 = _builder("preact_resnet44")
preact_resnet56 = _builder("preact_resnet56")
preact_resnet110 = _builder("preact_resnet110")
preact_resnet164 = _builder("preact_resnet164")
