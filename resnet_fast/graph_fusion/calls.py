"""What a rewritten graph calls in place of the nodes it fused.

Each function takes the very modules the original forward called (so their
parameters, buffers, train/eval flags and settings are read at call time,
as their own forward would) and computes exactly what the original nodes
computed, through resnet_fast's fused ops:

- bn_act:            act(bn(x) [+ residual]), act = ReLU or identity
- conv_bn_act:       act(bn(conv(x)) [+ residual]); in eval the BN is
                     folded into the convolution (cached in `state`)
- conv_bn_relu_pool: max_pool(relu(bn(conv(x)))), an ImageNet stem; in
                     training one lean node that keeps the convolution
                     output only (see resnet_fast/lean/nodes.py)
- residual_block:    a whole residual block (stages of conv -> BN -> ReLU,
                     the last one's BN + shortcut + ReLU): one lean node in
                     training, folded convolutions in eval

A residual whose shape, dtype or device differs from the BN output (a
broadcasting add, a mixed-dtype sum) runs the original unfused computation
with a one-time warning: a traced graph does not know shapes.
"""

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._ops.fused import module_batch_norm_act
from ..conv.inference import FoldCache, conv_bn_eval
from ..lean.nodes import lean_bn_relu_maxpool
from ..lean.residual import residual_train
from ..nn.folding import can_fold, has_hooks
from ..nn.memory import DEFAULT_MEMORY, lean_backend, runs_lean

_warned: set[str] = set()


@dataclass
class FusionState:
    """Per-graph state the calls share: the eval fold cache and the memory mode."""

    cache: FoldCache = field(default_factory=FoldCache)
    memory: str = DEFAULT_MEMORY


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _as_traced(conv: nn.Module | None, bn: nn.Module, pool: nn.Module | None = None) -> bool:
    """Whether the modules are still what the graph was fused for: exactly
    nn.Conv2d / nn.BatchNorm2d / nn.MaxPool2d without hooks. A module swapped
    or re-classed since convert() (convert_sync_batchnorm makes BNs
    synchronized in place) or given a hook runs its own forward instead."""
    same = (
        type(bn) is nn.BatchNorm2d
        and (conv is None or type(conv) is nn.Conv2d)
        and (pool is None or type(pool) is nn.MaxPool2d)
    )
    if same and not has_hooks(conv, bn, pool):
        return True
    _warn_once(
        "changed",
        "resnet_fast.convert: a module of a fused chain was replaced, re-classed or given a "
        "hook after convert(); that chain runs its modules' own forward (unfused)",
    )
    return False


def _modules_forward(x, conv, bn, residual, relu):
    y = bn(conv(x) if conv is not None else x)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y


def _residual_fits(residual: Tensor, shape, like: Tensor) -> bool:
    return (
        tuple(residual.shape) == tuple(shape)
        and residual.dtype == like.dtype
        and residual.device == like.device
    )


def _unfused(y: Tensor, bn: nn.Module, residual: Tensor) -> Tensor:
    _warn_once(
        "residual",
        "resnet_fast.convert: a fused BN + add + ReLU met a residual of another shape, dtype "
        f"or device than the BN output ({tuple(residual.shape)} {residual.dtype} vs "
        f"{tuple(y.shape)} {y.dtype}); that add runs unfused, as the original did",
    )
    return torch.relu(bn(y) + residual)


def bn_act(
    x: Tensor, bn: nn.BatchNorm2d, residual: Tensor | None = None, relu: bool = True
) -> Tensor:
    """act(bn(x) [+ residual]) in one fused op, act = ReLU or identity.

    Args:
        x: [N, C, H, W], the BN input.
        bn: a plain nn.BatchNorm2d (any momentum, affine, track_running_stats).
        residual: None or [N, C, H, W] added before the ReLU.
        relu: ReLU (True) or identity (False).

    Returns:
        [N, C, H, W].
    """
    if not _as_traced(None, bn):
        return _modules_forward(x, None, bn, residual, relu)
    if residual is not None and not _residual_fits(residual, x.shape, x):
        return _unfused(x, bn, residual)
    return module_batch_norm_act(bn, x, residual, relu)


def _conv_out_shape(conv: nn.Conv2d, shape) -> tuple[int, ...]:
    n, _, h, w = shape
    sizes = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip(
            (h, w), conv.padding, conv.dilation, conv.kernel_size, conv.stride, strict=True
        )
    ]
    return (n, conv.out_channels, *sizes)


