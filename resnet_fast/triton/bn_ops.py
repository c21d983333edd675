"""torch.ops.resnet_fast.triton_bn_* : the fused BN ops on Triton kernels.

The ops are ``torch.library.triton_op``s launching through ``wrap_triton``,
so torch.compile traces into them. PyTorch refuses an autograd formula for a
custom op that mutates an input, so the running statistics are not mutated
here: ``triton_bn_stats`` returns the batch statistics (functional) and
resnet_fast.triton.functional updates the running buffers with in-place
ATen ops, which autograd and torch.compile both understand. The semantics of
the public functions are those of the C++ ops (csrc/registration.cpp).

    triton_bn_stats(input) -> (mean, var)             [C] float64, var biased
    triton_bn_act_fwd(input, weight?, bias?, save_mean, save_invstd, training, relu) -> out
    triton_bn_act_bwd(grad_out, input, weight?, bias?, save_mean, save_invstd, training, relu)
        -> (grad_input, grad_weight, grad_bias)
    triton_bn_add_act_fwd / _bwd: the same with a residual after the input
        (the backward also returns grad_residual, second).
"""

import torch
import triton
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .. import _checks
from .._backend import triton_interpreting
from .._numerics import acc_dtype, merge_moments, split_mean
from .._ops import output_memory_format
from . import configs
from ._common import channels_inner, offset_dtype, rows_per_program, strides4, tl_acc
from .bn_kernels import (
    _bn_act_bwd_apply_kernel,
    _bn_act_bwd_reduce_kernel,
    _bn_act_fwd_kernel,
    _bn_stats_fwd_kernel,
)

# sxc tells the layouts apart (1 for channels_last): each gets its own tuning.
_KEY = ["NHW", "C", "sxc"]
_stats_kernel = triton.autotune(configs.REDUCE, key=_KEY)(_bn_stats_fwd_kernel)
_apply_kernel = triton.autotune(configs.TILE, key=_KEY)(_bn_act_fwd_kernel)
_bwd_reduce_kernel = triton.autotune(configs.REDUCE, key=_KEY)(_bn_act_bwd_reduce_kernel)
_bwd_apply_kernel = triton.autotune(configs.TILE, key=_KEY)(_bn_act_bwd_apply_kernel)

# The names of the statistics arguments, for the checks' messages.
_SAVED = ("save_mean", "save_invstd")

# Channel blocks assumed when sizing the partial buffers (any config works).
_NOMINAL_BLOCK_C = 64


def _empty_activation(input: Tensor) -> Tensor:
    # The memory format the C++ kernels choose, so backends agree.
    return torch.empty(input.shape, dtype=input.dtype, device=input.device).contiguous(
        memory_format=output_memory_format(input)
    )


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


@triton_op("resnet_fast::triton_bn_stats", mutates_args=())
def triton_bn_stats(input: Tensor) -> tuple[Tensor, Tensor]:
    _checks.check_activation(input, "input")
    nhw, hw, w, c = _geometry(input)
    acc = acc_dtype(input.dtype)
    if nhw == 0:
        zeros = input.new_zeros((c,), dtype=torch.float64)
        return zeros, zeros.clone()
    # One sample per channel: x - shift is exact and centered to ~1 std.
    shift = input[0, :, 0, 0].to(acc).contiguous()
    per, grid = _reduce_grid(nhw, c)
    programs = triton.cdiv(nhw, per)
    part_mean = input.new_empty((programs, c), dtype=acc)
    part_m2 = input.new_empty((programs, c), dtype=acc)
    wrap_triton(_stats_kernel)[grid](
        input, shift, part_mean, part_m2, nhw, hw, w, c, *strides4(input), per,
        CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype), IDX=offset_dtype(input),
    )  # fmt: skip
    mean_d, var = merge_partials(part_mean, part_m2, _program_counts(nhw, per, input.device))
    return shift.double() + mean_d, var


