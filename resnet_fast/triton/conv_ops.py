"""torch.ops.resnet_fast_triton.conv2d / conv2d_stats: the implicit-GEMM
convolution with its fused epilogues, outside the contract of the BN ops
(no C++ twin: cuDNN is the convolution on the other GPU backend).

    conv2d(input, weight, bias?, residual?, stride, padding, dilation,
           groups, relu) -> act(conv2d(input, weight) + bias [+ residual])
    conv2d_stats(input, weight, bias?, stride, padding, dilation, groups)
        -> (out, mean, var): out = conv2d(input, weight) + bias, and its
           per-channel batch mean and biased variance ([C_out] float64),
           computed in the convolution's epilogue.

The backward runs PyTorch's aten.convolution_backward (cuDNN on a GPU).
The output keeps the memory format of the input (channels_last in, out).
"""

import torch
import triton
from torch import Tensor
from torch._prims_common import suggest_memory_format
from torch.library import triton_op, wrap_triton

from .._ops import checks
from .._ops.numerics import acc_dtype
from . import configs
from ._common import offset_dtype, tl_acc
from .bn_ops import merge_partials
from .conv_kernels import _conv2d_fwd_kernel
from .interpreter import triton_interpreting

_kernel = triton.autotune(
    configs.CONV,
    # DOT_PRECISION: TF32 and IEEE fp32 are different kernels with different best tiles.
    key=["M", "C_in_g", "C_out_g", "H", "W", "stride_h", "sxc", "DOT_PRECISION"],
    prune_configs_by=configs.CONV_PRUNE,
)(_conv2d_fwd_kernel)


def dot_precision(dtype: torch.dtype) -> str:
    """The input precision of the convolution's dot products.

    fp32 follows PyTorch's policy for its own fp32 convolutions:
    torch.backends.cudnn.allow_tf32 (on by default) gives TF32 tensor-core
    products (10-bit mantissa inputs, fp32 accumulation); off, IEEE fp32
    products. fp64 is IEEE; Triton reads input_precision for fp32 operands
    only, so bf16 / fp16 pass the default.
    """
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return "ieee" if dtype == torch.float64 else "tf32"


def _pair(v: list[int]) -> tuple[int, int]:
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _launch(input, weight, bias, residual, stride, padding, dilation, groups, relu, stats):
    """(out, part_mean, part_m2, stats rows) with the partials None unless stats."""
    n, c_in, h, w = input.shape
    c_out, c_in_g, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out, w_out = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    out = torch.empty((n, c_out, h_out, w_out), dtype=input.dtype, device=input.device).contiguous(
        memory_format=suggest_memory_format(input)
    )
    m = n * h_out * w_out
    rows = configs.CONV_STATS_ROWS
    parts = triton.cdiv(m, rows) if stats else 0
    # In the accumulation dtype: float64 statistics of a float64 convolution.
    part_mean = input.new_empty((parts, c_out), dtype=acc_dtype(input.dtype))
    part_m2 = input.new_empty((parts, c_out), dtype=acc_dtype(input.dtype))
    if out.numel() == 0:
        return out, part_mean, part_m2, rows
    acc = acc_dtype(input.dtype)
    bias_acc = bias.to(acc).contiguous() if bias is not None else out
    res = residual if residual is not None else out
    c_out_g = c_out // groups
    grid = lambda meta: (  # noqa: E731
        triton.cdiv(m, meta["BLOCK_M"]),
        triton.cdiv(c_out_g, meta["BLOCK_N"]),
        groups,
    )
    wrap_triton(_kernel)[grid](
        input, weight, bias_acc, res, out, part_mean, part_m2,
        m, h, w, h_out, w_out, c_in_g, c_out_g, c_out,
        *input.stride(), *weight.stride(), *res.stride(), *out.stride(),
        sh, sw, ph, pw, dh, dw,
        KH=kh, KW=kw,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, RELU=relu, STATS=stats,
        ACC=tl_acc(input.dtype),
        IDX=offset_dtype(input, weight, res, out),
        DOT_PRECISION=dot_precision(input.dtype),
        STATS_ROWS=rows,
        INTERPRETED=triton_interpreting(),
    )  # fmt: skip
    return out, part_mean, part_m2, rows


@triton_op("resnet_fast_triton::conv2d", mutates_args=())
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    relu: bool,
) -> Tensor:
    checks.check_conv2d_op(input, weight, bias, residual, stride, padding, dilation, groups)
    out, *_ = _launch(
        input, weight, bias, residual, stride, padding, dilation, groups, relu, stats=False
    )
    return out


@triton_op("resnet_fast_triton::conv2d_stats", mutates_args=())
def conv2d_stats(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> tuple[Tensor, Tensor, Tensor]:
    checks.check_conv2d_op(input, weight, bias, None, stride, padding, dilation, groups)
    out, part_mean, part_m2, rows = _launch(
        input, weight, bias, None, stride, padding, dilation, groups, False, stats=True
    )
    m = out.numel() // max(out.shape[1], 1)
    if m == 0:
        zeros = out.new_zeros((out.shape[1],), dtype=torch.float64)
        return out, zeros, zeros.clone()
    starts = torch.arange(0, m, rows, device=out.device, dtype=torch.float64)
    mean, var = merge_partials(part_mean, part_m2, (m - starts).clamp(max=rows))
    return out, mean, var


# --- autograd: PyTorch's convolution backward --------------------------------


def _setup_context(ctx, inputs, output):
    input, weight, bias, residual, stride, padding, dilation, groups, relu = inputs
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias, ctx.bias_dtype = bias is not None, None if bias is None else bias.dtype
    ctx.has_residual = residual is not None
    ctx.needs = ctx.needs_input_grad[:2]


def _conv_backward(ctx, grad: Tensor, input: Tensor, weight: Tensor):
    """(grad_input, grad_weight, grad_bias) of the convolution through
    PyTorch's convolution backward; grad [N, C_out, H_out, W_out]."""
    stride, padding, dilation, groups = ctx.geometry
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, input, weight, None, stride, padding, dilation, False, [0, 0], groups,
        [ctx.needs[0], ctx.needs[1], False],
    )  # fmt: skip
    grad_bias = grad.sum((0, 2, 3)).to(ctx.bias_dtype) if ctx.has_bias else None
    return grad_input, grad_weight, grad_bias


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    if output is not None:
        grad = torch.where(output > 0, grad, torch.zeros_like(grad))
    grad_input, grad_weight, grad_bias = _conv_backward(ctx, grad, input, weight)
    grad_residual = grad if ctx.has_residual else None
    return grad_input, grad_weight, grad_bias, grad_residual, None, None, None, None, None


def _stats_setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias, ctx.bias_dtype = bias is not None, None if bias is None else bias.dtype
    ctx.needs = ctx.needs_input_grad[:2]
    ctx.mark_non_differentiable(output[1], output[2])


def _stats_backward(ctx, grad, _grad_mean, _grad_var):
    input, weight = ctx.saved_tensors
    return *_conv_backward(ctx, grad, input, weight), None, None, None, None


conv2d.register_autograd(_backward, setup_context=_setup_context)
conv2d_stats.register_autograd(_stats_backward, setup_context=_stats_setup_context)
