"""Eval-mode convolution with BatchNorm folded in, and its fused epilogue.

Folding: conv(x, w) * s + t with s = gamma / sqrt(var + eps) and
t = beta - mean * s equals conv(x, w * s) + (conv_bias - mean) * s + beta.
It is written with differentiable torch ops, so gradients flow to the conv
weight and the BN affine parameters (fine-tuning with frozen statistics).
"""

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .spec import float32_channels_last

_IntOr2 = int | Sequence[int]
# Read once: torch.compile does not trace into torch.backends.
ONEDNN = torch.backends.mkldnn.is_available()
# Before torch 2.13, oneDNN's convolution with a sum post-op fails on a 1x1
# input ("could not create a memory"); those calls take the unfused path.
_BINARY_NEEDS_2PX = torch.torch_version.TorchVersion(torch.__version__) < (2, 13)
_warned_1px = False


def fold_bn(
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Folds eval-mode BatchNorm into the preceding convolution.

    Args:
        conv_weight: [C_out, C_in / groups, kH, kW].
        conv_bias: [C_out] or None.
        running_mean, running_var: [C_out].
        bn_weight, bn_bias: [C_out] or None.
        eps: BatchNorm's epsilon.

    Returns:
        (weight [C_out, C_in / groups, kH, kW], bias [C_out]) in the dtype of
        conv_weight, computed in float32 (float64 for float64 weights).
    """
    dtype = torch.float64 if conv_weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(running_var.to(dtype) + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.to(dtype)
    shift = -running_mean.to(dtype)
    if conv_bias is not None:
        shift = shift + conv_bias.to(dtype)
    bias = shift * scale
    if bn_bias is not None:
        bias = bias + bn_bias.to(dtype)
    weight = conv_weight.to(dtype) * scale.view(-1, 1, 1, 1)
    return weight.to(conv_weight.dtype), bias.to(conv_weight.dtype)


def pack_for_onednn(weight: Tensor, input: Tensor, stride, padding, dilation, groups) -> Tensor:
    """weight reordered once into oneDNN's blocked layout for this input shape
    (a plain weight is reordered on every call: 3.1 ms -> 0.8 ms for a
    1024->2048 1x1 conv at batch 16, 2x2)."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.contiguous().to_mkldnn(),
        _pair(padding),
        _pair(stride),
        _pair(dilation),
        groups,
        list(input.shape),
    )


def _pair(v: _IntOr2) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _onednn_post_ops_apply(input: Tensor, weight: Tensor, tensors: Sequence[Tensor | None]) -> bool:
    """Whether the oneDNN convolution with fused post-ops can run this call.

    It has no autograd, so it is used only when no gradient is needed.
    """
    if input.device.type != "cpu" or not ONEDNN:
        return False
    if input.dtype not in (torch.float32, torch.bfloat16) or weight.dtype != input.dtype:
        return False
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, *tensors)
    )
    return not needs_grad


def _binary_1px_unsupported(input: Tensor, residual: Tensor | None) -> bool:
    global _warned_1px
    if residual is None or not _BINARY_NEEDS_2PX or input.shape[-2] * input.shape[-1] != 1:
        return False
    if not _warned_1px:
        _warned_1px = True
        warnings.warn(
            f"resnet_fast: torch {torch.__version__} cannot run oneDNN's fused convolution + add "
            "on a 1x1 input; those convolutions run unfused (torch >= 2.13 fuses them)",
            RuntimeWarning,
            stacklevel=3,
        )
    return True


def onednn_call(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: _IntOr2,
    padding: _IntOr2,
    dilation: _IntOr2,
    groups: int,
    residual: Tensor | None,
    relu: bool,
    packed: Callable[[], Tensor] | None = None,
    into_residual: bool = False,
) -> Callable[[Tensor, Tensor | None], Tensor] | None:
    """oneDNN's convolution with bias, sum and ReLU post-ops (one write of
    the output) for arguments like these, as a call of (input, residual), or
    None where it cannot run them: not on the CPU, a dtype oneDNN does not
    fuse, or a gradient needed (it has no autograd). It runs the weight that
    `packed()` returns when given (oneDNN's own layout, prepacked once by
    the caller's cache). With `into_residual` (the caller's promise that
    nothing reads the residual afterwards) a residual in the input's
    channels_last layout receives the result, and is returned."""
    if not _onednn_post_ops_apply(input, weight, (bias, residual)) or _binary_1px_unsupported(
        input, residual
    ):
        return None
    if packed is not None:
        weight = packed()
    args = (_pair(padding), _pair(stride), _pair(dilation), groups)
    if residual is None:
        unary = torch.ops.mkldnn._convolution_pointwise.default
        post = "relu" if relu else "none"
        return lambda x, _: unary(x, weight, bias, *args, post, [], "")
    post = "relu" if relu else None
    if into_residual and float32_channels_last(input, residual):
        summed = torch.ops.mkldnn._convolution_pointwise_.binary
        return lambda x, r: summed(r, x, weight, bias, *args, "add", 1.0, post, [], "")
    binary = torch.ops.mkldnn._convolution_pointwise.binary
    return lambda x, r: binary(x, r, weight, bias, *args, "add", 1.0, post, [], "")


def conv_folded_act(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: _IntOr2,
    padding: _IntOr2,
    dilation: _IntOr2,
    groups: int,
    residual: Tensor | None,
    relu: bool,
    add_relu: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """act(conv2d(input, weight, bias) [+ residual]) with the epilogue fused:
    oneDNN's post-ops where they run (:func:`onednn_call`); otherwise the
    convolution with bias followed by the fused add_relu op (or ReLU)."""
    call = onednn_call(input, weight, bias, stride, padding, dilation, groups, residual, relu)
    if call is not None:
        return call(input, residual)
    y = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if residual is None:
        return torch.relu(y) if relu else y
    return add_relu(y, residual) if relu else y + residual
