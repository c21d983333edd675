"""The BN ops of torch.ops.resnet_fast_triton (see ops.py): the fused
forward and backward (bn_act_*, bn_add_act_*) and the stage ops (bn_stats,
bn_apply, bn_*_bwd_reduce, bn_bwd_apply), on four Triton kernels: a
per-channel statistics reduction, the apply (normalize [+ residual]
[+ ReLU]), the backward reduction (sums of g and g * (x - mean), g the
gradient through the ReLU mask, written out as grad_residual with a
residual) and the grad-input apply. The [C]-sized steps between them run as
ATen ops in float64. Semantics, checks and returns are the C++ ops'
(csrc/registration.cpp).
"""

import torch
import triton
from torch import Tensor

from .._ops import checks
from .._ops.layout import empty_activation
from .._ops.numerics import acc_dtype, merge_moments, split_mean, update_running_stats
from . import configs
from ._common import channels_inner, offset_dtype, rows_per_program, strides4, tl_acc
from .bn_kernels import (
    _bn_act_bwd_apply_kernel,
    _bn_act_bwd_reduce_kernel,
    _bn_act_fwd_kernel,
    _bn_stats_fwd_kernel,
)
from .interpreter import triton_interpreting
from .ops import implements

# sxc tells the layouts apart (1 for channels_last): each gets its own tuning.
_KEY = ["NHW", "C", "sxc"]
_stats_kernel = triton.autotune(configs.REDUCE, key=_KEY)(_bn_stats_fwd_kernel)
_apply_kernel = triton.autotune(configs.TILE, key=_KEY)(_bn_act_fwd_kernel)
_bwd_reduce_kernel = triton.autotune(configs.REDUCE, key=_KEY)(_bn_act_bwd_reduce_kernel)
_bwd_apply_kernel = triton.autotune(configs.TILE, key=_KEY)(_bn_act_bwd_apply_kernel)

# Channel blocks assumed when sizing the partial buffers (any config works).
_NOMINAL_BLOCK_C = 64


def _geometry(x: Tensor) -> tuple[int, int, int, int]:
    n, c, h, w = x.shape
    return n * h * w, h * w, w, c


def _tile_grid(nhw: int, c: int):
    return lambda meta: (triton.cdiv(nhw, meta["BLOCK_R"]), triton.cdiv(c, meta["BLOCK_C"]))


def _reduce_grid(nhw: int, c: int) -> tuple[int, object]:
    """(rows per program, grid) of a per-channel reduction."""
    per = rows_per_program(nhw, triton.cdiv(c, _NOMINAL_BLOCK_C))
    return per, lambda meta: (triton.cdiv(nhw, per), triton.cdiv(c, meta["BLOCK_C"]))


