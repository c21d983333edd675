"""torch.ops.resnet_fast_reference: every op of the contract in pure
PyTorch, the "reference" backend (any device: the fallback where no kernels
run, and a second implementation to check the kernels against).

Same schemas, checks, fake kernels and autograd as every backend
(contract.declare_namespace); the computation follows the kernels' numeric
rules (numerics.py: float64 statistics, the two-part mean, the running
statistics update), written with ATen ops. resnet_fast.reference, the tests'
oracle, stays a separate computation written from the definitions.
"""

import torch
from torch import Tensor

from . import checks
from .contract import declare_namespace
from .layout import output_memory_format
from .numerics import acc_dtype, split_mean, update_running_stats


def _channel(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


def _affine(input: Tensor, weight, bias, mean: Tensor, invstd: Tensor):
    """(centered input, pre-activation without residual), both in the acc dtype."""
    acc = acc_dtype(input.dtype)
    mean_hi, mean_lo = split_mean(mean, acc)  # as the kernels center
    centered = (input.to(acc) - _channel(mean_hi)) - _channel(mean_lo)
    scale = invstd if weight is None else invstd * weight.to(acc)
    pre = centered * _channel(scale)
    if bias is not None:
        pre = pre + _channel(bias.to(acc))
    return centered, pre


def _like_input(t: Tensor, input: Tensor) -> Tensor:
    """t in input's dtype and in the memory format the kernels would write."""
    return t.to(input.dtype).contiguous(memory_format=output_memory_format(input))


def _bn_stats(input: Tensor) -> tuple[Tensor, Tensor]:
    c = input.shape[1]
    if input.numel() == 0:
        zeros = input.new_zeros((c,), dtype=torch.float64)
        return zeros, zeros.clone()
    # float64 keeps the mean exact enough to center inputs with a large offset.
    var, mean = torch.var_mean(input.double(), dim=(0, 2, 3), correction=0)
    return mean, var


def _bn_apply(input, residual, weight, bias, mean, invstd, relu):
    _, y = _affine(input, weight, bias, mean, invstd)
    if residual is not None:
        y = y + residual.to(y.dtype)
    if relu:
        y = torch.relu(y)
    return _like_input(y, input)


def _masked(grad: Tensor, pre: Tensor, relu: bool) -> Tensor:
    g = grad.to(pre.dtype)
    return torch.where(pre > 0, g, torch.zeros_like(g)) if relu else g


def _bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    centered, pre = _affine(input, weight, bias, mean, invstd)
    if residual is not None:
        pre = pre + residual.to(pre.dtype)
    g = _masked(grad_out, pre, relu)
    sum_g, sum_gx = g.sum(dim=(0, 2, 3)), (g * centered).sum(dim=(0, 2, 3))
    return sum_g, sum_gx, (_like_input(g, input) if residual is not None else None)


def _bn_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    centered, pre = _affine(input, weight, bias, mean, invstd)
    g = _masked(grad, pre, relu_mask)
    scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
    dx = _channel(scale) * (g - _channel(mean_g) - centered * _channel(invstd * invstd * mean_gx))
    return _like_input(dx, input)


def _count(input: Tensor) -> int:
    return input.numel() // max(input.shape[1], 1)


def _bn_forward(input, residual, weight, bias, running_mean, running_var, training, momentum,
                eps, relu):  # fmt: skip
    checks.check_bn_forward_op(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps
    )
    if training:
        mean, var = _bn_stats(input)
        update_running_stats(running_mean, running_var, mean, var, momentum, _count(input))
    else:
        # A copy: an output must not alias an input.
        mean, var = running_mean.to(torch.float64, copy=True), running_var.double()
    invstd = torch.rsqrt(var + eps).to(acc_dtype(input.dtype))
    return _bn_apply(input, residual, weight, bias, mean, invstd, relu), mean, invstd


def _bn_backward(grad_out, input, residual, weight, bias, mean, invstd, training, relu):
    checks.check_bn_backward_op(grad_out, input, residual, weight, bias, mean, invstd)
    sum_g, sum_gx, g = _bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu)
    if training:
        n = max(_count(input), 1)
        mean_g, mean_gx = sum_g / n, sum_gx / n
    else:  # the statistics are constants: no gradient flows through them
        mean_g, mean_gx = torch.zeros_like(sum_g), torch.zeros_like(sum_gx)
    grad = grad_out if g is None else g
    grad_input = _bn_bwd_apply(
        grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu and residual is None
    )
    grad_weight = (sum_gx * invstd).to(weight.dtype if weight is not None else sum_gx.dtype)
    grad_bias = sum_g.to(bias.dtype if bias is not None else sum_g.dtype)
    return grad_input, g, grad_weight, grad_bias


