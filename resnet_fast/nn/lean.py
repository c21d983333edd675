"""Memory-lean training: one autograd node per residual block (and stem).

In PyTorch eager, a block keeps for backward each convolution's output (for
its BN) and each BN-ReLU output (for the next convolution). The BN-ReLU
output is a per-channel affine map of the convolution output followed by a
ReLU, so a block that knows its whole structure can keep only the
convolution outputs and the per-channel statistics, and recompute each BN-ReLU
output in backward with one elementwise pass (the ``bn_apply`` stage op, the
forward's own apply kernel) right before the convolution backward that
needs it. ReLU masks are recomputed from the saved convolution outputs as in
the op-level backward, so no mask is stored either.

What a lean block saves, per forward:
    block input x, every convolution output, the projection shortcut's
    convolution output (its BN output is recomputed), the per-channel
    statistics, and the parameters (not activations).
What it does not save, unlike eager: the BN-ReLU outputs and the block
output (the next block saves that as its input; a last block's output is
needed by nobody).

The stem of an ImageNet ResNet (conv -> BN-ReLU -> max-pool) gets a lean node
for its BN-ReLU-pool: it keeps the convolution output, and recomputes the
BN-ReLU output and the pooling indices in backward instead of keeping both.

Backward uses the same torch.ops.resnet_fast BN ops as the op-level path and
``aten.convolution_backward``, so every backend with those ops works, in any
dtype (including autocast: each convolution runs backward in the dtype it ran
forward in) and memory format. Because the node runs its convolutions itself,
it also picks how: on the CPU, convolutions over small feature maps run as
matrix products (gemm_conv.py), forward and backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _backend, _ops
from .._stage_ops import stages_for
from .batchnorm import _bn_arguments, is_plain_batchnorm2d
from .gemm_conv import ConvSpec
from .gemm_conv import conv2d as _conv
from .gemm_conv import conv2d_backward as _conv_backward

MEMORY_MODES = ("auto", "lean", "standard")
"""``memory=`` choices: "lean" saves each block's convolution outputs only;
"standard" saves what the op-level autograd saves (as eager does); "auto"
runs each residual block lean unless eager PyTorch's training step is
measurably faster for that block's shape on this machine (measured once per
shape, see residual.py), and the stem lean."""

DEFAULT_MEMORY = "auto"


def runs_lean(memory: str) -> bool:
    """Whether ``memory`` runs lean nodes (always or where measured faster)."""
    return memory in ("auto", "lean")


_aten = torch.ops.aten


class LeanOps(NamedTuple):
    """The BN ops a lean node calls, with the C++ ops' signatures."""

    bn_act_fwd: Callable
    bn_add_act_fwd: Callable
    bn_act_bwd: Callable
    bn_add_act_bwd: Callable
    bn_apply: Callable


def _triton_lean_ops() -> LeanOps:
    from ..triton import functional as TF
    from ..triton.bn_ops import triton_bn_act_bwd, triton_bn_add_act_bwd

    def act_fwd(input, weight, bias, running_mean, running_var, training, momentum, eps, relu):
        return TF.forward_with_statistics(
            input, None, weight, bias, running_mean, running_var, training, momentum, eps, relu
        )

    def add_act_fwd(input, residual, *args):
        return TF.forward_with_statistics(input, residual, *args)

    return LeanOps(
        act_fwd, add_act_fwd, triton_bn_act_bwd, triton_bn_add_act_bwd, TF.apply_statistics
    )


def _lean_ops(backend: str, device: torch.device) -> LeanOps:
    if backend == "triton":
        return _triton_lean_ops()
    native = _ops.ops
    return LeanOps(
        native.bn_act_fwd,
        native.bn_add_act_fwd,
        native.bn_act_bwd,
        native.bn_add_act_bwd,
        stages_for(device).apply,  # pure PyTorch (warned) where a build lacks the stage ops
    )


