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
faster (measured.py; oneDNN unless the product is faster by more than its
margin). Convolutions whose patch matrix would exceed ``MAX_PATCH_BYTES``
are left to oneDNN unmeasured: the copy alone would cost more memory than
the choice is worth.

Only float32 / float64 tensors on the CPU in channels_last, outside
autocast, with groups=1, take this path; ``RESNET_FAST_CPU_GEMM_CONV``
(read at import: ``auto``, the default, or ``always`` / ``never``) overrides
the measurement.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import measured, winograd

_aten = torch.ops.aten

MODES = ("auto", "always", "never")
"""``auto``: measured per shape (see the module doc); ``always``: every
eligible convolution (tests, benchmarks); ``never``: oneDNN only."""

MODE = os.environ.get("RESNET_FAST_CPU_GEMM_CONV", "auto")
if MODE not in MODES:
    raise ValueError(f"RESNET_FAST_CPU_GEMM_CONV must be one of {', '.join(MODES)}; got {MODE!r}")

_GEMM_DTYPES = (torch.float32, torch.float64)

MAX_PATCH_BYTES = 64 << 20
"""Largest [N*H_out*W_out, kH*kW*C_in] patch matrix the GEMM path may build."""


class ConvSpec(NamedTuple):
    """A convolution's static arguments, as F.conv2d takes them (pairs)."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def _output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _output_hw(input: Tensor, weight: Tensor, spec: ConvSpec) -> tuple[int, int]:
    def size(d: int) -> int:  # d: 0 for height, 1 for width
        n, k = input.shape[2 + d], weight.shape[2 + d]
        return _output_size(n, k, spec.stride[d], spec.padding[d], spec.dilation[d])

    return size(0), size(1)


def _is_pointwise(weight: Tensor, spec: ConvSpec) -> bool:
    return tuple(weight.shape[2:]) == (1, 1) and not any(spec.padding)


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


def _patch_bytes(input: Tensor, weight: Tensor, spec: ConvSpec, out_hw: tuple[int, int]) -> int:
    """Bytes of the patch matrix the GEMM path builds (0: it reads the input)."""
    k = (weight.shape[2], weight.shape[3])
    if k == (1, 1) and spec.stride == (1, 1) and not any(spec.padding):
        return 0
    pixels = input.shape[0] * out_hw[0] * out_hw[1]
    return pixels * k[0] * k[1] * input.shape[1] * input.element_size()


def conv_path(input: Tensor, weight: Tensor, spec: ConvSpec) -> str:
    """How the training convolution of ``input`` [N, C_in, H, W] by
    ``weight`` [C_out, C_in, kH, kW] runs: "onednn", "gemm" (a matrix
    product, see the module doc) or "winograd" (3x3 stride-1 convolutions in
    float32, see winograd.py), measured on first use of its shape, forward +
    backward. While torch.compile traces, oneDNN: a trace cannot time
    anything."""
    gemm_ok = MODE != "never" and eligible(input, weight, spec)
    if gemm_ok and MODE == "always":
        return "gemm"
    if torch.compiler.is_compiling():
        return "onednn"
    if gemm_ok:
        gemm_ok = (
            _patch_bytes(input, weight, spec, _output_hw(input, weight, spec)) <= MAX_PATCH_BYTES
        )
    winograd_ok = winograd.trainable(input, weight, spec)
    if not (gemm_ok or winograd_ok):
        return "onednn"
    key = (
        "conv", tuple(input.shape), tuple(weight.shape), spec, input.dtype,
        torch.get_num_threads(),
    )  # fmt: skip
    candidates = lambda: _candidates(input, weight, spec, gemm_ok, winograd_ok)  # noqa: E731
    return measured.choose(key, "onednn", candidates, input.device)


def _candidates(
    input: Tensor, weight: Tensor, spec: ConvSpec, gemm: bool, by_winograd: bool
) -> dict:
    """One training use of the convolution each way it may run: forward,
    then the input and weight gradients, on detached copies (no autograd
    state)."""
    x, w = input.detach(), weight.detach()
    out_hw = _output_hw(x, w, spec)
    grad = x.new_ones((x.shape[0], w.shape[0], *out_hw)).contiguous(
        memory_format=torch.channels_last
    )
    mask = (True, True, False)

    def onednn():
        F.conv2d(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups)
        _onednn_backward(grad, x, w, None, spec, mask)

    def by_gemm():
        _gemm_forward(x, w, None, spec)
        _gemm_backward(grad, x, w, spec, mask)

    def winograd_step():
        _winograd_forward(x, w, None)
        _winograd_backward(grad, x, w, None, spec, mask)

    found = {"onednn": onednn}
    if gemm:
        found["gemm"] = by_gemm
    if by_winograd:
        found["winograd"] = winograd_step
    return found


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


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None, spec: ConvSpec) -> Tensor:
    """F.conv2d(input, weight, bias, *spec), as a matrix product or as
    Winograd where :func:`conv_path` says so.

    Args:
        input: [N, C_in, H, W].
        weight: [C_out, C_in / groups, kH, kW].
        bias: [C_out] or None.
        spec: stride, padding, dilation, groups.

    Returns:
        [N, C_out, H_out, W_out].
    """
    path = conv_path(input, weight, spec)
    if path == "gemm":
        return _gemm_forward(input, weight, bias, spec)
    if path == "winograd":
        return _winograd_forward(input, weight, bias)
    return F.conv2d(input, weight, bias, spec.stride, spec.padding, spec.dilation, spec.groups)


def _gemm_forward(input: Tensor, weight: Tensor, bias: Tensor | None, spec: ConvSpec) -> Tensor:
    k = (weight.shape[2], weight.shape[3])
    out_hw = _output_hw(input, weight, spec)
    cols = _patches(input, k, out_hw, spec)
    w2 = _weight_matrix(weight)
    out = torch.mm(cols, w2.t()) if bias is None else torch.addmm(bias, cols, w2.t())
    return out.view(input.shape[0], out_hw[0], out_hw[1], -1).permute(0, 3, 1, 2)


def _winograd_forward(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return winograd.conv3x3(input, winograd.weight_tiles(weight), bias, None, False)


def conv2d_backward(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    spec: ConvSpec,
    mask: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(grad_input, grad_weight, grad_bias) of :func:`conv2d`, each computed
    only where ``mask`` asks for it. The convolution runs in grad's dtype
    (the dtype it ran forward in, also under autocast) and each gradient
    comes back in the dtype of what it differentiates.

    Args:
        grad: [N, C_out, H_out, W_out], the gradient of the output.
        input: [N, C_in, H, W].
        weight: [C_out, C_in / groups, kH, kW].
        bias: [C_out] or None.
        spec: stride, padding, dilation, groups.
        mask: which of (input, weight, bias) need a gradient.
    """
    dtype = grad.dtype
    x, wt = input.to(dtype), weight.to(dtype)
    path = conv_path(x, wt, spec)
    if path == "gemm":
        grad_input, grad_weight, grad_bias = _gemm_backward(grad, x, wt, spec, mask)
    elif path == "winograd":
        grad_input, grad_weight, grad_bias = _winograd_backward(grad, x, wt, bias, spec, mask)
    else:
        grad_input, grad_weight, grad_bias = _onednn_backward(grad, x, wt, bias, spec, mask)
    if grad_input is not None:
        grad_input = grad_input.to(input.dtype)
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    if grad_bias is not None and bias is not None:
        grad_bias = grad_bias.to(bias.dtype)
    return grad_input, grad_weight, grad_bias


def _onednn_backward(grad, input, weight, bias, spec: ConvSpec, mask):
    return _aten.convolution_backward(
        grad, input, weight, None if bias is None else [bias.shape[0]],
        spec.stride, spec.padding, spec.dilation, False, [0, 0], spec.groups, list(mask),
    )  # fmt: skip


def _winograd_backward(grad, input, weight, bias, spec: ConvSpec, mask):
    """The input gradient of a 3x3 stride-1 convolution with padding 1 is the
    same kind of convolution of ``grad``, by the kernels transposed (C_in and
    C_out swapped) and turned by 180 degrees: Winograd too. The weight and
    bias gradients are oneDNN's."""
    grad_input = None
    if mask[0]:
        turned = weight.transpose(0, 1).flip(2, 3)
        grad_cl = grad.contiguous(memory_format=torch.channels_last)
        grad_input = winograd.conv3x3(grad_cl, winograd.weight_tiles(turned), None, None, False)
    _, grad_weight, grad_bias = _onednn_backward(
        grad, input, weight, bias, spec, (False, *mask[1:])
    )
    return grad_input, grad_weight, grad_bias


def _gemm_backward(grad: Tensor, input: Tensor, weight: Tensor, spec: ConvSpec, mask):
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
