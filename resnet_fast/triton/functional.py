"""The fused functional ops on the Triton backend: what resnet_fast.functional
calls when the backend resolves to "triton". The BN and add + ReLU functions
call the ops of torch.ops.resnet_fast_triton (the contract of every backend);
the convolutions call the Triton convolution ops (conv_ops.py).
"""

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from .. import _checks
from .._conv_eval import fold_bn
from .._numerics import acc_dtype, update_running_stats
from . import add_relu_ops, bn_ops  # noqa: F401  (register the ops' kernels)
from .conv_ops import triton_conv2d, triton_conv2d_stats
from .ops import ops


def batch_norm_act(
    input: Tensor,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    relu: bool,
) -> Tensor:
    """act(batch_norm(input) [+ residual]) on Triton; arguments as in
    resnet_fast.functional.batch_norm_add_relu.

    Returns:
        [N, C, H, W], the dtype of ``input``, channels_last when it is.
    """
    args = (weight, bias, running_mean, running_var, training, float(momentum), float(eps), relu)
    if residual is None:
        return ops.bn_act_fwd(input, *args)[0]
    return ops.bn_add_act_fwd(input, residual, *args)[0]


def add_relu(input: Tensor, other: Tensor) -> Tensor:
    """relu(input + other) on Triton, laid out like ``input``."""
    return ops.add_relu_fwd(input, other)


class _ApplyBatchStatistics(torch.autograd.Function):
    """act(bn(y) [+ residual]) with y's batch statistics given (they came out
    of the convolution's epilogue): bn_apply forward; backward through the
    statistics as well (the fused bn_*_bwd in training)."""

    @staticmethod
    def forward(ctx, y, residual, weight, bias, mean, invstd, relu):
        ctx.save_for_backward(y, residual, weight, bias, mean, invstd)
        ctx.relu = relu
        return ops.bn_apply(y, residual, weight, bias, mean, invstd, relu)

    @staticmethod
    def backward(ctx, grad_out):
        y, residual, weight, bias, mean, invstd = ctx.saved_tensors
        if residual is None:
            grad_y, grad_weight, grad_bias = ops.bn_act_bwd(
                grad_out, y, weight, bias, mean, invstd, True, ctx.relu
            )
            grad_residual = None
        else:
            grad_y, grad_residual, grad_weight, grad_bias = ops.bn_add_act_bwd(
                grad_out, y, residual, weight, bias, mean, invstd, True, ctx.relu
            )
        return (
            grad_y, grad_residual,
            grad_weight if weight is not None else None,
            grad_bias if bias is not None else None,
            None, None, None,
        )  # fmt: skip


def conv_bn_act_train(
    input: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float,
    eps: float,
    relu: bool,
) -> Tensor:
    """act(batch_norm(conv2d(input)) [+ residual]) in training: the batch
    statistics come out of the convolution's epilogue, then one fused apply
    pass. Arguments as in resnet_fast.functional.conv_bn_relu.

    Returns:
        [N, C_out, H_out, W_out], the dtype and memory format of ``input``.
    """
    y, mean, var = triton_conv2d_stats(
        input, conv_weight, conv_bias, stride, padding, dilation, groups
    )
    count = y.numel() // max(y.shape[1], 1)
    update_running_stats(running_mean, running_var, mean, var, momentum, count)
    invstd = (1.0 / torch.sqrt(var + eps)).to(acc_dtype(y.dtype))
    return _ApplyBatchStatistics.apply(y, residual, weight, bias, mean, invstd, relu)


def conv2d_act(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    residual: Tensor | None,
    relu: bool,
) -> Tensor:
    """act(conv2d(input, weight) + bias [+ residual]) written once: the
    inference path of a conv + folded BN (+ add) (+ ReLU).

    Args:
        input: [N, C_in, H, W], fp16 / bf16 / fp32 / fp64 (channels_last is
            the fast layout).
        weight: [C_out, C_in / groups, KH, KW].
        bias: [C_out] or None.
        residual: [N, C_out, H_out, W_out] or None.

    Returns:
        [N, C_out, H_out, W_out], laid out like ``input``.
    """
    return triton_conv2d(input, weight, bias, residual, stride, padding, dilation, groups, relu)


def conv_bn_act(
    input, conv_weight, conv_bias, stride, padding, dilation, groups, residual,
    running_mean, running_var, bn_weight, bn_bias, training, momentum, eps, relu,
) -> Tensor:  # fmt: skip
    """resnet_fast.functional.conv_bn_relu on Triton (same arguments, checked
    there except the [C_out] vectors). Training: the convolution's epilogue
    yields the BN statistics, then one fused BN [+ residual] [+ ReLU] pass.
    Eval: BN folded into the weights; bias, residual and ReLU are the
    convolution's epilogue, so the output is written once.

    Returns:
        [N, C_out, H_out, W_out], laid out like ``input``.
    """
    _checks.check_channel_vectors(
        conv_weight.shape[0],
        conv_weight.device,
        f"the output channels of conv_weight {tuple(conv_weight.shape)}",
        running_mean=running_mean,
        running_var=running_var,
        bn_weight=bn_weight,
        bn_bias=bn_bias,
        conv_bias=conv_bias,
    )
    if residual is not None:
        _checks.check_activation(residual, "residual")
    geometry = (list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)), groups)
    if training:
        return conv_bn_act_train(
            input, conv_weight, conv_bias, *geometry, residual, running_mean, running_var,
            bn_weight, bn_bias, float(momentum), float(eps), relu,
        )  # fmt: skip
    weight, bias = fold_bn(
        conv_weight, conv_bias, running_mean, running_var, bn_weight, bn_bias, eps
    )
    return conv2d_act(input, weight, bias, *geometry, residual, relu)
