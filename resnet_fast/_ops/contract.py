"""The contract of the resnet_fast ops beyond their schemas: fake kernels
(shapes, dtypes, layouts and the argument checks, for torch.compile) and
autograd, registered for every namespace that implements the ops.

The schemas are declared once, in C++ (csrc/registration.cpp), for
torch.ops.resnet_fast, whose CPU and CUDA kernels are C++.
``declare_namespace(name)`` declares the same ops, from those very schemas,
in another namespace (Triton's, the pure-PyTorch reference's), and
``register_contract(namespace)`` gives each namespace the same fake kernels
and the same autograd formulas, so every backend has one contract: same
names, arguments, returns, checks and gradients.

The autograd formulas (of bn_act_fwd, bn_add_act_fwd, add_relu_fwd) are C++,
csrc/autograd.cpp, one per op for every namespace: in Python their
autograd.Function cost about as much as the kernels on small maps. The
stage ops have no autograd: their callers (synchronized BN, the
memory-lean blocks) are autograd.Functions.
"""

import torch
from torch import Tensor

from .._native import _C  # registers the schemas and the C++ kernels
from . import checks
from .layout import empty_activation
from .numerics import acc_dtype

# Every op of the contract, forward/backward pairs first, then the BN stage
# ops (the passes of the fused BN ops as separate ops, for synchronized BN
# and the memory-lean blocks).
FUSED_OPS = (
    "bn_act_fwd", "bn_act_bwd", "bn_add_act_fwd", "bn_add_act_bwd", "add_relu_fwd",
    "add_relu_bwd",
)  # fmt: skip
STAGE_OPS = ("bn_stats", "bn_apply", "bn_act_bwd_reduce", "bn_add_act_bwd_reduce", "bn_bwd_apply")
OP_NAMES = FUSED_OPS + STAGE_OPS


def _empty_channels(input: Tensor, like: Tensor | None = None) -> Tensor:
    dtype = like.dtype if like is not None else acc_dtype(input.dtype)
    return input.new_empty((input.shape[1],), dtype=dtype)


# --- fake kernels ------------------------------------------------------------


def _empty_mean(input: Tensor) -> Tensor:
    # float64 whatever the input: see csrc/common/kernel_params.h on centering.
    return input.new_empty((input.shape[1],), dtype=torch.float64)


def _bn_act_fwd_fake(input, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    checks.check_bn_forward_op(
        input, None, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return empty_activation(input), _empty_mean(input), _empty_channels(input)


def _bn_add_act_fwd_fake(
    input, residual, weight, bias, running_mean, running_var, training, momentum, eps, relu
):
    checks.check_bn_forward_op(
        input, residual, weight, bias, running_mean, running_var, training, momentum, eps
    )
    return empty_activation(input), _empty_mean(input), _empty_channels(input)


def _bn_act_bwd_fake(grad_out, input, weight, bias, save_mean, save_invstd, training, relu):
    checks.check_bn_backward_op(grad_out, input, None, weight, bias, save_mean, save_invstd)
    return (
        empty_activation(input),
        _empty_channels(input, weight),
        _empty_channels(input, bias),
    )


def _bn_add_act_bwd_fake(
    grad_out, input, residual, weight, bias, save_mean, save_invstd, training, relu
):
    checks.check_bn_backward_op(grad_out, input, residual, weight, bias, save_mean, save_invstd)
    return (
        empty_activation(input),
        empty_activation(input),
        _empty_channels(input, weight),
        _empty_channels(input, bias),
    )


def _add_relu_fwd_fake(input, other):
    checks.check_elementwise_pair(input, "input", other, "other")
    return torch.empty_like(input)


def _add_relu_bwd_fake(grad_out, output):
    checks.check_elementwise_pair(output, "output", grad_out, "grad_out")
    return torch.empty_like(output)


# The stage ops name their statistics mean / invstd (csrc/registration.cpp).
_STAGE_NAMES = dict(mean_name="mean", invstd_name="invstd")


def _bn_stats_fake(input):
    checks.check_activation(input, "input")
    return _empty_mean(input), _empty_mean(input)


def _bn_apply_fake(input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_apply_op(input, residual, weight, bias, mean, invstd)
    return empty_activation(input)


def _bn_act_bwd_reduce_fake(grad_out, input, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(grad_out, input, None, weight, bias, mean, invstd, **_STAGE_NAMES)
    return _empty_channels(input), _empty_channels(input)


def _bn_add_act_bwd_reduce_fake(grad_out, input, residual, weight, bias, mean, invstd, relu):
    checks.check_bn_backward_op(
        grad_out, input, residual, weight, bias, mean, invstd, **_STAGE_NAMES
    )
    return _empty_channels(input), _empty_channels(input), empty_activation(input)


def _bn_bwd_apply_fake(grad, input, weight, bias, mean, invstd, mean_g, mean_gx, relu_mask):
    checks.check_bn_backward_op(
        grad, input, None, weight, bias, mean, invstd, "grad", "mean", "invstd"
    )
    checks.check_channel_stat(mean_g, "mean_g", input, acc_dtype(input.dtype))
    checks.check_channel_stat(mean_gx, "mean_gx", input, acc_dtype(input.dtype))
    return empty_activation(input)


FAKES = {
    "bn_act_fwd": _bn_act_fwd_fake,
    "bn_act_bwd": _bn_act_bwd_fake,
    "bn_add_act_fwd": _bn_add_act_fwd_fake,
    "bn_add_act_bwd": _bn_add_act_bwd_fake,
    "add_relu_fwd": _add_relu_fwd_fake,
    "add_relu_bwd": _add_relu_bwd_fake,
    "bn_stats": _bn_stats_fake,
    "bn_apply": _bn_apply_fake,
    "bn_act_bwd_reduce": _bn_act_bwd_reduce_fake,
    "bn_add_act_bwd_reduce": _bn_add_act_bwd_reduce_fake,
    "bn_bwd_apply": _bn_bwd_apply_fake,
}


# The libraries that hold the registrations: alive as long as this module.
_LIBRARIES: dict[str, torch.library.Library] = {}


def register_contract(namespace: str) -> None:
    """Registers the fake kernels of every op of OP_NAMES in ``namespace``,
    whose schemas are already defined, and the autograd formulas
    (csrc/autograd.cpp: each backward calls the namespace's own backward op)."""
    lib = _LIBRARIES[namespace] = torch.library.Library(namespace, "IMPL")  # noqa: TOR901
    for name, fake in FAKES.items():
        torch.library.register_fake(f"{namespace}::{name}", fake, lib=lib)
    _C.register_autograd(namespace)


def declare_namespace(namespace: str) -> torch.library.Library:
    """Declares every op of OP_NAMES in ``namespace`` with the schema of the
    torch.ops.resnet_fast op of the same name (read from the C++
    declaration, so the two cannot drift) and registers the contract.

    Returns:
        The namespace's defining library: keep it alive, and register the
        namespace's kernels on it (``lib.impl(name, fn, dispatch_key)``).
    """
    lib = torch.library.Library(namespace, "DEF")  # noqa: TOR901
    for name in OP_NAMES:
        lib.define(str(getattr(torch.ops.resnet_fast, name).default._schema).split("::", 1)[1])
    register_contract(namespace)
    return lib


register_contract("resnet_fast")
