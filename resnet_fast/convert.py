"""convert(): swap torchvision-style ResNet blocks (recognized by structure)
and the stem's BN + ReLU for resnet_fast's fused ones, in place, reusing
every parameter and buffer tensor; revert(): back to plain PyTorch modules."""

import copy
import logging

from torch import nn

from .models.reference import BasicBlock as PlainBasicBlock
from .models.reference import Bottleneck as PlainBottleneck
from .nn.batchnorm import (
    BatchNormAddReLU2d,
    BatchNormReLU2d,
    fuse_batchnorm,
    fuse_block_norms,
    is_plain_batchnorm2d,
    unfuse_batchnorm,
)
from .nn.blocks import BasicBlock, Bottleneck
from .nn.lean import DEFAULT_MEMORY, check_memory_mode

log = logging.getLogger("resnet_fast")

_BASIC = ("conv1", "bn1", "relu", "conv2", "bn2", "downsample")
_BOTTLENECK = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample")


class FusedReLU(nn.Identity):
    """Stands where a stem's nn.ReLU was once its BatchNorm became a fused
    BatchNormReLU2d (the ReLU already happened); revert() restores the ReLU."""


def _conv(m, k):
    return isinstance(m, nn.Conv2d) and m.kernel_size == (k, k) and m.bias is None


def _block_kind(m: nn.Module) -> tuple[type | None, str]:
    """(fast block class, "") when m has a torchvision block's structure,
    else (None, why not) -- why is "" for modules that are no block at all."""
    names = set(m._modules)
    if isinstance(m, (BasicBlock, Bottleneck)):
        return None, "already a resnet_fast block"
    if names in (set(_BASIC), set(_BASIC) - {"downsample"}):
        kind, convs = BasicBlock, [("conv1", 3), ("conv2", 3)]
    elif names in (set(_BOTTLENECK), set(_BOTTLENECK) - {"downsample"}):
        kind, convs = Bottleneck, [("conv1", 1), ("conv2", 3), ("conv3", 1)]
    else:
        return None, ""
    if not all(_conv(getattr(m, c), k) for c, k in convs) or not isinstance(m.relu, nn.ReLU):
        return None, "block-like module whose convolutions or ReLU differ from torchvision's"
    norms = [getattr(m, f"bn{i}") for i in range(1, len(convs) + 1)]
    odd = [type(n).__name__ for n in norms if not is_plain_batchnorm2d(n)]
    if odd:
        why = (
            f"norm layers {sorted(set(odd))} are not nn.BatchNorm2d (fusing would change the math)"
        )
        return None, why
    return kind, ""


def _fast_block(old: nn.Module, kind: type, memory: str) -> nn.Module:
    """A fast block holding `old`'s very submodules (no tensor is copied)."""
    new = kind.__new__(kind)
    nn.Module.__init__(new)
    for name, child in old._modules.items():
        setattr(new, name, child)
    new.downsample = getattr(old, "downsample", None)  # a plain attribute when None
    new.stride = getattr(
        old, "stride", new.conv2.stride[0] if kind is Bottleneck else new.conv1.stride[0]
    )
    new.fused = True
    new.memory = memory
    norms = [new.bn1, new.bn2] + ([new.bn3] if kind is Bottleneck else [])
    fuse_block_norms(norms)
    new.train(old.training)
    return new


def _plain_block(old: nn.Module) -> nn.Module:
    kind = PlainBottleneck if isinstance(old, Bottleneck) else PlainBasicBlock
    try:  # torchvision's own classes when it is installed
        from torchvision.models import resnet as tv

        kind = tv.Bottleneck if kind is PlainBottleneck else tv.BasicBlock
    except ImportError:
        pass
    new = kind.__new__(kind)
    nn.Module.__init__(new)
    for name, child in old._modules.items():
        if isinstance(child, (BatchNormReLU2d, BatchNormAddReLU2d)):
            unfuse_batchnorm(child)
        setattr(new, name, child)
    new.downsample = old.downsample
    new.stride = old.stride
    new.train(old.training)
    return new


def _is_resnet_stem(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("conv1", "bn1", "relu", "layer1")) and isinstance(
        m.conv1, nn.Conv2d
    )


def convert(
    model: nn.Module,
    inplace: bool = True,
    report: list | None = None,
    memory: str = DEFAULT_MEMORY,
) -> nn.Module:
    """Swaps in resnet_fast's fused blocks wherever `model` has torchvision's
    BasicBlock / Bottleneck structure, and fuses a torchvision-style ResNet
    stem's BN + ReLU.

    Parameters and buffers are reused, not copied, so an optimizer built
    before the conversion keeps updating the right tensors, and state_dict
    keys do not change.

    Args:
        model: any nn.Module.
        inplace: convert `model` itself (True) or a deep copy (False).
        report: if a list is given, one (module name, "converted" | "left
            alone", reason) tuple per candidate is appended to it. A summary
            is logged on the "resnet_fast" logger either way.
        memory: "lean" (default) or "standard": what the converted blocks
            keep for backward (see resnet_fast.nn.lean). The stem of a
            converted model keeps what eager keeps; resnet_fast.models'
            own stems are lean too.

    Returns:
        The converted model.
    """
    check_memory_mode(memory)
    if not inplace:
        model = copy.deepcopy(model)
    entries = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            kind, why = _block_kind(child)
            full = f"{name}.{child_name}" if name else child_name
            if kind is not None:
                setattr(module, child_name, _fast_block(child, kind, memory))
                entries.append((full, "converted", kind.__name__))
            elif why:
                entries.append((full, "left alone", why))
    for name, module in model.named_modules():
        if not _is_resnet_stem(module) or isinstance(module.relu, FusedReLU):
            continue
        if getattr(module, "stem_fused", False):
            continue  # a resnet_fast model: its stem is fused already
        if is_plain_batchnorm2d(module.bn1) and isinstance(module.relu, nn.ReLU):
            fuse_batchnorm(module.bn1, BatchNormReLU2d)
            module.relu = FusedReLU()
            entries.append((name or "<model>", "converted", "stem bn1 + relu"))
        else:
            entries.append((name or "<model>", "left alone", "stem norm is not nn.BatchNorm2d"))
    converted = sum(1 for e in entries if e[1] == "converted")
    log.info(
        "resnet_fast.convert: %d converted, %d left alone%s", converted, len(entries) - converted,
        "".join(f"\n  {n}: {a} ({w})" for n, a, w in entries if a == "left alone"),
    )  # fmt: skip
    if report is not None:
        report.extend(entries)
    return model


def revert(model: nn.Module, inplace: bool = True) -> nn.Module:
    """Undoes convert(): fast blocks become plain blocks (torchvision's when it
    is installed), fused BatchNorms plain nn.BatchNorm2d, the stem's ReLU comes
    back. Tensors are reused, as in convert().

    Args:
        model: a model holding resnet_fast modules.
        inplace: revert `model` itself (True) or a deep copy (False).

    Returns:
        The reverted model.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for _, module in list(model.named_modules()):
        for child_name, child in list(module._modules.items()):
            if isinstance(child, (BasicBlock, Bottleneck)):
                setattr(module, child_name, _plain_block(child))
            elif isinstance(child, FusedReLU):
                setattr(module, child_name, nn.ReLU(inplace=True))
        if getattr(module, "stem_fused", False):
            module.stem_fused = False
    for module in model.modules():
        if isinstance(module, (BatchNormReLU2d, BatchNormAddReLU2d)):
            unfuse_batchnorm(module)
    return model
