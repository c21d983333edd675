"""The BN stage ops (statistics, apply, backward reductions, grad-input) for
the backend a device runs: the op namespace of its backend
(torch.ops.resnet_fast for the C++ / CUDA kernels, torch.ops.resnet_fast_triton
for Triton), or, for the "reference" backend, the same functions in pure
PyTorch, with the ops' names and signatures.

The stages are what a synchronized BatchNorm needs between its collectives
(see resnet_fast/distributed.py); this file knows nothing of processes.
"""

from types import SimpleNamespace

import torch
from torch import Tensor

from . import _backend
from ._numerics import acc_dtype, split_mean
from ._ops import output_memory_format

# --- pure PyTorch --------------------------------------------------------------


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


def _bn_act_bwd_reduce(grad_out, input, weight, bias, mean, invstd, relu):
    return _bwd_reduce(grad_out, input, None, weight, bias, mean, invstd, relu)[:2]


def _bn_add_act_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    return _bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu)


def _bn_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    centered, pre = _affine(input, weight, bias, mean, invstd)
    g = _masked(grad, pre, relu_mask)
    scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
    dx = _channel(scale) * (g - _channel(mean_g) - centered * _channel(invstd * invstd * mean_gx))
    return _like_input(dx, input)


# --- selection -----------------------------------------------------------------

EAGER = SimpleNamespace(
    bn_stats=_bn_stats,
    bn_apply=_bn_apply,
    bn_act_bwd_reduce=_bn_act_bwd_reduce,
    bn_add_act_bwd_reduce=_bn_add_act_bwd_reduce,
    bn_bwd_apply=_bn_bwd_apply,
)
"""The stage ops in pure PyTorch: the "reference" backend's."""


def stages_for(device: torch.device):
    """The stage ops for tensors on ``device`` under the current backend (see
    resnet_fast.use_backend): an object with the five stage ops as
    attributes (bn_stats, bn_apply, bn_act_bwd_reduce, bn_add_act_bwd_reduce,
    bn_bwd_apply), with the signatures of csrc/registration.cpp."""
    backend = _backend.resolve(device)
    return EAGER if backend == "reference" else _backend.op_namespace(backend)
