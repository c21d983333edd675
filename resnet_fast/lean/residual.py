"""A residual block's training step: the lean node, the fused ops without
it, or eager PyTorch, whichever is measurably fastest.

Fusing BN, ReLU and the residual add saves passes over memory; where a
block's activations fit in the CPU's caches (the first stages of a ResNet
at a small resolution or batch) there is little to save, and the lean
node's recomputation can cost more than it saves. All three compute the
same function with the same parameters and running statistics, so with
``memory="auto"`` each block shape is timed every way on first use
(resnet_fast/conv/measured.py: forward and backward, on detached inputs,
running statistics restored afterwards) and the fastest kept; the lean
node unless another is faster by more than the margin. Blocks that run
eager keep what eager keeps for backward; blocks on the fused ops
("standard") what the ops' autograd keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._ops.backends import Backend
from .._ops.fused import module_batch_norm_act
from ..conv import measured
from .nodes import conv_spec, lean_residual

Pair = tuple[nn.Conv2d, nn.BatchNorm2d]


def residual_train(
    backend: Backend,
    memory: str,
    x: Tensor,
    stages: Sequence[Pair],
    projection: Pair | None,
    given: Tensor | None,
) -> Tensor:
    """relu(bn_k(conv_k(... relu(bn_1(conv_1(x))) ...)) + shortcut) in
    training, as :func:`~resnet_fast.lean.nodes.lean_residual` (``memory``
    "lean") or, with ``memory`` "auto", whichever of that,
    :func:`standard_residual` and :func:`eager_residual` is fastest for this
    shape on a backend whose timings count (lean elsewhere; while
    torch.compile traces, the choice already made or stored, else lean: see
    resnet_fast/conv/measured.py).

    Args:
        backend: the backend of the lean node (resnet_fast.nn.memory.lean_backend).
        memory: "lean" or "auto".
        x: [N, C_in, H, W], the block input.
        stages: the main path's (conv, bn) pairs.
        projection: the shortcut's (conv, bn) pair, or None.
        given: the shortcut tensor when there is no projection, or None
            (identity).

    Returns:
        [N, C_out, H_out, W_out], the block output.
    """
    if memory == "auto" and backend.measures:
        pairs = list(stages) + ([projection] if projection is not None else [])
        key = (
            "block", backend.name, tuple(x.shape), x.dtype,
            x.is_contiguous(memory_format=torch.channels_last),
            tuple((tuple(c.weight.shape), conv_spec(c), c.bias is not None) for c, _ in pairs),
            len(stages), projection is not None, None if given is None else tuple(given.shape),
        )  # fmt: skip
        choice = measured.choose(
            key, "lean", lambda: _candidates(backend, x, stages, projection, given), x.device
        )
        if choice == "eager":
            return eager_residual(x, stages, projection, given)
        if choice == "standard":
            return standard_residual(x, stages, projection, given)
    return lean_residual(backend, x, stages, projection, given)


def _bn(bn: nn.BatchNorm2d, y: Tensor) -> Tensor:
    """nn.BatchNorm2d's own forward (also for our fused subclasses)."""
    return nn.BatchNorm2d.forward(bn, y)


def eager_residual(
    x: Tensor, stages: Sequence[Pair], projection: Pair | None, given: Tensor | None
) -> Tensor:
    """The block as eager PyTorch computes it (conv, BatchNorm2d, ReLU, add),
    arguments as in :func:`residual_train`."""
    # In place where torchvision's blocks are: on BN outputs, which nothing
    # else holds (BN's backward does not read its output).
    h = x
    for conv, bn in stages[:-1]:
        h = F.relu(_bn(bn, conv(h)), inplace=True)
    if projection is not None:
        residual = _bn(projection[1], projection[0](x))
    else:
        residual = x if given is None else given
    conv, bn = stages[-1]
    out = _bn(bn, conv(h))
    out += residual
    return F.relu(out, inplace=True)


def standard_residual(
    x: Tensor, stages: Sequence[Pair], projection: Pair | None, given: Tensor | None
) -> Tensor:
    """The block on the fused ops without the lean node: each convolution,
    then its BN with the ReLU as one op (BN + residual add + ReLU for the
    last); arguments as in :func:`residual_train`."""
    h = x
    for conv, bn in stages[:-1]:
        h = module_batch_norm_act(bn, conv(h), None, relu=True)
    if projection is not None:
        residual = module_batch_norm_act(projection[1], projection[0](x), None, relu=False)
    else:
        residual = x if given is None else given
    conv, bn = stages[-1]
    return module_batch_norm_act(bn, conv(h), residual, relu=True)


def _candidates(backend, x, stages, projection, given) -> dict:
    """One training step of the block each way (forward, then backward to
    the input and the parameters through torch.autograd.grad, so no .grad
    changes), on detached inputs; the BN running statistics and batch
    counts the steps update are put back after the measurement by
    :class:`_KeepBatchNormState`."""
    pairs = list(stages) + ([projection] if projection is not None else [])
    params = [
        p for conv, bn in pairs for p in (conv.weight, conv.bias, bn.weight, bn.bias)
        if p is not None and p.requires_grad
    ]  # fmt: skip
    keep = _KeepBatchNormState([bn for _, bn in pairs])

    def leaf(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().requires_grad_(t.requires_grad)

    def step(forward):
        def run():
            xs, gs = leaf(x), leaf(given)
            inputs = [t for t in (xs, gs) if t is not None and t.requires_grad] + params
            with keep:  # backward included: autograd may have saved the buffers
                out = forward(xs, gs)
                if out.requires_grad:  # not when everything is frozen
                    torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)

        return run

    return {
        "lean": step(lambda xs, gs: lean_residual(backend, xs, stages, projection, gs)),
        "standard": step(lambda xs, gs: standard_residual(xs, stages, projection, gs)),
        "eager": step(lambda xs, gs: eager_residual(xs, stages, projection, gs)),
    }


class _KeepBatchNormState:
    """Context manager: the BN modules' running statistics and batch counts
    are what they were on entry when it exits."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]):
        self._norms = norms

    def __enter__(self):
        self._saved = [[None if t is None else t.clone() for t in _state(bn)] for bn in self._norms]

    def __exit__(self, *exc):
        with torch.no_grad():
            for bn, saved in zip(self._norms, self._saved, strict=True):
                for t, s in zip(_state(bn), saved, strict=True):
                    if t is not None:
                        t.copy_(s)
        return False


def _state(bn: nn.BatchNorm2d) -> tuple[Tensor | None, ...]:
    return bn.running_mean, bn.running_var, bn.num_batches_tracked
