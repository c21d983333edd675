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

Backward uses the BN ops of the op-level path (the backend's op namespace:
torch.ops.resnet_fast, or torch.ops.resnet_fast_triton on Triton; the same
ops on every backend) and ``aten.convolution_backward``, so it works in any
dtype (including autocast: each convolution runs backward in the dtype it ran
forward in) and memory format. Because the node runs its convolutions itself,
it also picks how: on the CPU, convolutions over small feature maps run as
matrix products or as Winograd (resnet_fast/conv/training.py), forward and
backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._ops.backends import Backend
from .._ops.fused import bn_arguments
from ..conv import training
from ..conv.spec import ConvSpec

_aten = torch.ops.aten


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

    backend: Backend
    convs: tuple[ConvSpec, ...]
    bns: tuple[BNSpec, ...]
    stages: int
    shortcut: str


class StemPlan(NamedTuple):
    backend: Backend
    bn: BNSpec
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


def conv_spec(conv: nn.Conv2d) -> ConvSpec:
    return ConvSpec(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)


class StageTensors(NamedTuple):
    """The tensors of one (conv, BN) stage, in the order the node takes them
    as inputs (and returns their gradients): the same record holds the
    tensors, which of them need a gradient, and the gradients."""

    conv_weight: Tensor | None
    conv_bias: Tensor | None
    bn_weight: Tensor | None
    bn_bias: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None


def _stage_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor) -> tuple[BNSpec, StageTensors]:
    running_mean, running_var, _, momentum = bn_arguments(bn, x)
    tensors = StageTensors(conv.weight, conv.bias, bn.weight, bn.bias, running_mean, running_var)
    return BNSpec(float(momentum), float(bn.eps)), tensors


def _bn_tensors(bn: nn.BatchNorm2d, x: Tensor) -> tuple[BNSpec, list[Tensor | None]]:
    running_mean, running_var, _, momentum = bn_arguments(bn, x)
    return BNSpec(float(momentum), float(bn.eps)), [bn.weight, bn.bias, running_mean, running_var]


_PER_STAGE = len(StageTensors._fields)


