"""Drop-in replacements for torchvision's ResNet BasicBlock and Bottleneck.

Same constructor, `expansion`, submodule / parameter / buffer names and
argument errors as torchvision's. In training the forward runs the inner
BatchNorms as fused BN + ReLU and the last one as fused BN + residual add +
ReLU; in eval every BN is folded into its convolution (cached, see
folding.py) and the ReLU / add run as the convolution's epilogue.
"""

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.modules.module as module_hooks
from torch import Tensor, nn

from .._ops.backends import Backend
from ..lean.residual import residual_train
from . import arguments as check
from .batchnorm import fuse_block_norms
from .folding import FoldingMixin, can_fold, foldable_downsample, has_hooks
from .memory import DEFAULT_MEMORY, check_memory_mode, is_projection, lean_backend, runs_lean

_warned_unfused: set[str] = set()


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1):
    """3x3 convolution with padding, without bias (torchvision's)."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
        groups=groups, bias=False, dilation=dilation,
    )  # fmt: skip


def conv1x1(in_planes: int, out_planes: int, stride: int = 1):
    """1x1 convolution without bias (torchvision's)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def bottleneck_width(planes: int, base_width: int, groups: int) -> int:
    """The inner width of a bottleneck (ResNeXt / Wide ResNet): channels of
    its 3x3 convolution."""
    return int(planes * (base_width / 64.0)) * groups


class TorchvisionLayout(nn.Module):
    """torchvision's residual block constructor: its arguments, its argument
    errors, and its submodules under torchvision's names, built in
    torchvision's order. A subclass (BasicLayout, BottleneckLayout) lays out
    its layers (``_build``) and runs them unfused (``forward``);
    resnet_fast.models.plain's blocks are these, and the fused blocks below
    build the same layers with fused norms.
    """

    expansion: int

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
        self._check_layout(groups, base_width, dilation)
        self._build(inplanes, planes, stride, groups, base_width, dilation, norm_layer)
        self.downsample = downsample
        self.stride = stride

    @staticmethod
    def _check_layout(groups: int, base_width: int, dilation: int) -> None:
        """torchvision's errors for settings the layout does not support."""

    def _build(self, inplanes, planes, stride, groups, base_width, dilation, norm) -> None:
        """Assigns the convolutions, norms (``norm(channels)``, called in
        torchvision's order) and ReLU."""
        raise NotImplementedError


class BasicLayout(TorchvisionLayout):
    """torchvision's BasicBlock, unfused: two 3x3 convolutions.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes, H / stride, W / stride].
    """

    expansion: int = 1

    @staticmethod
    def _check_layout(groups: int, base_width: int, dilation: int) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")

    def _build(self, inplanes, planes, stride, groups, base_width, dilation, norm) -> None:
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class BottleneckLayout(TorchvisionLayout):
    """torchvision's Bottleneck (stride on the 3x3), unfused: 1x1, 3x3, 1x1.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes * 4, H / stride, W / stride].
    """

    expansion: int = 4

    def _build(self, inplanes, planes, stride, groups, base_width, dilation, norm) -> None:
        width = bottleneck_width(planes, base_width, groups)
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _norms(norm_layer: Callable[[int], nn.Module] | None, channels: list[int], owner: str):
    """The block's norm modules and whether they are fused.

    A norm_layer that builds a plain nn.BatchNorm2d (the default, or a
    functools.partial of it) is fused: the modules become BatchNormReLU2d for
    all but the last, BatchNormAddReLU2d for the last, keeping their settings.
    Any other norm layer is kept as given and the block runs unfused.
    """
    layer = nn.BatchNorm2d if norm_layer is None else norm_layer
    norms = [layer(c) for c in channels]
    if not isinstance(norms[0], nn.Module):
        raise TypeError(
            f"{owner}: norm_layer must build an nn.Module from a channel count; "
            f"norm_layer({channels[0]}) gave {type(norms[0]).__name__}"
        )
    if all(type(n) is nn.BatchNorm2d for n in norms):
        fuse_block_norms(norms)
        return norms, True
    kind = type(norms[0]).__name__
    if kind not in _warned_unfused:
        _warned_unfused.add(kind)
        warnings.warn(
            f"resnet_fast {owner}: norm_layer builds {kind}, not nn.BatchNorm2d; "
            "this block runs the unfused PyTorch computation",
            RuntimeWarning,
            stacklevel=3,
        )
    return norms, False


def _check_block_arguments(owner: str, args: dict) -> None:
    """Types and ranges of the constructor arguments shared by both blocks."""
    for name in ("inplanes", "planes", "groups", "base_width", "dilation"):
        check.positive_int(owner, name, args[name])
    check.stride(owner, args["stride"])
    check.optional_callable(owner, "downsample", args["downsample"])
    check.optional_callable(owner, "norm_layer", args["norm_layer"])


class _FoldingBlock(FoldingMixin):
    """The fused blocks' constructor (torchvision's plus ``memory``) and
    their eval-mode and memory-lean support. A subclass names itself in
    argument errors (``_owner``), gives its norms' channels (``_norm_channels``,
    after checking the arguments only it restricts) and takes its layers
    (``_build``) and unfused forward from its layout."""

    fused: bool
    memory: str = DEFAULT_MEMORY
    _owner: str

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
        *,
        memory: str = DEFAULT_MEMORY,
    ) -> None:
        # Not super().__init__(): the layout's constructor builds plain norms.
        nn.Module.__init__(self)
        self.memory = check_memory_mode(memory)
        _check_block_arguments(self._owner, locals())
        channels = self._norm_channels(planes, groups, base_width, dilation)
        norms, self.fused = _norms(norm_layer, channels, self._owner)
        # All norms are built (and fused) before the convolutions; the layout
        # places them where torchvision's blocks build theirs.
        built = iter(norms)
        self._build(
            inplanes, planes, stride, groups, base_width, dilation, lambda _channels: next(built)
        )
        self.downsample = downsample
        self.stride = stride

    def _norm_channels(self, planes: int, groups: int, base_width: int, dilation: int):
        raise NotImplementedError

    def _lean_ready(self, x: Tensor, norms) -> Backend | None:
        """The backend for a memory-lean forward, or None (standard path)."""
        if not self.fused or not runs_lean(self.memory) or self._hooked():
            return None
        return lean_backend(x, norms)

    def _train_lean(self, backend: Backend, x: Tensor, stages) -> Tensor:
        """The training step of :func:`~resnet_fast.lean.residual.residual_train`
        over this block's stages and its ``downsample`` shortcut."""
        projection, given = None, None
        if self.downsample is not None:
            if is_projection(self.downsample) and self.downsample[1].training:
                projection = (self.downsample[0], self.downsample[1])
            else:
                given = self.downsample(x)
        return residual_train(backend, self.memory, x, stages, projection, given)

    def _eval_ready(self, norms) -> bool:
        return (
            self.fused
            and not self.training
            and all(can_fold(bn) for bn in norms)
            and not self._hooked()
        )

    def _hooked(self) -> bool:
        """Whether a convolution or norm of the block has a forward hook
        (pruning, weight normalization, user hooks): then every module runs
        its own forward, as it would in the plain block."""
        downsample = self.downsample
        return any(
            m._forward_hooks or m._forward_pre_hooks
            for m in self._modules.values()
            if m is not None and m is not downsample
        )

    def _shortcut(self, x: Tensor, reuse_input: bool) -> tuple[Tensor, bool]:
        """The shortcut of input ``x``, and whether the block's sum may be
        written into its memory: the folded projection's output is the
        block's own, ``x`` itself only where the caller says so."""
        if self.downsample is None:
            return x, reuse_input
        if foldable_downsample(self.downsample):
            conv, bn = self.downsample
            return self._conv_bn(conv, bn, x, "downsample", relu=False), True
        return self.downsample(x), False

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_reusing(x, False)

    def forward_reusing(self, x: Tensor, reuse_input: bool) -> Tensor:
        """forward(x); in eval with ``reuse_input`` the residual sum may be
        written into x's memory, which the caller guarantees nothing reads
        after this call (run_stages)."""
        raise NotImplementedError