def check_memory_mode(memory: str) -> str:
    """Validates a ``memory=`` argument and returns it."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {memory!r}")
    return memory


def set_memory(model: nn.Module, memory: str) -> nn.Module:
    """Sets the ``memory`` mode of every resnet_fast block and stem in
    ``model`` (their classes declare a ``memory`` default); returns ``model``."""
    check_memory_mode(memory)
    for module in model.modules():
        if getattr(type(module), "memory", None) in MEMORY_MODES:
            module.memory = memory
    return model


class BNSpec(NamedTuple):
    momentum: float
    eps: float


class BlockPlan(NamedTuple):
    """The static description of a lean block: one (conv, BN) stage per
    convolution of the main path, and the shortcut.

    shortcut: "identity" (x), "projection" (conv + BN without ReLU, the last
    conv/bn entries of ``convs`` / ``bns``) or "given" (a tensor computed
    outside the block's node, e.g. the option-A zero-padded identity).
    """

    backend: str
    convs: tuple[ConvSpec, ...]
    bns: tuple[BNSpec, ...]
    stages: int
    shortcut: str


class StemPlan(NamedTuple):
    backend: str
    bn: BNSpec
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


def _conv_spec(conv: nn.Conv2d) -> ConvSpec:
    return ConvSpec(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)


def _conv_tensors(conv: nn.Conv2d) -> list[Tensor | None]:
    return [conv.weight, conv.bias]


def _bn_tensors(bn: nn.BatchNorm2d, x: Tensor) -> tuple[BNSpec, list[Tensor | None]]:
    running_mean, running_var, _, momentum = _bn_arguments(bn, x)
    return BNSpec(float(momentum), float(bn.eps)), [bn.weight, bn.bias, running_mean, running_var]


_PER_STAGE = 6  # conv weight, conv bias, BN weight, bias, running mean, running var


def lean_backend(x: Tensor, norms: Sequence[nn.Module]) -> str | None:
    """The backend a lean node would run on, or None when the block must run
    the standard path: eval-mode BN (folded instead), no gradient needed, a
    non-BN norm, or the reference backend (pure PyTorch, unfused by design)."""
    if not torch.is_grad_enabled():
        return None
    if not all(is_plain_batchnorm2d(bn) and bn.training for bn in norms):
        return None
    backend = _backend.resolve(x.device)
    return None if backend == "reference" else backend


def is_projection(downsample: nn.Module | None) -> bool:
    """torchvision's projection shortcut: Sequential(Conv2d, BatchNorm2d)."""
    return (
        isinstance(downsample, nn.Sequential)
        and len(downsample) == 2
        and type(downsample[0]) is nn.Conv2d
        and is_plain_batchnorm2d(downsample[1])
    )


def lean_residual(
    backend: str,
    x: Tensor,
    stages: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d]],
    projection: tuple[nn.Conv2d, nn.BatchNorm2d] | None,
    given: Tensor | None,
) -> Tensor:
    """relu(bn_k(conv_k(... relu(bn_1(conv_1(x))) ...)) + shortcut) as one
    autograd node that saves only the convolution outputs.

    Args:
        backend: from :func:`lean_backend`.
        x: [N, C_in, H, W], the block input.
        stages: the main path's (conv, bn) pairs; BN-ReLU after all but the
            last, BN + shortcut + ReLU after the last.
        projection: the shortcut's (conv, bn) pair (BN without ReLU), or None.
        given: the shortcut tensor when there is no projection (computed
            outside the node), or None for the identity.

    Returns:
        [N, C_out, H_out, W_out], the block output.
    """
    convs, bns, tensors = [], [], []
    pairs = list(stages) + ([projection] if projection is not None else [])
    for conv, bn in pairs:
        bn_spec, bn_tensors = _bn_tensors(bn, x)
        convs.append(_conv_spec(conv))
        bns.append(bn_spec)
        tensors += _conv_tensors(conv) + bn_tensors
    shortcut = (
        "projection" if projection is not None else "given" if given is not None else "identity"
    )
    plan = BlockPlan(backend, tuple(convs), tuple(bns), len(stages), shortcut)
    return _LeanBlockFunction.apply(plan, x, given, *tensors)


