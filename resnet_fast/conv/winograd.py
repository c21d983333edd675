"""3x3 convolutions on the CPU as Winograd F(4x4, 3x3).

A 3x3, stride-1 convolution computed tile by tile from transformed 6x6
patches needs a quarter of the direct convolution's multiplications
(``torch.ops.resnet_fast.winograd_conv3x3``, csrc/cpu/winograd.cpp): the
input is transformed once, multiplied by the transformed weight as 36 matrix
products (the register-blocked kernel of csrc/cpu/kernels/row_products.h),
and transformed back with the bias, the residual add and the ReLU fused into
that last pass. On this project's 2-core CPU, each convolution alone, that
is 1.8x to 2.5x faster than oneDNN's direct convolution with prepacked
weights at the CIFAR ResNet-18 stages (batch 64) and at ResNet-18's 16x16 to
4x4 maps (batch 16), and slower on 2x2 maps, where a 4x4 tile is mostly
padding (``python benchmarks/conv_algorithms.py``). In a model its buffers
(the transformed input, 2.25x the input's size) and its transformed weight
(4x the weight) displace other layers' data from the caches, so eval-mode
choices are timed in the model itself.

It rounds a little more than a direct convolution: in float32 the largest
error on the ResNet-18 stages is 1.0e-6 to 2.1e-6 of the largest output,
against 0.8e-6 to 2.2e-6 for oneDNN's direct convolution (the transform
points 0, 1, -1, 2, -1/2 were chosen for it; the common 0, +-1, +-2 round
about 2.5x more). That is the trade cuDNN makes by default for float32
convolutions on a GPU; here it is made only where it is measured faster,
for float32 channels_last convolutions:

- in eval mode, with BN folded in and no gradient needed (inference.py),
  where resnet_fast.tune timed it faster in the model than the direct and
  the tap-by-tap convolutions (eval_algorithms.py, settle.py);
- in training, inside the lean blocks (training.py), where it was timed
  faster on first use of the shape (measured.py): the forward, and the
  input gradient, which is a convolution of the same kind; the weight
  gradient stays oneDNN's. The weight is transformed on every step.

``RESNET_FAST_WINOGRAD=0`` (read at import) turns it off everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native  # noqa: F401  (registers the schemas)
from .spec import check_conv_operands, check_wide, float32_channels_last, same_size_3x3
from .switches import env_switch

ENABLED = env_switch("RESNET_FAST_WINOGRAD")
"""Whether Winograd is a candidate for 3x3 convolutions (``RESNET_FAST_WINOGRAD``)."""

ELEMENTS = 36
"""Elements of a transformed tile (6 x 6)."""

_ops = torch.ops.resnet_fast


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
    return same_size_3x3(weight, *spec) and float32_channels_last(input)


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


@torch.library.register_fake("resnet_fast::winograd_weight")
def _winograd_weight_fake(weight: Tensor) -> Tensor:
    check_wide(weight, "weight")
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise RuntimeError(
            f"resnet_fast: weight must be [C_out, C_in, 3, 3]; got {tuple(weight.shape)}"
        )
    return weight.new_empty((ELEMENTS, weight.shape[1], weight.shape[0]))


@torch.library.register_fake("resnet_fast::winograd_conv3x3")
def _winograd_conv3x3_fake(input, tiles, bias, residual, relu):
    return check_conv_operands(input, tiles, ELEMENTS, "weight_tiles", bias, residual)