def _bn_act_fwd(input, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    return _bn_forward(
        input, None, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


def _bn_add_act_fwd(
    input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
):
    return _bn_forward(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


def _bn_act_bwd(grad_out, input, weight, bias, mean, invstd, training, relu):
    grad_input, _, grad_weight, grad_bias = _bn_backward(
        grad_out, input, None, weight, bias, mean, invstd, training, relu
    )
    return grad_input, grad_weight, grad_bias


def _bn_add_act_bwd(grad_out, input, residual, weight, bias, mean, invstd, training, relu):
    return _bn_backward(grad_out, input, residual, weight, bias, mean, invstd, training, relu)


def _add_relu_fwd(input, other):
    checks.check_elementwise_pair(input, "input", other, "other")
    acc = acc_dtype(input.dtype)
    return torch.relu(input.to(acc) + other.to(acc)).to(input.dtype)


def _add_relu_bwd(grad_out, output):
    checks.check_elementwise_pair(output, "output", grad_out, "grad_out")
    return torch.where(output > 0, grad_out, torch.zeros_like(grad_out))


def _checked_stats(input):
    checks.check_activation(input, "input")
    return _bn_stats(input)


def _checked_apply(input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_apply_op(input, residual, weight, bias, mean, invstd)
    return _bn_apply(input, residual, weight, bias, mean, invstd, relu)


_STAGE_NAMES = dict(mean_name="mean", invstd_name="invstd")


def _checked_act_bwd_reduce(grad_out, input, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(grad_out, input, None, weight, bias, mean, invstd, **_STAGE_NAMES)
    return _bwd_reduce(grad_out, input, None, weight, bias, mean, invstd, relu)[:2]


def _checked_add_act_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(
        grad_out, input, residual, weight, bias, mean, invstd, **_STAGE_NAMES
    )
    return _bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu)


def _checked_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    checks.check_bn_backward_op(
        grad, input, None, weight, bias, mean, invstd, "grad", "mean", "invstd"
    )
    checks.check_channel_stat(mean_g, "mean_g", input, acc_dtype(input.dtype))
    checks.check_channel_stat(mean_gx, "mean_gx", input, acc_dtype(input.dtype))
    return _bn_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask)


KERNELS = {
    "bn_act_fwd": _bn_act_fwd,
    "bn_act_bwd": _bn_act_bwd,
    "bn_add_act_fwd": _bn_add_act_fwd,
    "bn_add_act_bwd": _bn_add_act_bwd,
    "add_relu_fwd": _add_relu_fwd,
    "add_relu_bwd": _add_relu_bwd,
    "bn_stats": _checked_stats,
    "bn_apply": _checked_apply,
    "bn_act_bwd_reduce": _checked_act_bwd_reduce,
    "bn_add_act_bwd_reduce": _checked_add_act_bwd_reduce,
    "bn_bwd_apply": _checked_bwd_apply,
}

NAMESPACE = "resnet_fast_reference"
# Any device: ATen runs these ops wherever the tensors are.
_LIB = declare_namespace(NAMESPACE)
for _name, _fn in KERNELS.items():
    _LIB.impl(_name, _fn, "CompositeExplicitAutograd")
