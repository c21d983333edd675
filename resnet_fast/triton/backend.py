"""The Triton backend (resnet_fast._ops.backends): importing this module
registers every kernel of torch.ops.resnet_fast_triton (bn_ops.py,
add_relu_ops.py) and its convolutions (conv_ops.py); conv_bn_act is the
backend's own conv + BN, which resnet_fast.functional.conv_bn_relu calls.
"""

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from .._ops import checks
from .._ops.numerics import acc_dtype, update_running_stats
from ..conv.folded import fold_bn
from . import add_relu_ops, bn_ops  # noqa: F401  (register the ops' kernels)
from .conv_ops import conv2d, conv2d_stats
from .ops import ops


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
    y, mean, var = conv2d_stats(input, conv_weight, conv_bias, stride, padding, dilation, groups)
    count = y.numel() // max(y.shape[1], 1)
    update_running_stats(running_mean, running_var, mean, var, momentum, count)
    invstd = (1.0 / torch.sqrt(var + eps)).to(acc_dtype(y.dtype))
    return _ApplyBatchStatistics.apply(y, residual, weight, bias, mean, invstd, relu)


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
    checks.check_conv_bn_vectors(
        conv_weight, conv_bias, running_mean, running_var, bn_weight, bn_bias
    )
    if residual is not None:
        checks.check_activation(residual, "residual")
    geometry = (list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)), groups)
    if training:
        return conv_bn_act_train(
            input, conv_weight, conv_bias, *geometry, residual, running_mean, running_var,
            bn_weight, bn_bias, float(momentum), float(eps), relu,
        )  # fmt: skip
    weight, bias = fold_bn(
        conv_weight, conv_bias, running_mean, running_var, bn_weight, bn_bias, eps
    )
    return conv2d(input, weight, bias, residual, *geometry, relu)