class BasicBlock(_FoldingBlock, BasicLayout):
    """torchvision's BasicBlock (two 3x3 convolutions) with fused BN epilogues.

    Args:
        inplanes: input channels.
        planes: output channels (expansion 1).
        stride: stride of the first convolution.
        downsample: module applied to the input to form the shortcut, or None.
        groups, base_width: must be 1 and 64 (as in torchvision).
        dilation: must be 1 (as in torchvision).
        norm_layer: callable building a norm module from a channel count;
            nn.BatchNorm2d (default) is fused, anything else runs unfused.
        memory: "lean" keeps only the convolution outputs for backward and
            recomputes the BN-ReLU outputs (see resnet_fast/lean/nodes.py); "standard"
            keeps what eager PyTorch keeps; "auto" (default) runs lean
            unless standard or eager PyTorch is measurably faster for the
            block's shape (see resnet_fast/lean/residual.py). Keyword-only, an addition to
            torchvision's signature.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes, H / stride, W / stride].
    """

    _owner = "BasicBlock"

    def _norm_channels(self, planes: int, groups: int, base_width: int, dilation: int):
        self._check_layout(groups, base_width, dilation)
        return [planes, planes]

    def forward_reusing(self, x: Tensor, reuse_input: bool) -> Tensor:
        if self._eval_ready((self.bn1, self.bn2)):
            out = self._conv_bn(self.conv1, self.bn1, x, "1")
            shortcut, reusable = self._shortcut(x, reuse_input)
            return self._conv_bn(self.conv2, self.bn2, out, "2", shortcut, reuse_residual=reusable)
        backend = self._lean_ready(x, (self.bn1, self.bn2))
        if backend is not None:
            return self._train_lean(backend, x, ((self.conv1, self.bn1), (self.conv2, self.bn2)))
        if not self.fused:
            return BasicLayout.forward(self, x)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        return self.bn2(self.conv2(out), identity)


