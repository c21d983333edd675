"""CIFAR ResNets from the literature.

- cifar_resnet18/34/50: the ImageNet stages with a 3x3 stride-1 stem and no
  max-pool, projection (1x1 conv + BN) shortcuts, 10 classes.
- resnet20/32/44/56/110: He et al.'s 6n+2 networks (16/32/64 channels) with
  the parameter-free "option A" shortcut: the identity subsampled and
  zero-padded to the new width, which the block's fused tail then adds.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch._prims_common import suggest_memory_format

from ..nn import arguments as check
from ..nn.blocks import conv1x1, conv3x3, run_stages
from ..nn.memory import DEFAULT_MEMORY, check_memory_mode, set_memory
from .resnet import StemNet, check_block_class, fused_builder, init_named

BlockType = type[nn.Module]


class PadShortcut(nn.Module):
    """Option-A shortcut: x[:, :, ::stride, ::stride] zero-padded from
    in_planes to out_planes channels (half the new channels on each side).

    Shape:
        [N, in_planes, H, W] -> [N, out_planes, ceil(H / stride), ceil(W / stride)],
        in the memory format of the input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        sub = x[:, :, :: self.stride, :: self.stride]
        n, _, h, w = sub.shape
        out = x.new_zeros((n, self.out_planes, h, w)).contiguous(
            memory_format=suggest_memory_format(x)
        )
        lo = (self.out_planes - self.in_planes) // 2
        out[:, lo : lo + self.in_planes] = sub
        return out


def stage_shortcut(
    kind: str, in_planes: int, out_planes: int, stride: int, projection: Callable[[], nn.Module]
) -> nn.Module | None:
    """The shortcut of a stage's first block: None (the identity) where the
    shape is kept, else PadShortcut for kind "pad" (option A) or what
    ``projection()`` builds for kind "projection"."""
    if stride == 1 and in_planes == out_planes:
        return None
    if kind == "pad":
        return PadShortcut(in_planes, out_planes, stride)
    return projection()


class CifarResNet(StemNet):
    """A CIFAR ResNet: 3x3 stride-1 stem, no max-pool, `len(widths)` stages,
    global average pool (the 4x4 pool at 32x32 input) and a linear classifier.

    Args:
        block: block class.
        layers: blocks per stage.
        widths: base channels per stage (the stem has widths[0]).
        shortcut: "projection" (1x1 conv + BN) or "pad" (option A).
        num_classes: classifier outputs.
        norm_layer: as in ResNet.
        fused_stem: fuse the stem's BN + ReLU.
        init: "torchvision" (Kaiming fan_out on convolutions) or "he"
            (Kaiming fan_in on convolutions and the classifier, as in the
            6n+2 networks' common implementation).
        memory: "auto", "lean" or "standard", for every block (see
            resnet_fast.nn.memory.MEMORY_MODES).

    Shape:
        input [N, 3, 32, 32] -> logits [N, num_classes].
    """

    def __init__(
        self,
        block: BlockType,
        layers: list[int],
        widths: list[int],
        shortcut: str,
        num_classes: int = 10,
        norm_layer: Callable[..., nn.Module] | None = None,
        fused_stem: bool = True,
        init: str = "torchvision",
        memory: str = DEFAULT_MEMORY,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_block_class(owner, block)
        layers = check.positive_ints(owner, "layers", layers)
        widths = check.positive_ints(owner, "widths", widths, len(layers))
        check.one_of(owner, "shortcut", shortcut, ("projection", "pad"))
        check.positive_int(owner, "num_classes", num_classes)
        check.optional_callable(owner, "norm_layer", norm_layer)
        check.boolean(owner, "fused_stem", fused_stem)
        check.one_of(owner, "init", init, ("torchvision", "he"))
        check_memory_mode(memory)
        self._norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.shortcut = shortcut
        self.inplanes = widths[0]
        self.conv1 = conv3x3(3, widths[0])
        self._init_stem_norm(widths[0], fused_stem)
        stages = []
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            stages.append(self._make_layer(block, planes, blocks, 1 if i == 0 else 2))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        init_named(self, init)
        set_memory(self, memory)

    def _make_layer(self, block: BlockType, planes: int, blocks: int, stride: int):
        out = planes * block.expansion
        downsample = stage_shortcut(
            self.shortcut, self.inplanes, out, stride,
            lambda: nn.Sequential(conv1x1(self.inplanes, out, stride), self._norm_layer(out)),
        )  # fmt: skip
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = out
        layers += [block(out, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = run_stages(self._stem(x), self.layers, (self.layers,))
        x = torch.flatten(self.avgpool(x), 1)
        return self._classify(x)


# name: (block kind, layers, widths, shortcut, init)
CIFAR_SPECS = {
    "cifar_resnet18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512], "projection", "torchvision"),
    "cifar_resnet34": ("basic", [3, 4, 6, 3], [64, 128, 256, 512], "projection", "torchvision"),
    "cifar_resnet50": (
        "bottleneck",
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        "projection",
        "torchvision",
    ),
    **{
        f"resnet{6 * n + 2}": ("basic", [n, n, n], [16, 32, 64], "pad", "he")
        for n in (3, 5, 7, 9, 18)
    },
}


def build_cifar(
    name: str, blocks: dict[str, BlockType], fused_stem: bool, /, **kwargs
) -> CifarResNet:
    """A CIFAR_SPECS model from the given block classes; kwargs: num_classes,
    norm_layer, memory."""
    kwargs = check.model_kwargs(name, kwargs, ("num_classes", "norm_layer", "memory"))
    kind, layers, widths, shortcut, init = CIFAR_SPECS[name]
    return CifarResNet(
        blocks[kind], layers, widths, shortcut, fused_stem=fused_stem, init=init, **kwargs
    )


def _builder(name: str):
    doc = (
        f"{name} for 32x32 inputs with fused blocks; kwargs: num_classes, norm_layer, "
        "memory ('auto' | 'lean' | 'standard')."
    )
    return fused_builder(name, build_cifar, doc)


cifar_resnet18 = _builder("cifar_resnet18")
cifar_resnet34 = _builder("cifar_resnet34")
cifar_resnet50 = _builder("cifar_resnet50")
resnet20 = _builder("resnet20")
resnet32 = _builder("resnet32")
resnet44 = _builder("resnet44")
resnet56 = _builder("resnet56")
resnet110 = _builder("resnet110")
