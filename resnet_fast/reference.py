"""Pure-PyTorch reference of every fused op: the oracle of the tests (run in
float64) and the "reference" backend.

Written from the definitions, not through torch.nn.functional.batch_norm, so
that the tests compare the kernels with an independent computation. Half and
bfloat16 inputs are computed in float32 and rounded once at the end.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["batch_norm_act", "batch_norm_add_act", "add_relu", "conv_bn_act"]


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _per_channel(v: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if v is None else v.to(dtype).view(1, -1, 1, 1)


def batch_norm_act(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = True,
    residual: Tensor | None = None,
) -> Tensor:
    """act(batch_norm(input) [+ residual]) from the definition.

    Args:
        input: [N, C, H, W].
        running_mean, running_var: [C] or None; updated in place in training
            with ``(1 - momentum) * running + momentum * batch`` (unbiased var).
        weight, bias: [C] or None.
        training: batch statistics (True) or running statistics (False).
        relu: apply ReLU (True) or identity.
        residual: [N, C, H, W] added after the affine transform, or None.

    Returns:
        [N, C, H, W] in the dtype of ``input``.
    """
    dtype = _compute_dtype(input)
    x = input.to(dtype)
    if training:
        # var_mean's Welford reduction stays accurate for inputs with a large mean.
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        count = x.numel() // max(x.shape[1], 1)  # C = 0: an empty batch
        if running_mean is not None and count > 1:
            with torch.no_grad():
                unbiased = var * (count / (count - 1))
                running_mean.mul_(1 - momentum).add_(
                    momentum * mean.detach().to(running_mean.dtype)
                )
                running_var.mul_(1 - momentum).add_(
                    momentum * unbiased.detach().to(running_var.dtype)
                )
    else:
        mean = running_mean.to(dtype)
        var = running_var.to(dtype)
    y = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + eps)
    if weight is not None:
        y = y * _per_channel(weight, dtype)
    if bias is not None:
        y = y + _per_channel(bias, dtype)
    if residual is not None:
        y = y + residual.to(dtype)
    if relu:
        y = torch.relu(y)
    return y.to(input.dtype)


def batch_norm_add_act(
    input: Tensor,
    residual: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = True,
) -> Tensor:
    """act(batch_norm(input) + residual); see batch_norm_act."""
    return batch_norm_act(
        input, running_mean, running_var, weight, bias, training, momentum, eps, relu, residual
    )


def add_relu(input: Tensor, other: Tensor) -> Tensor:
    """relu(input + other), computed in float32 for half/bfloat16."""
    dtype = _compute_dtype(input)
    return torch.relu(input.to(dtype) + other.to(dtype)).to(input.dtype)


def conv_bn_act(
    input: Tensor,
    conv_weight: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    bn_weight: Tensor | None = None,
    bn_bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    conv_bias: Tensor | None = None,
    residual: Tensor | None = None,
    relu: bool = True,
) -> Tensor:
    """act(batch_norm(conv2d(input)) [+ residual]), unfused and unfolded."""
    y = F.conv2d(input, conv_weight, conv_bias, stride, padding, dilation, groups)
    return batch_norm_act(
        y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps, relu, residual
    )