class Bottleneck(_FoldingBlock, BottleneckLayout):
    """torchvision's Bottleneck (1x1, 3x3, 1x1; stride on the 3x3, "v1.5")
    with fused BN epilogues.

    Args:
        inplanes: input channels.
        planes: base channels; the output has planes * 4.
        stride: stride of the 3x3 convolution.
        downsample: module applied to the input to form the shortcut, or None.
        groups: groups of the 3x3 convolution (ResNeXt).
        base_width: width per group; the inner width is
            int(planes * base_width / 64) * groups.
        dilation: dilation of the 3x3 convolution.
        norm_layer, memory: as in BasicBlock.

    Shape:
        input [N, inplanes, H, W] -> output [N, planes * 4, H / stride, W / stride].
    """

    _owner = "Bottleneck"

    def _norm_channels(self, planes: int, groups: int, base_width: int, dilation: int):
        width = bottleneck_width(planes, base_width, groups)
        if width < 1:
            raise ValueError(
                "Bottleneck: the inner width int(planes * base_width / 64) * groups must be "
                f"at least 1, got {width} (planes={planes}, base_width={base_width}, "
                f"groups={groups})"
            )
        return [width, width, planes * self.expansion]

    def forward_reusing(self, x: Tensor, reuse_input: bool) -> Tensor:
        if self._eval_ready((self.bn1, self.bn2, self.bn3)):
            out = self._conv_bn(self.conv1, self.bn1, x, "1")
            out = self._conv_bn(self.conv2, self.bn2, out, "2")
            shortcut, reusable = self._shortcut(x, reuse_input)
            return self._conv_bn(self.conv3, self.bn3, out, "3", shortcut, reuse_residual=reusable)
        backend = self._lean_ready(x, (self.bn1, self.bn2, self.bn3))
        if backend is not None:
            stages = ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3))
            return self._train_lean(backend, x, stages)
        if not self.fused:
            return BottleneckLayout.forward(self, x)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.bn3(self.conv3(out), identity)


def _unobserved(x: Tensor, stages: Sequence[nn.Module], containers: Sequence[nn.Module]) -> bool:
    """Whether nothing but run_stages can see the activations passed from
    block to block, and each is a fused block's output (a tensor its own ops
    made): every stage an nn.Sequential of fused blocks, no hook on them,
    their layers or their containers, no global module hook, no tracer or
    torch.func transform, no gradient to record."""
    if type(x) is not Tensor or torch.is_grad_enabled() and x.requires_grad:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    if any(
        hooks
        for hooks in (
            module_hooks._global_forward_hooks,
            module_hooks._global_forward_pre_hooks,
            module_hooks._global_backward_hooks,
            module_hooks._global_backward_pre_hooks,
        )
    ):
        return False
    if any(type(stage) is not nn.Sequential for stage in stages):
        return False
    if has_hooks(*containers, *stages):
        return False
    return all(
        isinstance(block, _FoldingBlock) and block.fused and not has_hooks(block)
        and not block._hooked()
        for stage in stages
        for block in stage
    )  # fmt: skip


def run_stages(
    x: Tensor, stages: Sequence[nn.Module], containers: Sequence[nn.Module] = ()
) -> Tensor:
    """``x`` through the stages in order.

    Where nothing but this call can see the activations passed from block to
    block (see _unobserved), each block after the first gets an input that
    the block before made and that nothing reads once the block has run: in
    eval it writes its residual sum into that input's memory instead of a
    new tensor, so the output's write lands on lines the shortcut's read has
    just brought in (ResNet-50 at batch 16, 64x64: its seven oneDNN residual
    convolutions 0.4-0.55 ms faster per forward). The first block's input is
    the caller's and is left alone.

    Args:
        x: [N, C, H, W], the first stage's input.
        stages: the stages (nn.Sequential of blocks), in order.
        containers: modules holding the stages whose hooks would see them.

    Returns:
        The last stage's output.
    """
    if not _unobserved(x, stages, containers):
        for stage in stages:
            x = stage(x)
        return x
    reuse = False
    for stage in stages:
        for block in stage:
            x = block.forward_reusing(x, reuse)
            reuse = True
    return x
