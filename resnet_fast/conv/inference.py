"""Eval-mode conv + BN as one convolution with the BN folded in (folded.py),
the folded weights cached per module, never stale (fold_cache.py).

Under autocast the folded convolution runs in autocast's dtype, as conv2d
would, from a copy of the fold in that dtype. A cached fold that runs
through oneDNN is also kept prepacked in oneDNN's weight layout, per input
shape, and one that runs as Winograd or tap by tap (eval_algorithms.py) is
kept in that algorithm's form.

Each call site (a module's conv + BN pair) keeps its last decision as a
ReadyCall: the algorithm, its prepared weights, and what the decision
depended on. A later call whose arguments, context and fold match runs it
after a few checks, without deciding again: about 5 us of Python instead of
15 (more in a model, whose convolutions leave the caches cold), which over
ResNet-50's 53 convolutions is about 4% of a frozen model's forward at
batch 16, 64x64, on a 2-core CPU.

An input the folded convolution cannot take (not 4-D, other channels,
dtype or device than the weights) runs the modules' own forward, which
raises PyTorch's own error for it.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._ops.fused import add_relu
from . import eval_algorithms, measured
from .fold_cache import (
    Fold,
    FoldCache,
    cached_pack,
    dtype_key,
    fold_tensors,
    folded_weights,
    plain_context,
)  # fmt: skip
from .folded import conv_folded_act, onednn_call, pack_for_onednn
from .spec import ConvSpec, output_hw

__all__ = ["FoldCache", "autocast_dtype", "conv_bn_eval"]


def autocast_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The dtype autocast would run conv2d(x, weight) in, or None where it
    would leave both alone (autocast off, or float64 involved)."""
    device = x.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return None
    if torch.float64 in (x.dtype, weight.dtype) or not x.is_floating_point():
        return None
    return torch.get_autocast_dtype(device)


def _takes(conv: nn.Conv2d, x: Tensor, residual: Tensor | None) -> bool:
    """Whether the folded convolution can run ``x``: the checks conv2d and
    BatchNorm2d would make, before any memory is read."""
    weight = conv.weight
    if x.dim() != 4 or x.shape[1] != conv.in_channels or x.device != weight.device:
        return False
    if x.dtype != weight.dtype and autocast_dtype(x, weight) is None:
        return False
    if residual is None:
        return True
    out = (x.shape[0], conv.out_channels, *output_hw(x, weight, _spec(conv)))
    same_dtype = residual.dtype == x.dtype or autocast_dtype(x, weight) is not None
    return tuple(residual.shape) == out and residual.device == x.device and same_dtype


def _spec(conv: nn.Conv2d) -> ConvSpec:
    return ConvSpec(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)


def _modules_forward(conv, bn, x, residual, relu) -> Tensor:
    """The computation as conv2d and BatchNorm2d do it: also their errors."""
    y = nn.BatchNorm2d.forward(bn, conv(x))
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


@torch.compiler.assume_constant_result
def _freezing() -> bool:
    """Whether inductor freezes the parameters of what it compiles (its
    constant folding then computes every weight transform once)."""
    import torch._inductor.config as inductor_config

    return bool(inductor_config.freezing)


def _traced(conv, x, weight, bias, residual, relu) -> Tensor:
    """The eval conv + folded BN as torch.compile sees it: the algorithm
    measured fastest, when the compiler freezes the weights (the folded and
    transformed weights are then constants, computed once); else plain ops,
    whose epilogue the compiler fuses itself."""
    if _freezing() and eval_algorithms.eligible(x, conv, residual):
        stride = conv.stride[0]
        key = eval_algorithms.choice_key(x, weight, stride, residual, relu)
        choice = eval_algorithms.chosen(key, x.device)
        if choice != eval_algorithms.DEFAULT:
            transformed = eval_algorithms.transform(choice, weight)
            return eval_algorithms.bind(choice, transformed, stride, bias, relu)(x, residual)
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def _signature(
    conv: nn.Conv2d, x: Tensor, residual: Tensor | None, relu: bool, reuse_residual: bool
) -> tuple:
    """Everything of a call, besides the fold and the context, that the
    decision among algorithms (and the prepacked weight) depends on."""
    operand = None if residual is None else (
        residual.shape, residual.stride(), residual.dtype, residual.device, reuse_residual
    )  # fmt: skip
    geometry = (conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode)
    return (x.shape, x.stride(), x.dtype, x.device, operand, relu, geometry,
            torch.get_num_threads())  # fmt: skip


