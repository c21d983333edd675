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
                     output only (see nn/lean.py)

A residual whose shape, dtype or device differs from the BN output (a
broadcasting add, a mixed-dtype sum) runs the original unfused computation
with a one-time warning: a traced graph does not know shapes.
"""

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import functional as RF
from ..nn.batchnorm import _bn_arguments
from ..nn.folding import can_fold, conv_bn_eval
from ..nn.lean import DEFAULT_MEMORY, lean_backend, lean_bn_relu_maxpool

_warned: set[str] = set()


@dataclass
class FusionState:
    """Per-graph state the calls share: the eval fold cache and the memory mode."""

    cache: dict = field(default_factory=dict)
    memory: str = DEFAULT_MEMORY

    def __getstate__(self):
        # Folded weights are derived data (oneDNN-packed ones do not pickle).
        return {"cache": {}, "memory": self.memory}


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


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
    if residual is not None and not _residual_fits(residual, x.shape, x):
        return _unfused(x, bn, residual)
    running_mean, running_var, training, momentum = _bn_arguments(bn, x)
    return RF._batch_norm_act(
        x, residual, running_mean, running_var, bn.weight, bn.bias,
        training, momentum, bn.eps, relu,
    )  # fmt: skip


def _conv_out_shape(conv: nn.Conv2d, x: Tensor) -> tuple[int, ...]:
    n, _, h, w = x.shape
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
        residual: None or [N, C_out, H_out, W_out] added before the ReLU.
        relu: ReLU (True) or identity (False).

    Returns:
        [N, C_out, H_out, W_out].
    """
    if can_fold(bn) and x.dim() == 4:
        if residual is not None and tuple(residual.shape) != _conv_out_shape(conv, x):
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
    if can_fold(bn) and x.dim() == 4:
        return pool(conv_bn_eval(conv, bn, x, state.cache, key, None, True))
    y = conv(x)
    if state.memory == "lean":
        backend = lean_backend(y, [bn])
        if backend is not None:
            return lean_bn_relu_maxpool(backend, y, bn, pool)
    return pool(bn_act(y, bn))
