"""ResNet, ResNeXt and Wide ResNet with torchvision's architecture, keyword
arguments and initialization, built from resnet_fast's fused blocks (or from
plain blocks, for the reference models in resnet_fast.models.plain)."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..conv.linear import linear_eval
from ..lean.nodes import lean_bn_relu_maxpool
from ..nn import arguments as check
from ..nn.batchnorm import BatchNormReLU2d, fuse_batchnorm
from ..nn.blocks import BasicBlock, Bottleneck, conv1x1, run_stages
from ..nn.folding import FoldingMixin, can_fold, has_hooks
from ..nn.memory import DEFAULT_MEMORY, check_memory_mode, lean_backend, runs_lean, set_memory

BlockType = type[nn.Module]


class StemNet(FoldingMixin):
    """A network with a conv1 -> bn1 -> relu stem, fused (BN + ReLU in one op,
    folded into conv1 in eval) when bn1 is a plain nn.BatchNorm2d."""

    memory: str = DEFAULT_MEMORY
    classifier_prepacked: bool = False
    """Whether the eval-mode classifier ``fc`` (an nn.Linear) runs with its
    weight prepacked for oneDNN (resnet_fast.conv.linear): the fast model's
    does, its plain twin's does not."""

    def _init_stem_norm(self, channels: int, fused_stem: bool) -> None:
        self.bn1 = self._norm_layer(channels)
        self.classifier_prepacked = fused_stem
        self.stem_fused = fused_stem and type(self.bn1) is nn.BatchNorm2d
        if self.stem_fused:
            fuse_batchnorm(self.bn1, BatchNormReLU2d)
        self.relu = nn.ReLU(inplace=True)

    def _stem(self, x: Tensor) -> Tensor:
        if self.stem_fused and can_fold(self.bn1) and not has_hooks(self.conv1, self.bn1):
            # eval: BN folded into the stem conv
            return self._conv_bn(self.conv1, self.bn1, x, "stem")
        x = self.bn1(self.conv1(x))
        return x if self.stem_fused else self.relu(x)

    def _classify(self, x: Tensor) -> Tensor:
        if self.classifier_prepacked and not self.training:
            return linear_eval(self.fc, x, self.fold_cache)
        return self.fc(x)


