"""Convolutions as matrix products, for small feature maps on the CPU.

On channels_last data a convolution is a matrix product over the input's
patches: with ``cols`` the [N*H_out*W_out, kH*kW*C_in] matrix of patches
(for a 1x1 stride-1 convolution, the input itself: no copy) and ``W`` the
weight as [C_out, kH*kW*C_in] (a view of a channels_last weight),

    forward        out = cols @ W^T              [N*H_out*W_out, C_out]
    grad_input     dx  = col2im(dy @ W)          [N, C_in, H, W]
    grad_weight    dW  = dy^T @ cols             [C_out, kH*kW*C_in]

and dW comes out in the channels_last layout of the weight, so autograd
keeps it as it is instead of copying it into the parameter's layout.

oneDNN's convolution is the better choice on large feature maps. Where there
are few pixels against many channels (the last stages of an ImageNet ResNet
at a small resolution or batch: [16, 2048, 2, 2] at 64x64 and batch 16) it
can be several times slower than the BLAS product it amounts to. Where the
two cross depends on the machine (``python benchmarks/gemm_conv.py`` prints
both for every ResNet-50 convolution), so the lean blocks time both, forward
and backward, the first time they meet a convolution shape and keep the
faster (training.py, measured.py; oneDNN unless the product is faster by
more than its margin). Convolutions whose patch matrix would exceed ``MAX_PATCH_BYTES``
are left to oneDNN unmeasured: the copy alone would cost more memory than
the choice is worth.

Only float32 / float64 tensors on the CPU in channels_last, outside
autocast, with groups=1, take this path; ``RESNET_FAST_CPU_GEMM_CONV``
(read at import: ``auto``, the default, or ``always`` / ``never``) overrides
the measurement.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .spec import ConvSpec, output_hw

MODES = ("auto", "always", "never")
"""``auto``: measured per shape (see the module doc); ``always``: every
eligible convolution (tests, benchmarks); ``never``: oneDNN only."""

MODE = os.environ.get("RESNET_FAST_CPU_GEMM_CONV", "auto")
if MODE not in MODES:
    raise ValueError(f"RESNET_FAST_CPU_GEMM_CONV must be one of {', '.join(MODES)}; got {MODE!r}")

_GEMM_DTYPES = (torch.float32, torch.float64)

MAX_PATCH_BYTES = 64 << 20
"""Largest [N*H_out*W_out, kH*kW*C_in] patch matrix the GEMM path may build."""


def eligible(input: Tensor, weight: Tensor, spec: ConvSpec) -> bool:
    """Whether the GEMM path can run this convolution at all: a CPU
    channels_last float32 / float64 input, groups=1, outside autocast."""
    if input.device.type != "cpu" or input.dim() != 4 or spec.groups != 1:
        return False
    if input.dtype not in _GEMM_DTYPES or weight.dtype != input.dtype:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return input.is_contiguous(memory_format=torch.channels_last) and input.numel() > 0


def patch_bytes(input: Tensor, weight: Tensor, spec: ConvSpec, out_hw: tuple[int, int]) -> int:
    """Bytes of the patch matrix the GEMM path builds (0: it reads the input)."""
    k = (weight.shape[2], weight.shape[3])
    if k == (1, 1) and spec.stride == (1, 1) and not any(spec.padding):
        return 0
    pixels = input.shape[0] * out_hw[0] * out_hw[1]
    return pixels * k[0] * k[1] * input.shape[1] * input.element_size()


def _tap_slices(k: tuple[int, int], out_hw: tuple[int, int], spec: ConvSpec):
    """(i, j, rows slice, cols slice) of each kernel tap over the padded input."""
    for i in range(k[0]):
        for j in range(k[1]):
            h0, w0 = i * spec.dilation[0], j * spec.dilation[1]
            yield (
                i, j,
                slice(h0, h0 + spec.stride[0] * (out_hw[0] - 1) + 1, spec.stride[0]),
                slice(w0, w0 + spec.stride[1] * (out_hw[1] - 1) + 1, spec.stride[1]),
            )  # fmt: skip


def _patches(input: Tensor, k: tuple[int, int], out_hw: tuple[int, int], spec: ConvSpec) -> Tensor:
    """The [N*H_out*W_out, kH*kW*C] matrix of input patches, (kh, kw, c) order."""
    n, c = input.shape[0], input.shape[1]
    nhwc = input.permute(0, 2, 3, 1)  # contiguous for channels_last input
    if k == (1, 1) and spec.stride == (1, 1) and not any(spec.padding):
        return nhwc.reshape(-1, c)
    ph, pw = spec.padding
    padded = F.pad(nhwc, (0, 0, pw, pw, ph, ph)) if ph or pw else nhwc
    cols = input.new_empty((n, out_hw[0], out_hw[1], k[0], k[1], c))
    for i, j, rows, columns in _tap_slices(k, out_hw, spec):
        cols[:, :, :, i, j, :] = padded[:, rows, columns, :]
    return cols.view(-1, k[0] * k[1] * c)


def _patches_backward(
    grad_cols: Tensor, input_shape, k: tuple[int, int], out_hw: tuple[int, int], spec: ConvSpec
) -> Tensor:
    """The input gradient [N, C, H, W] (channels_last) from the patches'
    gradient [N*H_out*W_out, kH*kW*C]: each tap adds back where it read."""
    n, c, h, w = input_shape
    if k == (1, 1) and spec.stride == (1, 1) and not any(spec.padding):
        return grad_cols.view(n, h, w, c).permute(0, 3, 1, 2)
    ph, pw = spec.padding
    padded = grad_cols.new_zeros((n, h + 2 * ph, w + 2 * pw, c))
    taps = grad_cols.view(n, out_hw[0], out_hw[1], k[0], k[1], c)
    for i, j, rows, columns in _tap_slices(k, out_hw, spec):
        padded[:, rows, columns, :] += taps[:, :, :, i, j, :]
    inner = padded[:, ph : ph + h, pw : pw + w, :]
    return inner.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _weight_matrix(weight: Tensor) -> Tensor:
    """[C_out, C_in, kH, kW] as [C_out, kH*kW*C_in] (a view when channels_last)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def forward(input: Tensor, weight: Tensor, bias: Tensor | None, spec: ConvSpec) -> Tensor:
    k = (weight.shape[2], weight.shape[3])
    out_hw = output_hw(input, weight, spec)
    cols = _patches(input, k, out_hw, spec)
    w2 = _weight_matrix(weight)
    out = torch.mm(cols, w2.t()) if bias is None else torch.addmm(bias, cols, w2.t())
    return out.view(input.shape[0], out_hw[0], out_hw[1], -1).permute(0, 3, 1, 2)


def backward(grad: Tensor, input: Tensor, weight: Tensor, spec: ConvSpec, mask):
    c_out, c_in, kh, kw = weight.shape
    out_hw = (grad.shape[2], grad.shape[3])
    g2 = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c_out)
    grad_input = grad_weight = grad_bias = None
    if mask[0]:
        grad_cols = torch.mm(g2, _weight_matrix(weight))
        grad_input = _patches_backward(grad_cols, input.shape, (kh, kw), out_hw, spec)
    if mask[1]:
        cols = _patches(input, (kh, kw), out_hw, spec)
        grad_weight = torch.mm(g2.t(), cols).view(c_out, kh, kw, c_in).permute(0, 3, 1, 2)
    if mask[2]:
        grad_bias = g2.sum(0)
    return grad_input, grad_weight, grad_bias
