"""Fake (meta) kernels and autograd for the torch.ops.resnet_fast ops.

The forward BN ops mutate the running statistics (``Tensor(a!)?`` in their
schemas), which ``torch.library.register_autograd`` refuses for operators
defined in C++. Their autograd kernel is therefore registered here at the
Autograd dispatch key, the way register_autograd does it for Python custom
ops: an autograd.Function that redispatches below autograd. add_relu_fwd is
functional and uses register_autograd directly.
"""

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from . import _checks, _native  # noqa: F401  (_native registers the schemas)
from ._numerics import acc_dtype

ops = torch.ops.resnet_fast
_lib = torch.library.Library("resnet_fast", "IMPL")  # noqa: TOR901 (kept alive by the module)


# --- memory formats, mirroring csrc/cpu/tensor_geometry.cpp -----------------


def _rows_ok(t: Tensor) -> bool:
    return t.shape[1] == 1 or t.stride(1) == 1


def _planar_ok(t: Tensor) -> bool:
    return t.shape[3] == 1 or t.stride(3) == 1


def output_memory_format(input: Tensor) -> torch.memory_format:
    """The memory format the kernels write for an [N, C, H, W] ``input``."""
    suggested = suggest_memory_format(input) == torch.channels_last
    if _rows_ok(input) and (suggested or input.shape[2] * input.shape[3] == 1):
        return torch.channels_last
    if _planar_ok(input):
        return torch.contiguous_format
    if _rows_ok(input):
        return torch.channels_last
    return torch.channels_last if suggested else torch.contiguous_format


def _empty_activation(input: Tensor) -> Tensor:
    return torch.empty(input.shape, dtype=input.dtype, device=input.device).contiguous(
        memory_format=output_memory_format(input)
    )


def _empty_channels(input: Tensor, like: Tensor | None = None) -> Tensor:
    dtype = like.dtype if like is not None else acc_dtype(input.dtype)
    return input.new_empty((input.shape[1],), dtype=dtype)


# --- fake kernels ------------------------------------------------------------


def _empty_mean(input: Tensor) -> Tensor:
    # float64 whatever the input: see csrc/cpu/kernels/params.h on centering.
    return input.new_empty((input.shape[1],), dtype=torch.float64)


@torch.library.register_fake("resnet_fast::bn_act_fwd")
def _bn_act_fwd_fake(input, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    _checks.check_bn_forward_op(
        input, None, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return _empty_activation(input), _empty_mean(input), _empty_channels(input)


@torch.library.register_fake("resnet_fast::bn_add_act_fwd")
def _bn_add_act_fwd_fake(
    input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
):
    _checks.check_bn_forward_op(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return _empty_activation(input), _empty_mean(input), _empty_channels(input)


@torch.library.register_fake("resnet_fast::bn_act_bwd")
def _bn_act_bwd_fake(grad_out, input, weight, bias, save_mean, save_invstd, training, relu):
    _checks.check_bn_backward_op(grad_out, input, None, weight, bias, save_mean, save_invstd)
    return (
        _empty_activation(input),
        _empty_channels(input, weight),
        _empty_channels(input, bias),
    )


@torch.library.register_fake("resnet_fast::bn_add_act_bwd")
def _bn_add_act_bwd_fake(
    grad_out, input, residual, weight, bias, save_mean, save_invstd, training, relu
):
    _checks.check_bn_backward_op(grad_out, input, residual, weight, bias, save_mean, save_invstd)
    return (
        _empty_activation(input),
        _empty_activation(input),
        _empty_channels(input, weight),
        _empty_channels(input, bias),
    )


@torch.library.register_fake("resnet_fast::add_relu_fwd")
def _add_relu_fwd_fake(input, other):
    _checks.check_elementwise_pair(input, "input", other, "other")
    return torch.empty_like(input)


@torch.library.register_fake("resnet_fast::add_relu_bwd")
def _add_relu_bwd_fake(grad_out, output):
    _checks.check_elementwise_pair(output, "output", grad_out, "grad_out")
    return torch.empty_like(output)


# --- autograd ----------------------------------------------------------------


def _register_autograd_with_mutation(name: str, setup_context, backward) -> None:
    """register_autograd for an op whose schema mutates non-differentiable inputs."""
    op = getattr(ops, name).default
    below_autograd = torch._C._after_autograd_keyset

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, keyset, *args):
            with torch._C._AutoDispatchBelowAutograd():
                output = op.redispatch(keyset & below_autograd, *args)
            setup_context(ctx, args, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return (None, *backward(ctx, *grads))

    _Function.__name__ = f"{name}_backward"

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and any(
            isinstance(a, torch.Tensor) and a.requires_grad for a in args
        ):
            return _Function.apply(keyset, *args)
        # Nothing to differentiate: skip building a graph node.
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & below_autograd, *args)

    _lib.impl(name, autograd_kernel, "Autograd", with_keyset=True)


def _bn_setup_context(ctx, args, output, has_residual: bool):
    if has_residual:
        input, residual, weight, bias, _, _, training, _, _, relu = args
    else:
        (input, weight, bias, _, _, training, _, _, relu), residual = args, None
    _, save_mean, save_invstd = output
    ctx.mark_non_differentiable(save_mean, save_invstd)
    ctx.save_for_backward(input, residual, weight, bias, save_mean, save_invstd)
    ctx.training, ctx.relu = training, relu


def _bn_act_setup_context(ctx, args, output):
    _bn_setup_context(ctx, args, output, has_residual=False)


def _bn_add_act_setup_context(ctx, args, output):
    _bn_setup_context(ctx, args, output, has_residual=True)


def _bn_act_backward(ctx, grad_out, _grad_mean, _grad_invstd):
    input, _, weight, bias, save_mean, save_invstd = ctx.saved_tensors
    grad_input, grad_weight, grad_bias = ops.bn_act_bwd(
        grad_out, input, weight, bias, save_mean, save_invstd, ctx.training, ctx.relu
    )
    return (
        grad_input,
        grad_weight if weight is not None else None,
        grad_bias if bias is not None else None,
        None, None, None, None, None, None,
    )  # fmt: skip


def _bn_add_act_backward(ctx, grad_out, _grad_mean, _grad_invstd):
    input, residual, weight, bias, save_mean, save_invstd = ctx.saved_tensors
    grad_input, grad_residual, grad_weight, grad_bias = ops.bn_add_act_bwd(
        grad_out, input, residual, weight, bias, save_mean, save_invstd, ctx.training, ctx.relu
    )
    return (
        grad_input,
        grad_residual,
        grad_weight if weight is not None else None,
        grad_bias if bias is not None else None,
        None, None, None, None, None, None,
    )  # fmt: skip


_register_autograd_with_mutation("bn_act_fwd", _bn_act_setup_context, _bn_act_backward)
_register_autograd_with_mutation("bn_add_act_fwd", _bn_add_act_setup_context, _bn_add_act_backward)


def _add_relu_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _add_relu_backward(ctx, grad_out):
    (output,) = ctx.saved_tensors
    grad = ops.add_relu_bwd(grad_out, output)
    return grad, grad


torch.library.register_autograd(
    "resnet_fast::add_relu_fwd", _add_relu_backward, setup_context=_add_relu_setup_context
)