class _LeanBlockFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: BlockPlan, x: Tensor, given: Tensor | None, *tensors):
        ops = _lean_ops(plan.backend, x.device)
        per = [tensors[i : i + _PER_STAGE] for i in range(0, len(tensors), _PER_STAGE)]
        outputs, stats = [], []
        h = x
        for i in range(plan.stages - 1):
            w, b, bn_w, bn_b, rm, rv = per[i]
            c = _conv(h, w, b, plan.convs[i])
            h, mean, invstd = ops.bn_act_fwd(
                c, bn_w, bn_b, rm, rv, True, plan.bns[i].momentum, plan.bns[i].eps, True
            )
            outputs.append(c)
            stats += [mean, invstd]
        last = plan.stages - 1
        w, b, bn_w, bn_b, rm, rv = per[last]
        c_last = _conv(h, w, b, plan.convs[last])
        del h
        if plan.shortcut == "identity":
            residual = x
        elif plan.shortcut == "projection":
            dw, db, dbn_w, dbn_b, drm, drv = per[-1]
            c_short = _conv(x, dw, db, plan.convs[-1])
            residual, mean, invstd = ops.bn_act_fwd(
                c_short, dbn_w, dbn_b, drm, drv, True, plan.bns[-1].momentum, plan.bns[-1].eps,
                False,
            )  # fmt: skip
            outputs.append(c_short)
            stats += [mean, invstd]
        else:
            residual = given
        out, mean, invstd = ops.bn_add_act_fwd(
            c_last, residual, bn_w, bn_b, rm, rv, True, plan.bns[last].momentum,
            plan.bns[last].eps, True,
        )  # fmt: skip
        outputs.insert(last, c_last)
        stats[2 * last : 2 * last] = [mean, invstd]
        params = [t for stage in per for t in stage[:4]]
        ctx.plan = plan
        ctx.present = tuple(t is not None for t in tensors)
        ctx.save_for_backward(x, given, *outputs, *stats, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        plan: BlockPlan = ctx.plan
        ops = _lean_ops(plan.backend, grad_out.device)
        n_pairs = len(plan.convs)
        saved = ctx.saved_tensors
        x, given = saved[0], saved[1]
        outputs = saved[2 : 2 + n_pairs]
        stats = saved[2 + n_pairs : 2 + 3 * n_pairs]
        params = saved[2 + 3 * n_pairs :]
        mean = stats[0::2]
        invstd = stats[1::2]
        conv_w, conv_b = params[0::4], params[1::4]
        bn_w, bn_b = params[2::4], params[3::4]
        # needs_input_grad: plan, x, given, then _PER_STAGE tensors per pair.
        needs = ctx.needs_input_grad
        needs_t = needs[3:]
        grads: list[Tensor | None] = [None] * len(needs_t)
        last = plan.stages - 1

        def stage_needs(i: int, k: int) -> bool:
            return needs_t[i * _PER_STAGE + k]

        if plan.shortcut == "identity":
            residual = x
        elif plan.shortcut == "projection":
            residual = ops.bn_apply(
                outputs[-1], None, bn_w[-1], bn_b[-1], mean[-1], invstd[-1], False
            )
        else:
            residual = given
        grad, grad_residual, gw, gb = ops.bn_add_act_bwd(
            grad_out, outputs[last], residual, bn_w[last], bn_b[last], mean[last],
            invstd[last], True, True,
        )  # fmt: skip
        del residual
        grads[last * _PER_STAGE + 2], grads[last * _PER_STAGE + 3] = gw, gb

        grad_x = None
        for i in range(last, -1, -1):
            if i == 0:
                input = x
            else:  # the BN-ReLU output this convolution read, recomputed
                input = ops.bn_apply(
                    outputs[i - 1], None, bn_w[i - 1], bn_b[i - 1], mean[i - 1], invstd[i - 1],
                    True,
                )  # fmt: skip
            need_bias = conv_b[i] is not None and stage_needs(i, 1)
            mask = (i > 0 or needs[1], stage_needs(i, 0), need_bias)
            g_in, grads[i * _PER_STAGE], grads[i * _PER_STAGE + 1] = _conv_backward(
                grad, input, conv_w[i], conv_b[i], plan.convs[i], mask
            )
            del input
            if i > 0:
                grad, gw, gb = ops.bn_act_bwd(
                    g_in, outputs[i - 1], bn_w[i - 1], bn_b[i - 1], mean[i - 1], invstd[i - 1],
                    True, True,
                )  # fmt: skip
                grads[(i - 1) * _PER_STAGE + 2], grads[(i - 1) * _PER_STAGE + 3] = gw, gb
            else:
                grad_x = g_in

        grad_given = None
        if plan.shortcut == "identity":
            # In place: grad_x is the convolution backward's own fresh tensor.
            grad_x = (
                grad_residual if grad_x is None else grad_x.add_(grad_residual.to(grad_x.dtype))
            )
        elif plan.shortcut == "projection":
            p = len(plan.convs) - 1
            g_short, gw, gb = ops.bn_act_bwd(
                grad_residual, outputs[-1], bn_w[-1], bn_b[-1], mean[-1], invstd[-1], True, False
            )
            grads[p * _PER_STAGE + 2], grads[p * _PER_STAGE + 3] = gw, gb
            mask = (needs[1], stage_needs(p, 0), conv_b[-1] is not None and stage_needs(p, 1))
            g_x_short, grads[p * _PER_STAGE], grads[p * _PER_STAGE + 1] = _conv_backward(
                g_short, x, conv_w[-1], conv_b[-1], plan.convs[-1], mask
            )
            if g_x_short is not None:
                grad_x = g_x_short if grad_x is None else grad_x.add_(g_x_short)
        else:
            grad_given = grad_residual
        if not needs[1]:
            grad_x = None
        # The ops return gradients for absent (None) affine parameters too.
        grads = [g if present else None for g, present in zip(grads, ctx.present, strict=True)]
        return (None, grad_x, grad_given, *grads)


def lean_bn_relu_maxpool(backend: str, x: Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d) -> Tensor:
    """max_pool(relu(bn(x))), the tail of an ImageNet ResNet's stem, as one
    autograd node that keeps x (the stem convolution's output) only: the
    BN-ReLU output and the pooling indices, which eager keeps both, are
    recomputed in backward.

    Args:
        backend: from :func:`lean_backend`.
        x: [N, C, H, W], the stem convolution's output.
        bn: the stem's BatchNorm2d (training mode).
        pool: the stem's nn.MaxPool2d.

    Returns:
        [N, C, H_out, W_out], the pooled stem output.
    """
    bn_spec, bn_tensors = _bn_tensors(bn, x)
    pool_spec = tuple(
        tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding, pool.dilation)
    )
    plan = StemPlan(backend, bn_spec, (*pool_spec, bool(pool.ceil_mode)))
    return _LeanPooledBNReLU.apply(plan, x, *bn_tensors)


