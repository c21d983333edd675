"""Fused functional ops, with torch.nn.functional.batch_norm's argument order
and defaults.

Every op picks a backend by device (see ``resnet_fast.use_backend``), runs
forward and backward as torch.ops.resnet_fast dispatcher ops, and works under
autograd and ``torch.compile(fullgraph=True)``.
"""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from ._ops import checks
from ._ops.backends import backend_for
from ._ops.fused import add_relu as _add_relu
from ._ops.fused import batch_norm_act
from .conv.folded import conv_folded_act, fold_bn

__all__ = ["batch_norm_relu", "batch_norm_add_relu", "add_relu", "conv_bn_relu", "fold_bn"]

_IntOr2 = int | Sequence[int]


def batch_norm_relu(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """relu(batch_norm(input)) in one fused op.

    Args:
        input: [N, C, H, W], float32/float64/float16/bfloat16, contiguous or
            channels_last (other strides work, some through a copy).
        running_mean: [C] or None. Updated in place when ``training``.
        running_var: [C] or None. Updated in place (unbiased) when ``training``.
        weight: [C] scale (gamma) or None.
        bias: [C] shift (beta) or None.
        training: normalize with the batch statistics (and update the running
            ones) or with the running statistics.
        momentum: weight of the batch statistic in the running average.
        eps: added to the variance.

    Returns:
        [N, C, H, W], the dtype and memory format of ``input``.
    """
    return batch_norm_act(
        input, None, running_mean, running_var, weight, bias, training, momentum, eps, True
    )


def batch_norm_add_relu(
    input: Tensor,
    residual: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """relu(batch_norm(input) + residual) in one fused op: the tail of a
    residual block.

    Args:
        input: [N, C, H, W], the last convolution's output.
        residual: [N, C, H, W], the shortcut; same dtype and device as input.
        running_mean, running_var, weight, bias, training, momentum, eps: as
            in :func:`batch_norm_relu`.

    Returns:
        [N, C, H, W], the dtype and memory format of ``input``.
    """
    return batch_norm_act(
        input, residual, running_mean, running_var, weight, bias, training, momentum, eps, True
    )


def add_relu(input: Tensor, other: Tensor) -> Tensor:
    """relu(input + other) in one pass.

    Args:
        input: any shape, float32/float64/float16/bfloat16.
        other: the shape, dtype and device of ``input`` (no broadcasting).

    Returns:
        relu(input + other), laid out like ``input``.
    """
    return _add_relu(input, other)


def conv_bn_relu(
    input: Tensor,
    conv_weight: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    bn_weight: Tensor | None = None,
    bn_bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    stride: _IntOr2 = 1,
    padding: _IntOr2 = 0,
    dilation: _IntOr2 = 1,
    groups: int = 1,
    conv_bias: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = True,
) -> Tensor:
    """act(batch_norm(conv2d(input)) [+ residual]).

    The convolution runs through PyTorch (oneDNN on the CPU, cuDNN on CUDA).
    In training, BN [+ residual] [+ ReLU] is one fused op after it. In eval, BN
    is folded into the convolution's weight and bias; the ReLU and residual
    add then run as the convolution's fused post-ops on the CPU (oneDNN) when
    no gradient is needed, else as a fused add_relu after it.

    Args:
        input: [N, C_in, H, W].
        conv_weight: [C_out, C_in / groups, kH, kW].
        running_mean, running_var, bn_weight, bn_bias: [C_out] or None, as in
            :func:`batch_norm_relu`.
        training, momentum, eps: as in :func:`batch_norm_relu`.
        stride, padding, dilation, groups, conv_bias: as in
            torch.nn.functional.conv2d.
        residual: [N, C_out, H_out, W_out] added before the activation, or None.
        relu: ReLU (True) or identity (False) as the activation.

    Returns:
        [N, C_out, H_out, W_out].
    """
    checks.check_activation(input, "input")
    checks.check_finite_nonneg("eps", eps)
    checks.check_finite_nonneg("momentum", momentum)
    if not isinstance(conv_weight, Tensor) or conv_weight.dim() != 4:
        raise ValueError(
            "conv_weight must be a 4-D tensor [C_out, C_in / groups, kH, kW], got "
            f"{getattr(conv_weight, 'shape', conv_weight)}"
        )
    fused_conv = backend_for(input.device).conv_bn_act
    if fused_conv is not None and (training or running_mean is not None):
        return fused_conv(
            input, conv_weight, conv_bias, stride, padding, dilation, groups, residual,
            running_mean, running_var, bn_weight, bn_bias, training, momentum, eps, relu,
        )  # fmt: skip
    if training or running_mean is None:
        y = F.conv2d(input, conv_weight, conv_bias, stride, padding, dilation, groups)
        return batch_norm_act(
            y, residual, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps,
            relu,
        )  # fmt: skip
    checks.check_conv_bn_vectors(
        conv_weight, conv_bias, running_mean, running_var, bn_weight, bn_bias
    )
    weight, bias = fold_bn(
        conv_weight, conv_bias, running_mean, running_var, bn_weight, bn_bias, eps
    )
    return conv_folded_act(
        input, weight, bias, stride, padding, dilation, groups, residual, relu, _add_relu
    )