def conv_bn_act(
    x: Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    state: FusionState,
    key: str,
    residual: Tensor | None = None,
    relu: bool = True,
) -> Tensor:
    """act(bn(conv(x)) [+ residual]), act = ReLU or identity; in eval, one
    convolution with the BN folded into it and the add / ReLU as its epilogue.

    Args:
        x: [N, C_in, H, W].
        conv: a plain nn.Conv2d (zero padding; any bias, groups, dilation).
        bn: a plain nn.BatchNorm2d over the convolution's output channels.
        state: the graph's FusionState (fold cache).
        key: this call's name in the fold cache.
        residual, relu: as in :func:`bn_act`, the residual [N, C_out, H_out, W_out].

    Returns:
        [N, C_out, H_out, W_out].
    """
    if not _as_traced(conv, bn):
        return _modules_forward(x, conv, bn, residual, relu)
    if can_fold(bn) and x.dim() == 4:
        if residual is not None and tuple(residual.shape) != _conv_out_shape(conv, x.shape):
            return _unfused(conv(x), bn, residual)
        return conv_bn_eval(conv, bn, x, state.cache, key, residual, relu)
    return bn_act(conv(x), bn, residual, relu)


def conv_bn_relu_pool(
    x: Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    pool: nn.MaxPool2d,
    state: FusionState,
    key: str,
) -> Tensor:
    """pool(relu(bn(conv(x)))): an ImageNet ResNet stem.

    In training with memory "lean", BN-ReLU-pool is one autograd node that
    keeps the convolution output only; in eval the BN is folded into the
    convolution.

    Args:
        x: [N, C_in, H, W].
        conv, bn: as in :func:`conv_bn_act`.
        pool: an nn.MaxPool2d.
        state: the graph's FusionState (fold cache, memory mode).
        key: this call's name in the fold cache.

    Returns:
        [N, C_out, H_pool, W_pool].
    """
    if not _as_traced(conv, bn, pool):
        return pool(_modules_forward(x, conv, bn, None, True))
    if can_fold(bn) and x.dim() == 4:
        return pool(conv_bn_eval(conv, bn, x, state.cache, key, None, True))
    y = conv(x)
    if runs_lean(state.memory):
        backend = lean_backend(y, [bn])
        if backend is not None:
            return lean_bn_relu_maxpool(backend, y, bn, pool)
    return pool(bn_act(y, bn))


def residual_block(
    x: Tensor,
    stages: tuple[tuple[nn.Conv2d, nn.BatchNorm2d], ...],
    projection: tuple[nn.Conv2d, nn.BatchNorm2d] | None,
    given: Tensor | None,
    state: FusionState,
    key: str,
) -> Tensor:
    """relu(bn_k(conv_k(... relu(bn_1(conv_1(x))) ...)) + shortcut), a residual
    block found in a traced graph, whatever its names.

    The shortcut is x (identity), bn_s(conv_s(x)) (projection) or `given`
    (any tensor the graph computed). In training with memory "lean" the block
    is one autograd node that keeps the convolution outputs only (see
    resnet_fast/lean/nodes.py); in eval every BN is folded into its convolution; otherwise
    each stage is a fused BN + ReLU (+ add) op after its convolution.

    Args:
        x: [N, C_in, H, W], the block input.
        stages: the main path's (plain nn.Conv2d, plain nn.BatchNorm2d) pairs.
        projection: the shortcut's (conv, bn) pair, or None.
        given: the shortcut tensor when neither identity nor projection.
        state: the graph's FusionState (fold cache, memory mode).
        key: this block's name in the fold cache.

    Returns:
        [N, C_out, H_out, W_out].
    """
    norms = [bn for _, bn in stages] + ([projection[1]] if projection is not None else [])
    pairs = list(stages) + ([projection] if projection is not None else [])
    if not all(_as_traced(conv, bn) for conv, bn in pairs):
        h = x
        for conv, bn in stages[:-1]:
            h = _modules_forward(h, conv, bn, None, True)
        residual = given if projection is None else projection[1](projection[0](x))
        residual = x if residual is None else residual
        return _modules_forward(h, stages[-1][0], stages[-1][1], residual, True)
    out_shape = tuple(x.shape)
    for conv, _ in stages:
        out_shape = _conv_out_shape(conv, out_shape)
    fits = given is None or _residual_fits(given, out_shape, x)
    if fits and x.dim() == 4 and all(can_fold(bn) for bn in norms):
        h = x
        for i, (conv, bn) in enumerate(stages[:-1]):
            h = conv_bn_eval(conv, bn, h, state.cache, f"{key}/{i}")
        residual = x if projection is None and given is None else given
        if projection is not None:
            conv, bn = projection
            residual = conv_bn_eval(conv, bn, x, state.cache, f"{key}/shortcut", relu=False)
        conv, bn = stages[-1]
        return conv_bn_eval(conv, bn, h, state.cache, f"{key}/last", residual)
    if fits and runs_lean(state.memory) and x.dim() == 4:
        backend = lean_backend(x, norms)
        if backend is not None:
            return residual_train(backend, state.memory, x, stages, projection, given)
    h = x
    for conv, bn in stages[:-1]:
        h = bn_act(conv(h), bn)
    residual = x if projection is None and given is None else given
    if projection is not None:
        residual = bn_act(projection[0](x), projection[1], None, False)
    conv, bn = stages[-1]
    return bn_act(conv(h), bn, residual)
