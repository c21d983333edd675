"""3x3 convolutions on the CPU as Winograd F(4x4, 3x3).

A 3x3, stride-1 convolution computed tile by tile from transformed 6x6
patches needs a quarter of the direct convolution's multiplications
(``torch.ops.resnet_fast.winograd_conv3x3``, csrc/cpu/winograd.cpp): the
input is transformed once, multiplied by the transformed weight as 36 matrix
products, and transformed back with the bias, the residual add and the ReLU
fused into that last pass. On this project's 2-core CPU at the CIFAR ResNet
stages (batch 64, 64 to 512 channels) that is 1.4x to 2.2x faster than
oneDNN's direct convolution with prepacked weights, and slower on maps of
2x2 to 4x4 pixels at batch 16 (``python benchmarks/winograd_conv.py``).
That is each convolution alone; in a model its buffers (the transformed
input, 2.25x the input's size) displace the next layer's data from the
caches, and ResNet-18 at batch 16 of 64x64 runs faster without Winograd in
any of its layers. Hence eval-mode choices are timed in the model itself.

It rounds more than a direct convolution: in float32 the largest error on
ResNet-shaped layers (64 to 512 channels) is 2.8e-6 to 3.6e-6 of the largest
output, against 1.1e-6 to 2.7e-6 for oneDNN's direct convolution (the
transform points 0, 1, -1, 2, -1/2 were chosen for it; the common 0, +-1,
+-2 round about 2.5x more). That is the trade cuDNN makes by default for
float32 convolutions on a GPU; here it is made only where it is measured
faster, for float32 channels_last convolutions:

- in eval mode, with BN folded in and no gradient needed (inference.py),
  where resnet_fast.tune timed it in the model (settle.py);
- in training, inside the lean blocks (training.py), where it was timed
  faster on first use of the shape (measured.py): the forward, and the
  input gradient, which is a convolution of the same kind; the weight
  gradient stays oneDNN's. The weight is transformed on every step.

``RESNET_FAST_WINOGRAD=0`` (read at import) turns it off everywhere.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from .. import _native  # noqa: F401  (registers the schemas)
from . import measured

_ENV = "RESNET_FAST_WINOGRAD"
_setting = os.environ.get(_ENV, "1")
if _setting not in ("0", "1"):
    raise ValueError(f"{_ENV} must be 0 or 1; got {_setting!r}")
ENABLED = _setting == "1"
"""Whether Winograd is a candidate for 3x3 convolutions (``RESNET_FAST_WINOGRAD``)."""

ELEMENTS = 36
"""Elements of a transformed tile (6 x 6)."""

_ops = torch.ops.resnet_fast


def _geometry_ok(weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """A 3x3 kernel, stride 1, padding 1, no dilation, one group."""
    return (
        tuple(weight.shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
    )


def _operands_ok(*tensors: Tensor) -> bool:
    """float32 channels_last CPU tensors."""
    return all(
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        for t in tensors
    )


def eligible(input: Tensor, conv: nn.Conv2d, residual: Tensor | None) -> bool:
    """Whether the eval-mode ``conv`` (its geometry; the weight run may be a
    folded copy) of ``input`` [N, C_in, H, W] [+ ``residual``] can run as
    Winograd: see :func:`_geometry_ok`, zero padding, float32 channels_last
    operands on the CPU, no gradient needed."""
    if not ENABLED or conv.padding_mode != "zeros":
        return False
    if not _geometry_ok(conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups):
        return False
    operands = (input,) if residual is None else (input, residual)
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return False
    return _operands_ok(*operands)


def trainable(input: Tensor, weight: Tensor, spec) -> bool:
    """Whether a training convolution (training.py: forward, and its input
    gradient, which is the same kind of convolution) can run as Winograd.

    Args:
        input: [N, C_in, H, W].
        weight: [C_out, C_in, kH, kW].
        spec: stride, padding, dilation, groups (spec.ConvSpec).
    """
    if not ENABLED or torch.is_autocast_enabled("cpu") or input.numel() == 0:
        return False
    if weight.dtype != torch.float32:
        return False
    return _geometry_ok(weight, *spec) and _operands_ok(input)


def choice_key(input: Tensor, weight: Tensor, residual: Tensor | None, relu: bool) -> tuple:
    """The measured choice (measured.py) between Winograd and the direct
    convolution for an eval-mode convolution of ``input`` [N, C_in, H, W] by
    ``weight`` [C_out, C_in, 3, 3]: kind "eval_conv3x3"."""
    return (
        "eval_conv3x3", tuple(input.shape), weight.shape[0], input.dtype, residual is not None,
        relu,
    )  # fmt: skip


def chosen(key: tuple, device: torch.device) -> bool:
    """Whether Winograd was found faster than the direct convolution (the
    default) for ``key`` (:func:`choice_key`) where the model runs it
    (settle.py); the direct one until then."""
    return measured.choose(key, "onednn", None, device) == "winograd"


def weight_tiles(weight: Tensor) -> Tensor:
    """[C_out, C_in, 3, 3] -> [36, C_in, C_out]: the transformed kernels."""
    return _ops.winograd_weight(weight)


def conv3x3(
    input: Tensor, tiles: Tensor, bias: Tensor | None, residual: Tensor | None, relu: bool
) -> Tensor:
    """act(conv2d(input, weight, bias, padding=1) [+ residual]) with
    ``tiles = weight_tiles(weight)``.

    Args:
        input: [N, C_in, H, W] dense channels_last, float32 or float64.
        tiles: [36, C_in, C_out].
        bias: [C_out] or None.
        residual: [N, C_out, H, W] dense channels_last, or None.
        relu: whether to apply ReLU last.

    Returns:
        [N, C_out, H, W], channels_last.
    """
    return _ops.winograd_conv3x3(input, tiles, bias, residual, relu)


def _check_wide(t: Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"resnet_fast: {name} must be float32 or float64; got {t.dtype}")


@torch.library.register_fake("resnet_fast::winograd_weight")
def _winograd_weight_fake(weight: Tensor) -> Tensor:
    _check_wide(weight, "weight")
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise RuntimeError(
            f"resnet_fast: weight must be [C_out, C_in, 3, 3]; got {tuple(weight.shape)}"
        )
    return weight.new_empty((ELEMENTS, weight.shape[1], weight.shape[0]))


@torch.library.register_fake("resnet_fast::winograd_conv3x3")
def _winograd_conv3x3_fake(input, tiles, bias, residual, relu):
    _check_wide(input, "input")
    if input.dim() != 4 or not input.is_contiguous(memory_format=torch.channels_last):
        raise RuntimeError("resnet_fast: input must be dense channels_last [N, C, H, W]")
    n, c, h, w = input.shape
    if tiles.dim() != 3 or tiles.shape[0] != ELEMENTS or tiles.shape[1] != c:
        raise RuntimeError(
            "resnet_fast: weight_tiles must be [36, C_in, C_out] with "
            f"C_in = {c}; got {tuple(tiles.shape)}"
        )
    shape = (n, tiles.shape[2], h, w)
    if residual is not None and tuple(residual.shape) != shape:
        raise RuntimeError(
            f"resnet_fast: residual must be {list(shape)}; got {tuple(residual.shape)}"
        )
    return torch.empty(
        shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last
    )


def _not_differentiable(ctx, *grads):
    raise RuntimeError(
        "resnet_fast: winograd_weight / winograd_conv3x3 are inference ops with no "
        "gradient; differentiate torch.nn.functional.conv2d instead"
    )


for _name in ("winograd_weight", "winograd_conv3x3"):
    torch.library.register_autograd(f"resnet_fast::{_name}", _not_differentiable)