def merge_partials(part_mean: Tensor, part_m2: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """The per-program (mean, M2) rows of a reduction kernel, merged.

    Args:
        part_mean, part_m2: [P, C] statistics of P disjoint row ranges.
        counts: [P] float64 number of rows in each range (each at least 1).

    Returns:
        (mean, biased variance), [C] float64 each.
    """
    mean, var, _ = merge_moments(part_mean, part_m2.double() / counts[:, None], counts)
    return mean, var


def _program_counts(nhw: int, per: int, device) -> Tensor:
    starts = torch.arange(0, nhw, per, device=device, dtype=torch.float64)
    return (nhw - starts).clamp(max=per)


# --- launches -------------------------------------------------------------------


def _stats(input: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, biased var), [C] float64: shifted sums per program, merged."""
    nhw, hw, w, c = _geometry(input)
    if nhw == 0:
        zeros = input.new_zeros((c,), dtype=torch.float64)
        return zeros, zeros.clone()
    acc = acc_dtype(input.dtype)
    # One sample per channel: x - shift is exact and centered to ~1 std.
    shift = input[0, :, 0, 0].to(acc).contiguous()
    per, grid = _reduce_grid(nhw, c)
    programs = triton.cdiv(nhw, per)
    part_mean = input.new_empty((programs, c), dtype=acc)
    part_m2 = input.new_empty((programs, c), dtype=acc)
    _stats_kernel[grid](
        input, shift, part_mean, part_m2, nhw, hw, w, c, *strides4(input), per,
        CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype), IDX=offset_dtype(input),
    )  # fmt: skip
    mean_d, var = merge_partials(part_mean, part_m2, _program_counts(nhw, per, input.device))
    return shift.double() + mean_d, var


def _affine(input: Tensor, weight, bias, mean: Tensor, invstd: Tensor):
    """(mean_hi, mean_lo, scale, shift): [C] acc-type vectors of the apply."""
    acc = acc_dtype(input.dtype)
    mean_hi, mean_lo = split_mean(mean, acc)
    invstd = invstd.to(acc)
    scale = invstd * weight.to(acc) if weight is not None else invstd.clone()
    shift = bias.to(acc).contiguous() if bias is not None else torch.zeros_like(invstd)
    return mean_hi, mean_lo, scale.contiguous(), shift


def _apply(input, residual, weight, bias, mean, invstd, relu) -> Tensor:
    """act((input - mean) * invstd * weight + bias [+ residual])."""
    out = empty_activation(input)
    nhw, hw, w, c = _geometry(input)
    if input.numel() == 0:
        return out
    has_res = residual is not None
    _apply_kernel[_tile_grid(nhw, c)](
        input, residual if has_res else input, out,
        *_affine(input, weight, bias, mean, invstd),
        nhw, hw, w, c,
        *strides4(input), *strides4(residual if has_res else input), *strides4(out),
        HAS_RES=has_res, RELU=relu, CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype),
        IDX=offset_dtype(input, residual if has_res else input, out),
        EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    return out


def _bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    """(sum_g, sum_gx, grad_residual or None): [C] float64 sums over (N, H, W)
    of g and g * (input - mean), g = grad_out * [pre > 0] under relu (pre
    recomputed as in the forward, the residual in it); grad_residual = g."""
    nhw, hw, w, c = _geometry(input)
    acc = acc_dtype(input.dtype)
    has_res = residual is not None
    grad_residual = empty_activation(input) if has_res else None
    if input.numel() == 0:
        zeros = input.new_zeros((c,), dtype=torch.float64)
        return zeros, zeros.clone(), grad_residual
    mean_hi, mean_lo, scale, shift = _affine(input, weight, bias, mean, invstd)
    per, grid = _reduce_grid(nhw, c)
    programs = triton.cdiv(nhw, per)
    part_g = input.new_empty((programs, c), dtype=acc)
    part_gx = input.new_empty((programs, c), dtype=acc)
    res = residual if has_res else input
    gres = grad_residual if has_res else input
    _bwd_reduce_kernel[grid](
        grad_out, input, res, gres, mean_hi, mean_lo, scale, shift, part_g, part_gx,
        nhw, hw, w, c,
        *strides4(grad_out), *strides4(input), *strides4(res), *strides4(gres),
        per,
        HAS_RES=has_res, RELU=relu, CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype),
        IDX=offset_dtype(grad_out, input, *([residual, grad_residual] if has_res else [])),
        EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    # Partials merged in float64: P rows of fp32 sums.
    return part_g.double().sum(0), part_gx.double().sum(0), grad_residual


def _bwd_apply(grad, input, weight, bias, mean, invstd, b, d, mask_from_x) -> Tensor:
    """grad_input = a * g + b * (input - mean) + d with a = weight * invstd,
    g = grad * [pre > 0] when mask_from_x, else grad; b, d: [C] acc type."""
    grad_input = empty_activation(input)
    nhw, hw, w, c = _geometry(input)
    if input.numel() == 0:
        return grad_input
    mean_hi, mean_lo, scale, shift = _affine(input, weight, bias, mean, invstd)
    _bwd_apply_kernel[_tile_grid(nhw, c)](
        grad, input, grad_input, mean_hi, mean_lo, scale, shift, scale, b, d,
        nhw, hw, w, c,
        *strides4(grad), *strides4(input), *strides4(grad_input),
        MASK_FROM_X=mask_from_x, CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype),
        IDX=offset_dtype(grad, input, grad_input), EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    return grad_input


def _grad_input_coefs(weight, invstd, sum_g, sum_gx, count):
    """(b, d) of the grad-input apply, [C] acc type, from the batch's sums of
    g and g * (x - mean) over ``count`` values per channel (float64 math)."""
    invstd_d = invstd.double()
    scale = invstd_d * weight.double() if weight is not None else invstd_d
    b = -scale * invstd_d**2 * sum_gx / count
    d = -scale * sum_g / count
    return b.to(invstd.dtype), d.to(invstd.dtype)


def _param_grad(g: Tensor, param: Tensor | None) -> Tensor:
    return g.to(param.dtype) if param is not None else g


# --- the fused ops ---------------------------------------------------------------


def _forward(
    input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
):
    """(out, save_mean [C] float64, save_invstd [C] acc type)."""
    if training:
        mean, var = _stats(input)
        count = input.numel() // max(input.shape[1], 1)
        update_running_stats(running_mean, running_var, mean, var, momentum, count)
    else:
        mean = running_mean.double().clone()
        var = running_var.double()
    invstd = (1.0 / torch.sqrt(var + eps)).to(acc_dtype(input.dtype))
    return _apply(input, residual, weight, bias, mean, invstd, relu), mean, invstd


def _backward(grad_out, input, residual, weight, bias, save_mean, save_invstd, training, relu):
    """(grad_input, grad_residual or None, grad_weight, grad_bias)."""
    has_res = residual is not None
    invstd = save_invstd.to(acc_dtype(input.dtype))
    sum_g, sum_gx, grad_residual = _bwd_reduce(
        grad_out, input, residual, weight, bias, save_mean, invstd, relu
    )
    if training:
        count = max(input.numel() // max(input.shape[1], 1), 1)
        b, d = _grad_input_coefs(weight, invstd, sum_g, sum_gx, count)
    else:
        b, d = torch.zeros_like(invstd), torch.zeros_like(invstd)
    # With a residual the reduction wrote g (masked) into grad_residual.
    grad_input = _bwd_apply(
        grad_residual if has_res else grad_out, input, weight, bias, save_mean, invstd, b, d,
        relu and not has_res,
    )  # fmt: skip
    grad_weight = (sum_gx * invstd.double()).to(invstd.dtype)
    return (
        grad_input,
        grad_residual,
        _param_grad(grad_weight, weight),
        _param_grad(sum_g.to(invstd.dtype), bias),
    )


@implements("bn_act_fwd")
def bn_act_fwd(input, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    checks.check_bn_forward_op(
        input, None, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return _forward(
        input, None, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


@implements("bn_add_act_fwd")
def bn_add_act_fwd(
    input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
):
    checks.check_bn_forward_op(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return _forward(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
    )


@implements("bn_act_bwd")
def bn_act_bwd(grad_out, input, weight, bias, save_mean, save_invstd, training, relu):
    checks.check_bn_backward_op(grad_out, input, None, weight, bias, save_mean, save_invstd)
    grad_input, _, grad_weight, grad_bias = _backward(
        grad_out, input, None, weight, bias, save_mean, save_invstd, training, relu
    )
    return grad_input, grad_weight, grad_bias


@implements("bn_add_act_bwd")
def bn_add_act_bwd(grad_out, input, residual, weight, bias, save_mean, save_invstd, training, relu):
    checks.check_bn_backward_op(grad_out, input, residual, weight, bias, save_mean, save_invstd)
    args = (weight, bias, save_mean, save_invstd, training, relu)
    return _backward(grad_out, input, residual, *args)


# --- the stage ops ---------------------------------------------------------------

# The stage ops name their statistics mean / invstd.
_STAGE_NAMES = dict(mean_name="mean", invstd_name="invstd")


@implements("bn_stats")
def bn_stats(input):
    checks.check_activation(input, "input")
    return _stats(input)


@implements("bn_apply")
def bn_apply(input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_apply_op(input, residual, weight, bias, mean, invstd)
    return _apply(input, residual, weight, bias, mean, invstd, relu)


@implements("bn_act_bwd_reduce")
def bn_act_bwd_reduce(grad_out, input, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(grad_out, input, None, weight, bias, mean, invstd, **_STAGE_NAMES)
    sum_g, sum_gx, _ = _bwd_reduce(grad_out, input, None, weight, bias, mean, invstd, relu)
    return sum_g.to(invstd.dtype), sum_gx.to(invstd.dtype)


@implements("bn_add_act_bwd_reduce")
def bn_add_act_bwd_reduce(grad_out, input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(
        grad_out, input, residual, weight, bias, mean, invstd, **_STAGE_NAMES
    )
    sum_g, sum_gx, grad_residual = _bwd_reduce(
        grad_out, input, residual, weight, bias, mean, invstd, relu
    )
    return sum_g.to(invstd.dtype), sum_gx.to(invstd.dtype), grad_residual


@implements("bn_bwd_apply")
def bn_bwd_apply(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    checks.check_bn_backward_op(
        grad, input, None, weight, bias, mean, invstd, "grad", "mean", "invstd"
    )
    checks.check_channel_stat(mean_g, "mean_g", input, acc_dtype(input.dtype))
    checks.check_channel_stat(mean_gx, "mean_gx", input, acc_dtype(input.dtype))
    # The means of the whole batch are given: the sums of a batch of one.
    b, d = _grad_input_coefs(weight, invstd, mean_g.double(), mean_gx.double(), 1)
    return _bwd_apply(grad, input, weight, bias, mean, invstd, b, d, relu_mask)
