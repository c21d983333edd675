"""The BN stage ops (statistics, apply, backward reductions, grad-input) as
a set of functions per backend: the torch.ops.resnet_fast ops where the
device's backend has kernels for them, pure PyTorch elsewhere.

The stages are what a synchronized BatchNorm needs between its collectives
(see resnet_fast/distributed.py); this file knows nothing of processes.
Fake kernels of the stage ops are registered here too.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from . import _backend, _checks
from ._numerics import acc_dtype, split_mean
from ._ops import (
    _empty_activation,
    _empty_channels,
    _empty_mean,
    ops,
    output_memory_format,
)

_STAGE_OPS = ("bn_stats", "bn_apply", "bn_act_bwd_reduce", "bn_add_act_bwd_reduce", "bn_bwd_apply")


# --- fake kernels ------------------------------------------------------------

# The stage ops name their statistics mean / invstd (csrc/cpu/bn_stages.cpp).
_STAGE_NAMES = dict(mean_name="mean", invstd_name="invstd")


@torch.library.register_fake("resnet_fast::bn_stats")
def _bn_stats_fake(input):
    _checks.check_activation(input, "input")
    return _empty_mean(input), _empty_mean(input)


@torch.library.register_fake("resnet_fast::bn_apply")
def _bn_apply_fake(input, residual, weight, bias, mean, invstd, relu):
    _checks.check_bn_apply_op(input, residual, weight, bias, mean, invstd)
    return _empty_activation(input)


@torch.library.register_fake("resnet_fast::bn_act_bwd_reduce")
def _bn_act_bwd_reduce_fake(grad_out, input, weight, bias, mean, invstd, relu):
    _checks.check_bn_backward_op(grad_out, input, None, weight, bias, mean, invstd, **_STAGE_NAMES)
    return _empty_channels(input), _empty_channels(input)


@torch.library.register_fake("resnet_fast::bn_add_act_bwd_reduce")
def _bn_add_act_bwd_reduce_fake(grad_out, input, residual, weight, bias, mean, invstd, relu):
    _checks.check_bn_backward_op(
        grad_out, input, residual, weight, bias, mean, invstd, **_STAGE_NAMES
    )
    return _empty_channels(input), _empty_channels(input), _empty_activation(input)


@torch.library.register_fake("resnet_fast::bn_bwd_apply")
def _bn_bwd_apply_fake(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    _checks.check_bn_backward_op(
        grad, input, None, weight, bias, mean, invstd, "grad", "mean", "invstd"
    )
    _checks.check_channel_stat(mean_g, "mean_g", input, acc_dtype(input.dtype))
    _checks.check_channel_stat(mean_gx, "mean_gx", input, acc_dtype(input.dtype))
    return _empty_activation(input)


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


def _torch_stats(input: Tensor) -> tuple[Tensor, Tensor]:
    c = input.shape[1]
    if input.numel() == 0:
        zeros = input.new_zeros((c,), dtype=torch.float64)
        return zeros, zeros.clone()
    # float64 keeps the mean exact enough to center inputs with a large offset.
    var, mean = torch.var_mean(input.double(), dim=(0, 2, 3), correction=0)
    return mean, var


def _torch_apply(input, residual, weight, bias, mean, invstd, relu):
    _, y = _affine(input, weight, bias, mean, invstd)
    if residual is not None:
        y = y + residual.to(y.dtype)
    if relu:
        y = torch.relu(y)
    return _like_input(y, input)


def _masked(grad: Tensor, pre: Tensor, relu: bool) -> Tensor:
    g = grad.to(pre.dtype)
    return torch.where(pre > 0, g, torch.zeros_like(g)) if relu else g


def _torch_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    centered, pre = _affine(input, weight, bias, mean, invstd)
    if residual is not None:
        pre = pre + residual.to(pre.dtype)
    g = _masked(grad_out, pre, relu)
    sum_g, sum_gx = g.sum(dim=(0, 2, 3)), (g * centered).sum(dim=(0, 2, 3))
    return sum_g, sum_gx, (_like_input(g, input) if residual is not None else None)


def _torch_act_bwd_reduce(grad_out, input, weight, bias, mean, invstd, relu):
    return _torch_bwd_reduce(grad_out, input, None, weight, bias, mean, invstd, relu)[:2]


def _torch_add_act_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    return _torch_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu)


def _torch_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    centered, pre = _affine(input, weight, bias, mean, invstd)
    g = _masked(grad, pre, relu_mask)
    scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
    dx = _channel(scale) * (g - _channel(mean_g) - centered * _channel(invstd * invstd * mean_gx))
    return _like_input(dx, input)


# --- selection -----------------------------------------------------------------


class Stages(NamedTuple):
    """One backend's stage functions, with the signatures of the ops of the
    same names in csrc/registration.cpp."""

    stats: Callable
    apply: Callable
    act_bwd_reduce: Callable
    add_act_bwd_reduce: Callable
    bwd_apply: Callable


NATIVE = Stages(
    ops.bn_stats, ops.bn_apply, ops.bn_act_bwd_reduce, ops.bn_add_act_bwd_reduce, ops.bn_bwd_apply
)
TORCH = Stages(
    _torch_stats, _torch_apply, _torch_act_bwd_reduce, _torch_add_act_bwd_reduce, _torch_bwd_apply
)


def _native_kernels_for(key: str) -> bool:
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"resnet_fast::{name}", key)
        for name in _STAGE_OPS
    )


# Looked up once (the extension registered every kernel when it was imported):
# torch.compile reads this dict as a constant, while the dispatcher query
# itself would break the graph.
_NATIVE_BY_DEVICE_TYPE = {"cpu": _native_kernels_for("CPU"), "cuda": _native_kernels_for("CUDA")}


def _has_native_kernels(device: torch.device) -> bool:
    return _NATIVE_BY_DEVICE_TYPE.get(device.type, False)


def stages_for(device: torch.device) -> Stages:
    """The stage functions for tensors on ``device`` under the current backend
    (see resnet_fast.use_backend). The "reference" backend runs pure PyTorch;
    so does, with a one-time warning, a device without native stage kernels
    (CUDA tensors on Triton when the CUDA kernels were not built)."""
    backend = _backend.resolve(device)
    if backend == "reference":
        return TORCH
    if _has_native_kernels(device):
        return NATIVE
    _backend._warn_once(
        f"stages-{device.type}",
        f"resnet_fast: the {backend!r} backend has no kernels for the BN stage ops on "
        f"{device.type} tensors; synchronized BatchNorm runs them in pure PyTorch "
        "(slower, unfused)",
    )
    return TORCH
