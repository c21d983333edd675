"""The fused ops on the Triton backend, with the semantics of the C++ ops:
what resnet_fast.functional calls when the backend resolves to "triton".

Running statistics are updated here, with in-place ATen ops, after the
functional statistics op (see bn_ops for why the op itself cannot mutate).
"""

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from .. import _checks
from .._conv_eval import fold_bn
from .._numerics import acc_dtype, update_running_stats
from .add_relu_ops import triton_add_relu_fwd
from .bn_ops import triton_bn_act_fwd, triton_bn_add_act_fwd, triton_bn_stats
from .conv_ops import triton_conv2d, triton_conv2d_stats


def batch_statistics(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """(save_mean, save_invstd) as the C++ forward ops return them: [C]
    float64 mean and acc-type 1 / sqrt(var + eps), of the batch in training
    (running statistics updated) and of the running statistics in eval."""
    if training:
        mean, var = triton_bn_stats(input.detach())
        count = input.numel() // max(input.shape[1], 1)
        update_running_stats(running_mean, running_var, mean, var, momentum, count)
    else:
        mean = running_mean.detach().double().clone()
        var = running_var.detach().double()
    return mean, _invstd(var, eps, input.dtype)


def _invstd(var: Tensor, eps: float, dtype: torch.dtype) -> Tensor:
    return (1.0 / torch.sqrt(var + eps)).to(acc_dtype(dtype))


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
    resnet_fast.functional.batch_norm_add_relu (already checked there).

    Returns:
        [N, C, H, W], the dtype of ``input``, channels_last when it is.
    """
    save_mean, save_invstd = batch_statistics(
        input, running_mean, running_var, training, momentum, eps
    )
    return _apply(input, residual, weight, bias, save_mean, save_invstd, training, relu)


def forward_with_statistics(
    input: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(out, save_mean, save_invstd) as the C++ bn_act_fwd / bn_add_act_fwd
    return them, running statistics updated: what the memory-lean blocks
    (resnet_fast.nn.lean) call on the Triton backend."""
    save_mean, save_invstd = batch_statistics(
        input, running_mean, running_var, training, momentum, eps
    )
    out = _apply(input, residual, weight, bias, save_mean, save_invstd, training, relu)
    return out, save_mean, save_invstd


def apply_statistics(input, residual, weight, bias, save_mean, save_invstd, relu):
    """act((input - save_mean) * save_invstd * weight + bias [+ residual]):
    the signature of the bn_apply stage op, on Triton."""
    return _apply(input, residual, weight, bias, save_mean, save_invstd, True, relu)


def _apply(input, residual, weight, bias, save_mean, save_invstd, training, relu):
    if residual is None:
        return triton_bn_act_fwd(input, weight, bias, save_mean, save_invstd, training, relu)
    return triton_bn_add_act_fwd(
        input, residual, weight, bias, save_mean, save_invstd, training, relu
    )


def add_relu(input: Tensor, other: Tensor) -> Tensor:
    """relu(input + other) on Triton, laid out like ``input``."""
    return triton_add_relu_fwd(input, other)


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
    save_invstd = _invstd(var, eps, y.dtype)
    return _apply(y, residual, weight, bias, mean, save_invstd, True, relu)


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
