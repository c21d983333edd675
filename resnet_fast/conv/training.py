"""The training convolutions of the lean blocks (resnet_fast/lean/): forward
and backward, each run as oneDNN's direct convolution, as a matrix product
(gemm.py), as Winograd (winograd.py) or tap by tap (taps.py), whichever is
measured fastest for the shape on this machine (measured.py), forward and
backward together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import gemm, measured, taps, winograd
from .spec import ConvSpec, float32_channels_last, output_hw

_aten = torch.ops.aten


def conv_path(input: Tensor, weight: Tensor, spec: ConvSpec) -> str:
    """How the training convolution of ``input`` [N, C_in, H, W] by
    ``weight`` [C_out, C_in, kH, kW] runs: "onednn", "gemm" (a matrix
    product, see the module doc), "winograd" (3x3 stride-1 convolutions in
    float32, see winograd.py) or "taps" (1x1 and 3x3 convolutions in
    float32, see taps.py), measured on first use of its shape, forward +
    backward (while torch.compile traces too: measured.py)."""
    gemm_ok = gemm.MODE != "never" and gemm.eligible(input, weight, spec)
    if gemm_ok and gemm.MODE == "always":
        return "gemm"
    if gemm_ok:
        gemm_ok = (
            gemm.patch_bytes(input, weight, spec, output_hw(input, weight, spec))
            <= gemm.MAX_PATCH_BYTES
        )
    winograd_ok = winograd.trainable(input, weight, spec)
    taps_ok = taps_trainable(input, weight, spec)
    if not (gemm_ok or winograd_ok or taps_ok):
        return "onednn"
    key = ("conv", tuple(input.shape), tuple(weight.shape), spec, input.dtype)
    candidates = lambda: _candidates(input, weight, spec, gemm_ok, winograd_ok, taps_ok)  # noqa: E731
    return measured.choose(key, "onednn", candidates, input.device)


@measured.rebuilds("conv")
def _candidates_of_key(key: tuple) -> dict:
    """The candidates of a "conv" key, on random inputs of its shapes."""
    _, input_shape, weight_shape, spec, dtype, _ = key
    x = torch.randn(input_shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(weight_shape, dtype=dtype)
    gemm_ok = gemm.eligible(x, w, spec) and (
        gemm.patch_bytes(x, w, spec, output_hw(x, w, spec)) <= gemm.MAX_PATCH_BYTES
    )
    return _candidates(
        x, w, spec, gemm_ok, winograd.trainable(x, w, spec), taps_trainable(x, w, spec)
    )  # fmt: skip


def taps_trainable(input: Tensor, weight: Tensor, spec: ConvSpec) -> bool:
    """Whether a training convolution can run tap by tap (taps.py, where
    enabled): a 3x3 kernel with padding 1 or a 1x1 kernel without, stride 1
    or 2, no dilation, one group, float32 channels_last input, no autocast.

    Args:
        input: [N, C_in, H, W].
        weight: [C_out, C_in, kH, kW].
        spec: stride, padding, dilation, groups.
    """
    if not taps.ENABLED or torch.is_autocast_enabled("cpu") or input.numel() == 0:
        return False
    if weight.dtype != torch.float32:
        return False
    k = weight.shape[2]
    return (
        k in (1, 3)
        and tuple(weight.shape[2:]) == (k, k)
        and tuple(spec.padding) == (k // 2, k // 2)
        and tuple(spec.stride) in ((1, 1), (2, 2))
        and tuple(spec.dilation) == (1, 1)
        and spec.groups == 1
        and float32_channels_last(input)
    )


def _candidates(
    input: Tensor, weight: Tensor, spec: ConvSpec, with_gemm: bool, with_winograd: bool,
    with_taps: bool,
) -> dict:  # fmt: skip
    """One training use of the convolution each way it may run: forward,
    then the input and weight gradients, on detached copies (no autograd
    state)."""
    x, w = input.detach(), weight.detach()
    out_hw = output_hw(x, w, spec)
    grad = x.new_ones((x.shape[0], w.shape[0], *out_hw)).contiguous(
        memory_format=torch.channels_last
    )
    mask = (True, True, False)

    def onednn():
        F.conv2d(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups)
        _onednn_backward(grad, x, w, None, spec, mask)

    def by_gemm():
        gemm.forward(x, w, None, spec)
        gemm.backward(grad, x, w, spec, mask)

    def winograd_step():
        _winograd_forward(x, w, None)
        _winograd_backward(grad, x, w, None, spec, mask)

    def taps_step():
        _taps_forward(x, w, None, spec)
        _taps_backward(grad, x, w, None, spec, mask)

    found = {"onednn": onednn}
    if with_gemm:
        found["gemm"] = by_gemm
    if with_winograd:
        found["winograd"] = winograd_step
    if with_taps:
        found["taps"] = taps_step
    return found


def conv2d(
    input: Tensor, weight: Tensor, bias: Tensor | None, spec: ConvSpec, path: str | None = None
) -> Tensor:
    """F.conv2d(input, weight, bias, *spec), as a matrix product or as
    Winograd where :func:`conv_path` says so.

    Args:
        input: [N, C_in, H, W].
        weight: [C_out, C_in / groups, kH, kW].
        bias: [C_out] or None.
        spec: stride, padding, dilation, groups.
        path: conv_path's answer when the caller has it already.

    Returns:
        [N, C_out, H_out, W_out].
    """
    path = conv_path(input, weight, spec) if path is None else path
    if path == "gemm":
        return gemm.forward(input, weight, bias, spec)
    if path == "winograd":
        return _winograd_forward(input, weight, bias)
    if path == "taps":
        return _taps_forward(input, weight, bias, spec)
    return F.conv2d(input, weight, bias, spec.stride, spec.padding, spec.dilation, spec.groups)


def _winograd_forward(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return winograd.conv3x3(input, winograd.weight_tiles(weight), bias, None, False)


def conv2d_backward(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    spec: ConvSpec,
    mask: tuple[bool, bool, bool],
    path: str | None = None,
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
        path: how the forward ran (conv_path's answer), when the caller kept it.
    """
    dtype = grad.dtype
    x, wt = input.to(dtype), weight.to(dtype)
    path = conv_path(x, wt, spec) if path is None else path
    if path == "gemm":
        grad_input, grad_weight, grad_bias = gemm.backward(grad, x, wt, spec, mask)
    elif path == "winograd":
        grad_input, grad_weight, grad_bias = _winograd_backward(grad, x, wt, bias, spec, mask)
    elif path == "taps":
        grad_input, grad_weight, grad_bias = _taps_backward(grad, x, wt, bias, spec, mask)
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