def _affine(input: Tensor, weight, bias, save_mean: Tensor, save_invstd: Tensor):
    """(mean_hi, mean_lo, scale, shift): [C] acc-type vectors of the apply."""
    acc = acc_dtype(input.dtype)
    mean_hi, mean_lo = split_mean(save_mean, acc)
    invstd = save_invstd.to(acc)
    scale = invstd * weight.to(acc) if weight is not None else invstd.clone()
    shift = bias.to(acc).contiguous() if bias is not None else torch.zeros_like(invstd)
    return mean_hi, mean_lo, scale.contiguous(), shift


def _forward(input, residual, weight, bias, save_mean, save_invstd, relu) -> Tensor:
    out = _empty_activation(input)
    nhw, hw, w, c = _geometry(input)
    if input.numel() == 0:
        return out
    has_res = residual is not None
    wrap_triton(_apply_kernel)[_tile_grid(nhw, c)](
        input, residual if has_res else input, out,
        *_affine(input, weight, bias, save_mean, save_invstd),
        nhw, hw, w, c,
        *strides4(input), *strides4(residual if has_res else input), *strides4(out),
        HAS_RES=has_res, RELU=relu, CH_INNER=channels_inner(input), ACC=tl_acc(input.dtype),
        IDX=offset_dtype(input, residual if has_res else input, out),
        EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    return out


def _param_grad(g: Tensor, param: Tensor | None) -> Tensor:
    return g.to(param.dtype) if param is not None else g


def _backward(grad_out, input, residual, weight, bias, save_mean, save_invstd, training, relu):
    """(grad_input, grad_residual or None, grad_weight, grad_bias)."""
    nhw, hw, w, c = _geometry(input)
    acc = acc_dtype(input.dtype)
    has_res = residual is not None
    mean_hi, mean_lo, scale, shift = _affine(input, weight, bias, save_mean, save_invstd)
    grad_input = _empty_activation(input)
    grad_residual = _empty_activation(input) if has_res else None
    invstd = save_invstd.to(acc)
    if input.numel() == 0:
        grad_weight, grad_bias = torch.zeros_like(invstd), torch.zeros_like(invstd)
        return (
            grad_input,
            grad_residual,
            _param_grad(grad_weight, weight),
            _param_grad(grad_bias, bias),
        )

    ch_inner = channels_inner(input)
    idx = offset_dtype(grad_out, input, grad_input, *([residual, grad_residual] if has_res else []))
    per, grid = _reduce_grid(nhw, c)
    programs = triton.cdiv(nhw, per)
    part_g = input.new_empty((programs, c), dtype=acc)
    part_gx = input.new_empty((programs, c), dtype=acc)
    gres = grad_residual if has_res else input
    wrap_triton(_bwd_reduce_kernel)[grid](
        grad_out, input, residual if has_res else input, gres,
        mean_hi, mean_lo, scale, shift, part_g, part_gx,
        nhw, hw, w, c,
        *strides4(grad_out), *strides4(input),
        *strides4(residual if has_res else input), *strides4(gres),
        per,
        HAS_RES=has_res, RELU=relu, CH_INNER=ch_inner, ACC=tl_acc(input.dtype), IDX=idx,
        EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    # Partials merged in float64: P rows of fp32 sums.
    sum_g = part_g.double().sum(0)
    sum_gx = part_gx.double().sum(0)

    # dx = a * g + b * (x - mean) + d, the C++ kernels' coefficients.
    a = scale
    if training:
        b = (-scale.double() * invstd.double() ** 2 * sum_gx / nhw).to(acc)
        d = (-scale.double() * sum_g / nhw).to(acc)
    else:
        b = torch.zeros_like(scale)
        d = torch.zeros_like(scale)
    gsrc = grad_residual if has_res else grad_out
    wrap_triton(_bwd_apply_kernel)[_tile_grid(nhw, c)](
        gsrc, input, grad_input, mean_hi, mean_lo, scale, shift, a, b, d,
        nhw, hw, w, c,
        *strides4(gsrc), *strides4(input), *strides4(grad_input),
        MASK_FROM_X=relu and not has_res, CH_INNER=ch_inner, ACC=tl_acc(input.dtype), IDX=idx,
        EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    grad_weight = (sum_gx * invstd.double()).to(acc)
    return (
        grad_input,
        grad_residual,
        _param_grad(grad_weight, weight),
        _param_grad(sum_g.to(acc), bias),
    )


@triton_op("resnet_fast::triton_bn_act_fwd", mutates_args=())
def triton_bn_act_fwd(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    save_mean: Tensor,
    save_invstd: Tensor,
    training: bool,
    relu: bool,
) -> Tensor:
    _checks.check_bn_apply_op(input, None, weight, bias, save_mean, save_invstd, *_SAVED)
    return _forward(input, None, weight, bias, save_mean, save_invstd, relu)


@triton_op("resnet_fast::triton_bn_act_bwd", mutates_args=())
def triton_bn_act_bwd(
    grad_out: Tensor,
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    save_mean: Tensor,
    save_invstd: Tensor,
    training: bool,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    _checks.check_bn_backward_op(grad_out, input, None, weight, bias, save_mean, save_invstd)
    gi, _, gw, gb = _backward(
        grad_out, input, None, weight, bias, save_mean, save_invstd, training, relu
    )
    return gi, gw, gb


@triton_op("resnet_fast::triton_bn_add_act_fwd", mutates_args=())
def triton_bn_add_act_fwd(
    input: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    save_mean: Tensor,
    save_invstd: Tensor,
    training: bool,
    relu: bool,
) -> Tensor:
    _checks.check_bn_apply_op(input, residual, weight, bias, save_mean, save_invstd, *_SAVED)
    return _forward(input, residual, weight, bias, save_mean, save_invstd, relu)


@triton_op("resnet_fast::triton_bn_add_act_bwd", mutates_args=())
def triton_bn_add_act_bwd(
    grad_out: Tensor,
    input: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    save_mean: Tensor,
    save_invstd: Tensor,
    training: bool,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _checks.check_bn_backward_op(grad_out, input, residual, weight, bias, save_mean, save_invstd)
    args = (weight, bias, save_mean, save_invstd, training, relu)
    return _backward(grad_out, input, residual, *args)


# --- autograd ------------------------------------------------------------------


def _bn_act_setup_context(ctx, inputs, output):
    input, weight, bias, save_mean, save_invstd, training, relu = inputs
    ctx.save_for_backward(input, weight, bias, save_mean, save_invstd)
    ctx.training, ctx.relu = training, relu


def _bn_act_backward(ctx, grad_out):
    input, weight, bias, save_mean, save_invstd = ctx.saved_tensors
    gi, gw, gb = triton_bn_act_bwd(
        grad_out, input, weight, bias, save_mean, save_invstd, ctx.training, ctx.relu
    )
    return (
        gi, gw if weight is not None else None, gb if bias is not None else None,
        None, None, None, None,
    )  # fmt: skip


def _bn_add_act_setup_context(ctx, inputs, output):
    input, residual, weight, bias, save_mean, save_invstd, training, relu = inputs
    ctx.save_for_backward(input, residual, weight, bias, save_mean, save_invstd)
    ctx.training, ctx.relu = training, relu


def _bn_add_act_backward(ctx, grad_out):
    input, residual, weight, bias, save_mean, save_invstd = ctx.saved_tensors
    gi, gr, gw, gb = triton_bn_add_act_bwd(
        grad_out, input, residual, weight, bias, save_mean, save_invstd, ctx.training, ctx.relu
    )
    return (
        gi, gr, gw if weight is not None else None, gb if bias is not None else None,
        None, None, None, None,
    )  # fmt: skip


triton_bn_act_fwd.register_autograd(_bn_act_backward, setup_context=_bn_act_setup_context)
triton_bn_add_act_fwd.register_autograd(
    _bn_add_act_backward, setup_context=_bn_add_act_setup_context
)
