"""Eval-mode conv + BN as one convolution with the BN folded in (folded.py),
the folded weights cached per module, never stale.

A cached fold is used only while it provably belongs to the tensors it was
folded from: the same objects (weak references), storage pointers, version
counters, dtypes and devices of the conv weight and bias, of every BN
tensor and of BN's num_batches_tracked (nn.BatchNorm2d's native running-stat
update does not bump the running stats' version counters, but its
num_batches_tracked increment does), the same eps, and the same values: a
write through ``.data`` (hand-written SGD, EMA, weight clipping, pruning
masks applied in place) or a NumPy view reaches the storage without the
version counter, so each call also compares the tensors with a copy taken
when they were folded (one read of the weights, a tenth of the folded
convolution's time on ResNet-18 at 16 x 64x64; the copy costs the weights'
size in memory). A frozen cache (resnet_fast.freeze, for deployment, as
PyTorch's own freezing) skips that comparison: every change the version
counter sees is still refolded, writes it cannot see are not.

The fold itself is computed outside inference mode and outside autocast, so
the cached tensors are ordinary tensors whatever context the first call ran
in. Under autocast the folded convolution runs in autocast's dtype, as
conv2d would, from a copy of the fold in that dtype cached beside it.
Weights that are themselves inference tensors (a model built under
torch.inference_mode()) carry no version counter: their fold is recomputed
on every call, with a warning once. Folds that need gradients (eval-mode
fine-tuning) are never cached, and under torch.compile the fold is part of
the traced graph (inductor's freezing computes it once, at freeze time). A
cached fold that runs through oneDNN is also kept prepacked in oneDNN's
weight layout, per input shape, and one that runs as Winograd or tap by tap
(eval_algorithms.py) is kept in that algorithm's form.

An input the folded convolution cannot take (not 4-D, other channels,
dtype or device than the weights) runs the modules' own forward, which
raises PyTorch's own error for it.
"""

import contextlib
import warnings
import weakref
from dataclasses import dataclass, field

import torch
import torch._prims_common
import torch.nn.functional as F
from torch import Tensor, nn

from .._ops.fused import add_relu
from . import eval_algorithms, measured
from .folded import conv_folded_act, fold_bn, pack_for_onednn
from .spec import ConvSpec, output_hw

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """The bits of ``t``'s elements as one flat integer tensor: a view of a
    dense tensor (a parameter is; channels_last included), whose comparison
    is one memcmp-speed pass; a copy otherwise. Bits, not values: a NaN
    weight compares equal to itself."""
    t = t.detach()
    if not torch._prims_common.is_non_overlapping_and_dense_or_false(t):
        t = t.contiguous()
    flat = t.as_strided((t.numel(),), (1,), t.storage_offset())
    return flat.view(_BITS[t.element_size()])


@dataclass
class _Fold:
    """One cached fold and the proof of what it was folded from."""

    stamp: tuple
    weight: Tensor
    bias: Tensor
    sources: tuple  # weak references to the watched tensors
    values: tuple[Tensor, ...] | None  # copies of the fold's inputs; None when frozen

    def fresh(self, stamp: tuple, watched: list[Tensor], inputs: list[Tensor]) -> bool:
        if self.stamp != stamp or not all(
            r() is t for r, t in zip(self.sources, watched, strict=True)
        ):
            return False
        return self.values is None or all(
            torch.equal(_bits(t), v) for t, v in zip(inputs, self.values, strict=True)
        )


