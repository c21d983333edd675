"""1x1 and 3x3 convolutions on the CPU tap by tap: one matrix product per
kernel tap (nine for 3x3), each over only the output pixels whose shifted
input pixel lies inside the image (``torch.ops.resnet_fast.taps_conv``,
csrc/cpu/taps_conv.cpp), with the bias, the residual add and the ReLU fused
into the pass that writes the output.

On small maps most pixels are borders: on a 2x2 map each output of a 3x3
convolution sees 4 of the 9 taps, on a 4x4 map 100 of the 144 products are
inside the image (of stride 2 too: a tap is the same product over a strided
set of pixels). This computes only those and reads the weight once (9 C_in
C_out values, where Winograd's transformed weight holds 36 C_in C_out),
which is where oneDNN's direct convolution and Winograd both lose: on this
project's 2-core CPU, ResNet-18's 512-channel stage at batch 16 of 64x64
images (2x2 maps) runs in a third of oneDNN's time
(``python benchmarks/conv_algorithms.py``). A 1x1 convolution is one such
product, the matrix product oneDNN runs too, here with the register-blocked
kernel of csrc/cpu/kernels/row_products.h. It sums fewer terms than a padded
convolution and rounds accordingly (float32, 3x3: 1.7e-7 to 2.9e-7 of the
largest output on the ResNet-18 stages, oneDNN 7.9e-7 to 2.2e-6).

An eval-mode candidate (eval_algorithms.py), chosen where resnet_fast.tune
timed it faster in the model, and a training one (training.py), chosen where
it was timed faster on first use of the shape, forward and backward: its
weight gradient is the same kind of sum, input^T grad per tap
(:func:`weight_grad`), and at stride 1 its input gradient is a tap-by-tap
convolution too. The ops themselves have no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native  # noqa: F401  (registers the schemas)
from .spec import check_conv_operands
from .switches import env_switch

ENABLED = env_switch("RESNET_FAST_TAPS")
"""Whether the tap-by-tap convolution is a candidate (``RESNET_FAST_TAPS``,
read at import)."""

_ops = torch.ops.resnet_fast


def weight_taps(weight: Tensor) -> Tensor:
    """[C_out, C_in, k, k] -> [k * k, C_in, C_out] (k = 1 or 3): the kernel
    tap by tap, each tap's [C_in x C_out] matrix contiguous
    (``weight.permute(2, 3, 1, 0)``, copied in the weight's order)."""
    return _ops.taps_weight(weight)


def turned_weight_taps(weight: Tensor) -> Tensor:
    """The taps of the input gradient's convolution (stride 1): the kernels
    transposed (C_in and C_out swapped) and turned by 180 degrees,
    [k * k, C_out, C_in]."""
    return _ops.taps_weight(weight, True)


def conv(
    input: Tensor, taps: Tensor, bias: Tensor | None, residual: Tensor | None, relu: bool,
    stride: int = 1,
) -> Tensor:  # fmt: skip
    """act(conv2d(input, weight, bias, stride, padding=k // 2) [+ residual])
    with ``taps = weight_taps(weight)``.

    Args:
        input: [N, C_in, H, W] dense channels_last, float32 or float64.
        taps: [k * k, C_in, C_out], k = 1 or 3.
        bias: [C_out] or None.
        residual: [N, C_out, H_out, W_out] dense channels_last, or None.
        relu: whether to apply ReLU last.
        stride: 1 or 2.

    Returns:
        [N, C_out, H_out, W_out], channels_last; H_out = ceil(H / stride).
    """
    return _ops.taps_conv(input, taps, bias, residual, relu, stride)


def weight_grad(
    input: Tensor, grad: Tensor, kernel: int, stride: int = 1, channels_last: bool = False
) -> Tensor:
    """The gradient of ``conv``'s weight, as conv2d's weight gradient.

    Args:
        input: [N, C_in, H, W] dense channels_last, float32 or float64.
        grad: [N, C_out, H_out, W_out] dense channels_last, the gradient of
            the output.
        kernel: k, 1 or 3.
        stride: 1 or 2.
        channels_last: the weight's layout (the gradient comes in it, so that
            autograd need not copy it into the parameter's).

    Returns:
        [C_out, C_in, k, k], channels_last or contiguous.
    """
    return _ops.taps_weight_grad(input, grad, kernel, stride, channels_last)


@torch.library.register_fake("resnet_fast::taps_weight_grad")
def _taps_weight_grad_fake(input, grad, ksize, stride=1, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (grad.shape[1], input.shape[1], ksize, ksize)
    return input.new_empty(shape).contiguous(memory_format=fmt)


@torch.library.register_fake("resnet_fast::taps_weight")
def _taps_weight_fake(weight, turned=False):
    k_out, k_in, kh, kw = weight.shape
    return weight.new_empty((kh * kw, k_out, k_in) if turned else (kh * kw, k_in, k_out))


@torch.library.register_fake("resnet_fast::taps_conv")
def _taps_conv_fake(input, taps, bias, residual, relu, stride=1):
    if taps.dim() != 3 or taps.shape[0] not in (1, 9):
        raise RuntimeError(
            "resnet_fast: weight_taps must be [1 or 9, C_in, C_out] (a 1x1 or 3x3 kernel); "
            f"got {tuple(taps.shape)}"
        )
    return check_conv_operands(input, taps, taps.shape[0], "weight_taps", bias, residual, stride)