class SavedStage(NamedTuple):
    """What a lean node keeps of one (conv, BN) stage for its backward."""

    conv_out: Tensor  # [N, C, H, W], the BN's input
    mean: Tensor  # [C] float64, the batch mean
    invstd: Tensor  # [C] acc type
    conv_weight: Tensor
    conv_bias: Tensor | None
    bn_weight: Tensor | None
    bn_bias: Tensor | None

    def bn_output(self, ops, relu: bool) -> Tensor:
        """The BN (ReLU) output of the forward, recomputed."""
        return ops.bn_apply(
            self.conv_out, None, self.bn_weight, self.bn_bias, self.mean, self.invstd, relu
        )

    def bn_backward(self, ops, grad: Tensor, relu: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(grad of conv_out, grad of bn_weight, grad of bn_bias)."""
        return ops.bn_act_bwd(
            grad, self.conv_out, self.bn_weight, self.bn_bias, self.mean, self.invstd, True, relu
        )


class _StageGrads:
    """The gradients of one stage's tensors, filled in as backward finds them."""

    def __init__(self) -> None:
        self.conv_weight = self.conv_bias = self.bn_weight = self.bn_bias = None

    def as_inputs(self, stage: SavedStage) -> StageTensors:
        # The BN ops return gradients for absent (None) affine parameters too.
        return StageTensors(
            self.conv_weight,
            self.conv_bias,
            self.bn_weight if stage.bn_weight is not None else None,
            self.bn_bias if stage.bn_bias is not None else None,
            None,
            None,
        )


def lean_residual(
    backend: Backend,
    x: Tensor,
    stages: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d]],
    projection: tuple[nn.Conv2d, nn.BatchNorm2d] | None,
    given: Tensor | None,
) -> Tensor:
    """relu(bn_k(conv_k(... relu(bn_1(conv_1(x))) ...)) + shortcut) as one
    autograd node that saves only the convolution outputs.

    Args:
        backend: the backend whose ops run the node (resnet_fast.nn.memory.lean_backend).
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
        bn_spec, stage_tensors = _stage_tensors(conv, bn, x)
        convs.append(conv_spec(conv))
        bns.append(bn_spec)
        tensors += stage_tensors
    shortcut = (
        "projection" if projection is not None else "given" if given is not None else "identity"
    )
    plan = BlockPlan(backend, tuple(convs), tuple(bns), len(stages), shortcut)
    return _LeanBlockFunction.apply(plan, x, given, *tensors)


def _per_stage(flat: Sequence) -> list[StageTensors]:
    return [StageTensors(*flat[i : i + _PER_STAGE]) for i in range(0, len(flat), _PER_STAGE)]


class _LeanBlockFunction(torch.autograd.Function):
    """Inputs: plan, x, given, then StageTensors per (conv, BN) stage: the
    main path's stages in order, then the projection's."""

    @staticmethod
    def forward(ctx, plan: BlockPlan, x: Tensor, given: Tensor | None, *tensors):
        ops = plan.backend.ops
        stages = _per_stage(tensors)
        saved: list[SavedStage] = []
        # How each convolution runs, decided once here: its backward runs the
        # same way (the choice was measured forward and backward together).
        paths: dict[int, str] = {}

        def conv_bn(i: int, input: Tensor, residual: Tensor | None, relu: bool) -> Tensor:
            t, bn = stages[i], plan.bns[i]
            paths[i] = training.conv_path(input, t.conv_weight, plan.convs[i])
            c = training.conv2d(input, t.conv_weight, t.conv_bias, plan.convs[i], paths[i])
            args = (t.bn_weight, t.bn_bias, t.running_mean, t.running_var, True, bn.momentum)
            if residual is None:
                out, mean, invstd = ops.bn_act_fwd(c, *args, bn.eps, relu)
            else:
                out, mean, invstd = ops.bn_add_act_fwd(c, residual, *args, bn.eps, relu)
            saved.append(SavedStage(c, mean, invstd, *t[:4]))
            return out

        h = x
        for i in range(plan.stages - 1):
            h = conv_bn(i, h, None, True)
        if plan.shortcut == "identity":
            residual = x
        elif plan.shortcut == "projection":
            # Run before the last stage so that its record comes last.
            residual = conv_bn(plan.stages, x, None, False)
        else:
            residual = given
        out = conv_bn(plan.stages - 1, h, residual, True)
        if plan.shortcut == "projection":  # main path's stages first
            saved[-2], saved[-1] = saved[-1], saved[-2]
        ctx.plan, ctx.paths = plan, paths
        ctx.save_for_backward(x, given, *(t for stage in saved for t in stage))
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        plan: BlockPlan = ctx.plan
        ops = plan.backend.ops
        x, given, *flat = ctx.saved_tensors
        per = len(SavedStage._fields)
        saved = [SavedStage(*flat[i : i + per]) for i in range(0, len(flat), per)]
        needs_x = ctx.needs_input_grad[1]
        needs = _per_stage(ctx.needs_input_grad[3:])
        grads = [_StageGrads() for _ in saved]

        def conv_backward(i: int, grad: Tensor, input: Tensor, needs_input: bool):
            stage, want = saved[i], needs[i]
            mask = (needs_input, want.conv_weight, stage.conv_bias is not None and want.conv_bias)
            g_in, grads[i].conv_weight, grads[i].conv_bias = training.conv2d_backward(
                grad, input, stage.conv_weight, stage.conv_bias, plan.convs[i], mask, ctx.paths[i]
            )
            return g_in

        last = plan.stages - 1
        if plan.shortcut == "identity":
            residual = x
        elif plan.shortcut == "projection":
            residual = saved[-1].bn_output(ops, relu=False)
        else:
            residual = given
        s = saved[last]
        grad, grad_residual, grads[last].bn_weight, grads[last].bn_bias = ops.bn_add_act_bwd(
            grad_out, s.conv_out, residual, s.bn_weight, s.bn_bias, s.mean, s.invstd, True, True
        )
        del residual

        grad_x = None
        for i in range(last, -1, -1):
            # The input this convolution read: x, or the previous stage's
            # BN-ReLU output, recomputed.
            input = x if i == 0 else saved[i - 1].bn_output(ops, relu=True)
            g_in = conv_backward(i, grad, input, i > 0 or needs_x)
            del input
            if i > 0:
                grad, grads[i - 1].bn_weight, grads[i - 1].bn_bias = saved[i - 1].bn_backward(
                    ops, g_in, relu=True
                )
            else:
                grad_x = g_in

        grad_given = None
        if plan.shortcut == "identity":
            # In place: grad_x is the convolution backward's own fresh tensor.
            grad_x = (
                grad_residual if grad_x is None else grad_x.add_(grad_residual.to(grad_x.dtype))
            )
        elif plan.shortcut == "projection":
            p = len(saved) - 1
            g_short, grads[p].bn_weight, grads[p].bn_bias = saved[p].bn_backward(
                ops, grad_residual, relu=False
            )
            g_x_short = conv_backward(p, g_short, x, needs_x)
            if g_x_short is not None:
                grad_x = g_x_short if grad_x is None else grad_x.add_(g_x_short)
        else:
            grad_given = grad_residual
        if not needs_x:
            grad_x = None
        stage_grads = (t for g, stage in zip(grads, saved, strict=True) for t in g.as_inputs(stage))
        return (None, grad_x, grad_given, *stage_grads)


def lean_bn_relu_maxpool(
    backend: Backend, x: Tensor, bn: nn.BatchNorm2d, pool: nn.MaxPool2d
) -> Tensor:
    """max_pool(relu(bn(x))), the tail of an ImageNet ResNet's stem, as one
    autograd node that keeps x (the stem convolution's output) only: the
    BN-ReLU output and the pooling indices, which eager keeps both, are
    recomputed in backward.

    Args:
        backend: the backend whose ops run the node (resnet_fast.nn.memory.lean_backend).
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
        ops = plan.backend.ops
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
        ops = plan.backend.ops
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