def _taps_forward(input: Tensor, weight: Tensor, bias: Tensor | None, spec: ConvSpec) -> Tensor:
    return taps.conv(input, taps.weight_taps(weight), bias, None, False, spec.stride[0])


def _taps_backward(grad, input, weight, bias, spec: ConvSpec, mask):
    """Tap by tap: the weight gradient as one sum of input^T grad per tap
    (taps.weight_grad), and, at stride 1, the input gradient as the same kind
    of convolution of ``grad`` by the kernels transposed (C_in and C_out
    swapped) and turned by 180 degrees. At stride 2 the input gradient is a
    transposed convolution: oneDNN's."""
    grad_cl = grad.contiguous(memory_format=torch.channels_last)
    stride = spec.stride[0]
    grad_input = grad_weight = grad_bias = None
    if mask[0] and stride == 1:
        grad_input = taps.conv(grad_cl, taps.turned_weight_taps(weight), None, None, False, 1)
    elif mask[0]:
        grad_input = _onednn_backward(grad, input, weight, None, spec, (True, False, False))[0]
    if mask[1]:
        channels_last = not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last
        )
        grad_weight = taps.weight_grad(input, grad_cl, weight.shape[2], stride, channels_last)
    if mask[2] and bias is not None:
        grad_bias = grad.sum((0, 2, 3))
    return grad_input, grad_weight, grad_bias