class ResNet(StemNet):
    """torchvision's ResNet: 7x7 stride-2 stem, max-pool, four stages, average
    pool and a linear classifier.

    Args:
        block: the block class (its `expansion` sets the stage widths).
        layers: blocks per stage, e.g. [3, 4, 6, 3] for ResNet-50.
        num_classes: classifier outputs.
        zero_init_residual: zero the last BN weight of every block.
        groups, width_per_group: ResNeXt / Wide ResNet settings.
        replace_stride_with_dilation: three bools, one per stage 2-4.
        norm_layer: builds a norm module from a channel count (BatchNorm2d).
        fused_stem: run the stem's BN + ReLU as one fused op (when the norm
            layer builds a plain nn.BatchNorm2d).
        memory: "auto", "lean" or "standard", for the stem and every block (see
            resnet_fast.lean.nodes).

    Shape:
        input [N, 3, H, W] -> logits [N, num_classes].
    """

    def __init__(
        self,
        block: BlockType,
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        fused_stem: bool = True,
        memory: str = DEFAULT_MEMORY,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_block_class(owner, block)
        layers = check.positive_ints(owner, "layers", layers, 4)
        check.positive_int(owner, "num_classes", num_classes)
        check.boolean(owner, "zero_init_residual", zero_init_residual)
        check.positive_int(owner, "groups", groups)
        check.positive_int(owner, "width_per_group", width_per_group)
        check.optional_callable(owner, "norm_layer", norm_layer)
        check.boolean(owner, "fused_stem", fused_stem)
        check_memory_mode(memory)
        self._norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if (
            isinstance(replace_stride_with_dilation, str)
            or not isinstance(replace_stride_with_dilation, Sequence)
            or len(replace_stride_with_dilation) != 3
        ):
            raise ValueError(
                "replace_stride_with_dilation should be None "
                f"or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        for dilate in replace_stride_with_dilation:
            entry = "every entry of replace_stride_with_dilation"
            check.one_of(owner, entry, dilate, (False, True))
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self._init_stem_norm(self.inplanes, fused_stem)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_resnet(self, zero_init_residual)
        set_memory(self, memory)

    def _make_layer(
        self, block: BlockType, planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = [
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                previous_dilation, self._norm_layer,
            )
        ]  # fmt: skip
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                    dilation=self.dilation, norm_layer=self._norm_layer,
                )
            )  # fmt: skip
        return nn.Sequential(*layers)

    def _stem_pooled(self, x: Tensor) -> Tensor:
        lean_stem = not has_hooks(self.conv1, self.bn1, self.maxpool)
        if (
            self.stem_fused
            and lean_stem
            and runs_lean(self.memory)
            and type(self.maxpool) is nn.MaxPool2d
        ):
            backend = lean_backend(x, [self.bn1])
            if backend is not None:
                return lean_bn_relu_maxpool(backend, self.conv1(x), self.bn1, self.maxpool)
        return self.maxpool(self._stem(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self._stem_pooled(x)
        x = run_stages(x, (self.layer1, self.layer2, self.layer3, self.layer4))
        x = torch.flatten(self.avgpool(x), 1)
        return self._classify(x)


def check_block_class(owner: str, block) -> None:
    """A block class: a type with an int `expansion` (BasicBlock, Bottleneck)."""
    if not isinstance(block, type) or not isinstance(getattr(block, "expansion", None), int):
        raise TypeError(
            f"{owner}: block must be a block class with an int expansion "
            f"(BasicBlock, Bottleneck), got {block!r}"
        )


def init_resnet(model: nn.Module, zero_init_residual: bool) -> None:
    """torchvision's initialization: Kaiming-normal (fan_out, relu) convolutions,
    unit / zero norm affine parameters, and optionally zero last-BN weights."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            if hasattr(type(m), "expansion"):  # a residual block
                last = m.bn3 if hasattr(m, "bn3") else m.bn2
                if last.weight is not None:
                    nn.init.constant_(last.weight, 0)


def init_named(model: nn.Module, init: str) -> None:
    """The initialization the CIFAR and pre-activation networks name: "he"
    (Kaiming-normal fan_in on every convolution and linear layer, as in the
    6n+2 networks' common implementation) or "torchvision" (init_resnet,
    without zero-initialized last norms)."""
    if init == "he":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
    else:
        init_resnet(model, zero_init_residual=False)


# name: (block kind, layers, groups, width_per_group)
SPECS = {
    "resnet18": ("basic", [2, 2, 2, 2], 1, 64),
    "resnet34": ("basic", [3, 4, 6, 3], 1, 64),
    "resnet50": ("bottleneck", [3, 4, 6, 3], 1, 64),
    "resnet101": ("bottleneck", [3, 4, 23, 3], 1, 64),
    "resnet152": ("bottleneck", [3, 8, 36, 3], 1, 64),
    "resnext50_32x4d": ("bottleneck", [3, 4, 6, 3], 32, 4),
    "resnext101_32x8d": ("bottleneck", [3, 4, 23, 3], 32, 8),
    "resnext101_64x4d": ("bottleneck", [3, 4, 23, 3], 64, 4),
    "wide_resnet50_2": ("bottleneck", [3, 4, 6, 3], 1, 128),
    "wide_resnet101_2": ("bottleneck", [3, 4, 23, 3], 1, 128),
}


RESNET_KWARGS = (
    "num_classes", "zero_init_residual", "groups", "width_per_group",
    "replace_stride_with_dilation", "norm_layer", "memory",
)  # fmt: skip


def build(name: str, blocks: dict[str, BlockType], fused_stem: bool, /, **kwargs) -> ResNet:
    """A SPECS model from the given block classes; kwargs as torchvision's."""
    kwargs = check.model_kwargs(name, kwargs, RESNET_KWARGS)
    kind, layers, groups, width = SPECS[name]
    if name.startswith(("resnext", "wide")):
        for key, value in (("groups", groups), ("width_per_group", width)):
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"{name} fixes {key}={value}, got {kwargs[key]}")
            kwargs[key] = value
    return ResNet(blocks[kind], layers, fused_stem=fused_stem, **kwargs)


FUSED_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def fused_builder(name: str, build_fn: Callable[..., nn.Module], doc: str):
    """A public model function: build_fn(name, fused blocks, fused stem, **kwargs)."""

    def make(**kwargs) -> nn.Module:
        return build_fn(name, FUSED_BLOCKS, True, **kwargs)

    make.__name__ = name
    make.__doc__ = doc
    return make


def _builder(name: str):
    return fused_builder(
        name,
        build,
        f"{name} with fused blocks; keyword arguments as torchvision.models.{name} "
        "(num_classes, zero_init_residual, groups, width_per_group, "
        "replace_stride_with_dilation, norm_layer), plus memory='auto' | 'lean' | 'standard' "
        "(see resnet_fast.lean.nodes). Returns a ResNet.",
    )


resnet18 = _builder("resnet18")
resnet34 = _builder("resnet34")
resnet50 = _builder("resnet50")
resnet101 = _builder("resnet101")
resnet152 = _builder("resnet152")
resnext50_32x4d = _builder("resnext50_32x4d")
resnext101_32x8d = _builder("resnext101_32x8d")
resnext101_64x4d = _builder("resnext101_64x4d")
wide_resnet50_2 = _builder("wide_resnet50_2")
wide_resnet101_2 = _builder("wide_resnet101_2")