class _LeanPooledBNReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: StemPlan, x, bn_w, bn_b, rm, rv):
        ops = _lean_ops(plan.backend, x.device)
        h, mean, invstd = ops.bn_act_fwd(
            x, bn_w, bn_b, rm, rv, True, plan.bn.momentum, plan.bn.eps, True
        )
        out = F.max_pool2d(h, *plan.pool[:4], ceil_mode=plan.pool[4])
        ctx.plan = plan
        ctx.save_for_backward(x, mean, invstd, bn_w, bn_b)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        plan: StemPlan = ctx.plan
        ops = _lean_ops(plan.backend, grad_out.device)
        x, mean, invstd, bn_w, bn_b = ctx.saved_tensors
        h = ops.bn_apply(x, None, bn_w, bn_b, mean, invstd, True)
        kernel, stride, padding, dilation, ceil_mode = plan.pool
        # Recomputing the pooling indices costs one read of h, which is here
        # anyway; keeping them would cost 8 bytes per pooled element.
        _, indices = _aten.max_pool2d_with_indices(h, kernel, stride, padding, dilation, ceil_mode)
        grad_h = _aten.max_pool2d_with_indices_backward(
            grad_out.to(h.dtype), h, kernel, stride, padding, dilation, ceil_mode, indices
        )
        del h, indices
        grad_x, grad_bn_w, grad_bn_b = ops.bn_act_bwd(
            grad_h, x, bn_w, bn_b, mean, invstd, True, True
        )
        return (
            None, grad_x,
            grad_bn_w if bn_w is not None else None,
            grad_bn_b if bn_b is not None else None,
            None, None,
        )  # fmt: skip