class ReadyCall:
    """A call site's decision, kept for the calls after it: ``run(x,
    residual)`` runs the algorithm chosen with its prepared weights, and
    calling the ReadyCall runs it only for a call the decision provably
    holds for: the same fold, still fresh; the same signature (shapes,
    strides, dtypes, devices, geometry, thread count, whether the residual
    may be summed into); measured choices unchanged since; no autocast; no
    gradient needed. Kept for CPU calls outside a measurement only."""

    __slots__ = ("fold", "signature", "generation", "run")

    def __init__(self, fold: Fold, signature: tuple, run) -> None:
        self.fold, self.signature, self.run = fold, signature, run
        self.generation = measured.generation()

    def __call__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor, residual: Tensor | None,
        relu: bool, reuse_residual: bool,
    ) -> Tensor | None:  # fmt: skip
        """The call's result where the decision holds for it, else None."""
        if measured.generation() != self.generation or torch.is_autocast_enabled("cpu"):
            return None
        inputs, watched = fold_tensors(conv, bn)
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, residual, *inputs)
        ):
            return None
        if _signature(conv, x, residual, relu, reuse_residual) != self.signature:
            return None
        if not self.fold.fresh(watched, inputs, bn.eps):
            return None
        return self.run(x, residual)


def _keeps_decision(x: Tensor, dtype: torch.dtype | None, fold: Fold | None) -> bool:
    """Whether a call's decision may be kept as a ReadyCall: a cached fold,
    on the CPU, no autocast dtype, no measurement running."""
    return fold is not None and dtype is None and x.device.type == "cpu" and not measured.timing()


def conv_bn_eval(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    x: Tensor,
    cache: FoldCache,
    key: str,
    residual: Tensor | None = None,
    relu: bool = True,
    reuse_residual: bool = False,
) -> Tensor:
    """act(bn(conv(x)) [+ residual]) in eval mode, as one convolution with the
    folded weights and a fused epilogue. Under autocast it runs in autocast's
    dtype, as conv2d would.

    Args:
        conv: [C_out, C_in / groups, kH, kW] weights, zero padding.
        bn: eval-mode BatchNorm2d over C_out (running statistics).
        x: [N, C_in, H, W].
        cache: the module's FoldCache.
        key: the pair's name in the cache.
        residual: [N, C_out, H_out, W_out] added before the activation, or None.
        relu: ReLU (True) or identity (False).
        reuse_residual: nothing reads ``residual`` after this call, and
            nothing else refers to its memory: the result may be written
            into it (oneDNN's sum post-op; the other algorithms write a new
            tensor).

    Returns:
        [N, C_out, H_out, W_out]: ``residual`` itself when reused.
    """
    compiling = torch.compiler.is_compiling()
    ready = None if compiling else cache.ready.get(key)
    if ready is not None:
        y = ready(conv, bn, x, residual, relu, reuse_residual)
        if y is not None:
            return y
    if not _takes(conv, x, residual):
        return _modules_forward(conv, bn, x, residual, relu)
    dtype = autocast_dtype(x, conv.weight)
    if dtype is not None:
        x = x.to(dtype)
        residual = None if residual is None else residual.to(dtype)
    weight, bias, fold = folded_weights(conv, bn, cache, key, dtype)
    if compiling:
        return _traced(conv, x, weight, bias, residual, relu)
    signature = _signature(conv, x, residual, relu, reuse_residual)
    key = dtype_key(key, dtype)
    choice_key, run = None, None
    if fold is not None and eval_algorithms.eligible(x, conv, residual):
        stride = conv.stride[0]
        choice_key = eval_algorithms.choice_key(x, weight, stride, residual, relu)
        choice = eval_algorithms.chosen(choice_key, x.device)
        if choice != eval_algorithms.DEFAULT:
            transformed = cache.transformed.get((key, choice))
            if transformed is None:
                with plain_context(weight.device):
                    transformed = eval_algorithms.transform(choice, weight)
                cache.transformed[key, choice] = transformed
            run = eval_algorithms.bind(choice, transformed, stride, bias, relu)
    if run is None:
        geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
        packed = None if fold is None else lambda: _packed(cache, key, weight, x, geometry)
        run = onednn_call(x, weight, bias, *geometry, residual, relu, packed, reuse_residual)
        if run is None:  # conv2d and the fused epilogue; not kept
            return conv_folded_act(x, weight, bias, *geometry, residual, relu, add_relu)
    if _keeps_decision(x, dtype, fold):
        cache.ready[key] = ReadyCall(fold, signature, run)
    if choice_key is None:
        return run(x, residual)
    with measured.timed(choice_key):
        return run(x, residual)


def _packed(cache: FoldCache, key: str, weight: Tensor, x: Tensor, geometry: tuple) -> Tensor:
    """The cached fold ``weight`` prepacked for oneDNN, for ``x``'s shape."""
    return cached_pack(
        cache, key, (tuple(x.shape), x.dtype), lambda: pack_for_onednn(weight, x, *geometry)
    )