@dataclass
class FoldCache:
    """A module's folded convolutions, by the name of the conv + BN pair
    (and autocast dtype), with their oneDNN-prepacked forms and the forms
    the other 1x1 / 3x3 algorithms take (by name and algorithm).

    Attributes:
        frozen: skip the comparison of values each call (see the module doc).
    """

    frozen: bool = False
    folds: dict[str, _Fold] = field(default_factory=dict)
    packed: dict[str, tuple] = field(default_factory=dict)
    transformed: dict[tuple[str, str], Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        self.folds.clear()
        self.packed.clear()
        self.transformed.clear()

    def drop(self, key: str) -> None:
        for part in (self.folds, self.packed):
            part.pop(key, None)
        for entry in [k for k in self.transformed if k[0] == key]:
            del self.transformed[entry]


_warned_inference_weights = False


def _fold_inputs(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list[Tensor]:
    return [
        t
        for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if t is not None
    ]


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    return fold_bn(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )


def _cast(fold: tuple[Tensor, Tensor], dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    return fold if dtype is None else (fold[0].to(dtype), fold[1].to(dtype))


def _dtype_key(key: str, dtype: torch.dtype | None) -> str:
    return key if dtype is None else f"{key}@{dtype}"


def autocast_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The dtype autocast would run conv2d(x, weight) in, or None where it
    would leave both alone (autocast off, or float64 involved)."""
    device = x.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return None
    if torch.float64 in (x.dtype, weight.dtype) or not x.is_floating_point():
        return None
    return torch.get_autocast_dtype(device)


@contextlib.contextmanager
def _plain_context(device: torch.device):
    """Ordinary tensors, no graph, no autocast: what a cached tensor must be
    made in, whatever context the call that fills the cache runs in."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        if torch.amp.is_autocast_available(device.type):
            stack.enter_context(torch.autocast(device.type, enabled=False))
        yield


def _warn_inference_weights(conv: nn.Conv2d) -> None:
    global _warned_inference_weights
    if not _warned_inference_weights:
        _warned_inference_weights = True
        warnings.warn(
            "resnet_fast: a convolution or BatchNorm tensor is an inference tensor "
            f"(conv weight {tuple(conv.weight.shape)}; made under torch.inference_mode()), "
            "which has no version counter, so its BN fold cannot be cached and is "
            "recomputed on every call; build or load the model outside inference mode",
            RuntimeWarning,
            stacklevel=4,
        )


def folded_weights(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    cache: FoldCache,
    key: str,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, bool]:
    """(weight, bias, cached) of conv followed by eval-mode bn, from `cache`
    when it provably belongs to the current tensors (see the module doc).

    Args:
        dtype: the dtype to return them in (autocast's); None for conv.weight's.

    Returns:
        (weight [C_out, C_in / groups, kH, kW], bias [C_out], whether they
        are the cache's), folded in float32 (float64 for float64 weights),
        then cast to `dtype`.
    """
    inputs = _fold_inputs(conv, bn)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if needs_grad or torch.compiler.is_compiling():
        return (*_cast(_fold(conv, bn), dtype), False)
    key = _dtype_key(key, dtype)
    watched = inputs if bn.num_batches_tracked is None else [*inputs, bn.num_batches_tracked]
    if any(t.is_inference() for t in watched):
        _warn_inference_weights(conv)
        cache.drop(key)
        with _plain_context(conv.weight.device):
            return (*_cast(_fold(conv, bn), dtype), False)
    stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in watched) + (bn.eps,)
    hit = cache.folds.get(key)
    if hit is not None and hit.fresh(stamp, watched, inputs):
        return hit.weight, hit.bias, True
    with _plain_context(conv.weight.device):
        weight, bias = _cast(_fold(conv, bn), dtype)
        values = None if cache.frozen else tuple(_bits(t).clone() for t in inputs)
    # Weak references prove identity: a replaced parameter can reuse the old
    # one's address and version, never its object while the cache refers to it.
    cache.drop(key)  # the prepacked and transformed forms belonged to the old fold
    cache.folds[key] = _Fold(stamp, weight, bias, tuple(weakref.ref(t) for t in watched), values)
    return weight, bias, True


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
            return eval_algorithms.run(choice, x, transformed, stride, bias, residual, relu)
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def conv_bn_eval(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    x: Tensor,
    cache: FoldCache,
    key: str,
    residual: Tensor | None = None,
    relu: bool = True,
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

    Returns:
        [N, C_out, H_out, W_out].
    """
    if not _takes(conv, x, residual):
        return _modules_forward(conv, bn, x, residual, relu)
    dtype = autocast_dtype(x, conv.weight)
    if dtype is not None:
        x = x.to(dtype)
        residual = None if residual is None else residual.to(dtype)
    weight, bias, cached = folded_weights(conv, bn, cache, key, dtype)
    key = _dtype_key(key, dtype)
    geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
    if torch.compiler.is_compiling():
        return _traced(conv, x, weight, bias, residual, relu)
    packed = None
    if cached:  # a cached fold: prepack it once too

        def packed() -> Tensor:
            stamp = (tuple(x.shape), x.dtype)
            entry = cache.packed.get(key)
            if entry is None or entry[0] != stamp:
                with _plain_context(weight.device):
                    entry = cache.packed[key] = (stamp, pack_for_onednn(weight, x, *geometry))
            return entry[1]

    def direct() -> Tensor:
        return conv_folded_act(
            x, weight, bias, *geometry, residual, relu, add_relu, packed
        )  # fmt: skip

    if not cached or not eval_algorithms.eligible(x, conv, residual):
        return direct()
    stride = conv.stride[0]
    choice_key = eval_algorithms.choice_key(x, weight, stride, residual, relu)
    with measured.timed(choice_key):
        choice = eval_algorithms.chosen(choice_key, x.device)
        if choice == eval_algorithms.DEFAULT:
            return direct()
        entry = cache.transformed.get((key, choice))
        if entry is None:
            with _plain_context(weight.device):
                entry = cache.transformed[key, choice] = eval_algorithms.transform(choice, weight)
        return eval_algorithms.run(choice, x, entry, stride, bias, residual, relu)
