"""The folded weights of eval-mode conv + BN pairs (folded.py), cached per
module, never stale.

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
in; a copy in autocast's dtype is cached beside it. Weights that are
themselves inference tensors (a model built under torch.inference_mode())
carry no version counter: their fold is recomputed on every call, with a
warning once. Folds that need gradients (eval-mode fine-tuning) are never
cached, and under torch.compile the fold is part of the traced graph
(inductor's freezing computes it once, at freeze time).
"""

import contextlib
import functools
import operator
import warnings
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._prims_common
from torch import Tensor, nn

from .folded import fold_bn

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_FOLDED = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


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


@functools.cache
def _registered_lookup(cls: type) -> bool:
    """Whether ``module.<name>`` of a ``cls`` instance is, for the names a
    fold reads, what nn.Module registered under that name: no class
    attribute (a parametrization's property) of those names and nn.Module's
    own attribute lookup."""
    return (
        cls.__getattr__ is nn.Module.__getattr__
        and cls.__getattribute__ is object.__getattribute__
        and not any(hasattr(cls, name) for name in _FOLDED)
    )


def fold_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, watched): the tensors a fold of conv + bn reads (conv weight
    and bias, BN weight, bias and running statistics; None ones left out),
    and those plus BN's num_batches_tracked, whose versions prove it fresh.

    Read from the modules' parameter and buffer tables where their classes
    look there (a tenth of nn.Module.__getattr__'s time, which sits on every
    eval call), else by getattr."""
    *folded, tracked = _registered_tensors(conv, bn) or (
        conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var,
        bn.num_batches_tracked,
    )  # fmt: skip
    inputs = [t for t in folded if t is not None]
    return inputs, inputs if tracked is None else [*inputs, tracked]


def _registered_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple | None:
    """fold_tensors' tensors, num_batches_tracked last, from the tables;
    None where getattr must say what they are (a class that resolves them
    otherwise, a name not registered)."""
    if not (_registered_lookup(type(conv)) and _registered_lookup(type(bn))):
        return None
    weights, norms, stats = conv._parameters, bn._parameters, bn._buffers
    try:
        return (
            weights["weight"], weights["bias"], norms["weight"], norms["bias"],
            stats["running_mean"], stats["running_var"], stats["num_batches_tracked"],
        )  # fmt: skip
    except KeyError:
        return None


def _stamp(watched: list[Tensor], eps: float) -> list:
    return [(t.data_ptr(), t._version, t.dtype, t.device) for t in watched] + [eps]


@dataclass
class Fold:
    """One cached fold and the proof of what it was folded from."""

    stamp: list
    weight: Tensor
    bias: Tensor | None
    sources: tuple  # weak references to the watched tensors
    values: tuple[Tensor, ...] | None  # copies of the fold's inputs; None when frozen

    def fresh(self, watched: list[Tensor], inputs: list[Tensor], eps: float) -> bool:
        """Whether this fold still belongs to ``watched`` and ``inputs``
        (:func:`fold_tensors`) and BN's ``eps``. The objects are compared
        first: they are the ones that were folded, so none is an inference
        tensor, whose version cannot be read."""
        if len(watched) != len(self.sources) or not all(
            map(operator.is_, watched, [source() for source in self.sources])
        ):
            return False
        if _stamp(watched, eps) != self.stamp:
            return False
        return self.values is None or all(
            torch.equal(_bits(t), v) for t, v in zip(inputs, self.values, strict=True)
        )


@dataclass
class FoldCache:
    """A module's folded convolutions, by the name of the conv + BN pair
    (and autocast dtype), with their oneDNN-prepacked forms, the forms the
    other 1x1 / 3x3 algorithms take (by name and algorithm), and each call
    site's decided call (inference.ReadyCall, by name).

    Attributes:
        frozen: skip the comparison of values each call (see the module doc).
    """

    frozen: bool = False
    folds: dict[str, Fold] = field(default_factory=dict)
    packed: dict[str, tuple] = field(default_factory=dict)
    transformed: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    def clear(self) -> None:
        for part in (self.folds, self.packed, self.transformed, self.ready):
            part.clear()

    def drop(self, key: str) -> None:
        """Forgets the fold named ``key`` (with an autocast dtype or not) and
        everything derived from it."""
        for part in (self.folds, self.packed, self.ready):
            part.pop(key, None)
        for entry in [k for k in self.transformed if k[0] == key]:
            del self.transformed[entry]


_warned_inference_weights = False


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    return fold_bn(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )


def _cast(fold: tuple[Tensor, Tensor], dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    return fold if dtype is None else (fold[0].to(dtype), fold[1].to(dtype))


def dtype_key(key: str, dtype: torch.dtype | None) -> str:
    """The cache's name for the fold ``key`` in autocast's ``dtype`` (None:
    the weights' own)."""
    return key if dtype is None else f"{key}@{dtype}"


@contextlib.contextmanager
def plain_context(device: torch.device):
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
) -> tuple[Tensor, Tensor, Fold | None]:
    """(weight, bias, fold) of conv followed by eval-mode bn, from `cache`
    when it provably belongs to the current tensors (see the module doc).

    Args:
        dtype: the dtype to return them in (autocast's); None for conv.weight's.

    Returns:
        (weight [C_out, C_in / groups, kH, kW], bias [C_out], the cache's
        Fold they belong to or None when they are not cached), folded in
        float32 (float64 for float64 weights), then cast to `dtype`.
    """
    inputs, watched = fold_tensors(conv, bn)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if needs_grad or torch.compiler.is_compiling():
        return (*_cast(_fold(conv, bn), dtype), None)
    key = dtype_key(key, dtype)
    if any(t.is_inference() for t in watched):
        _warn_inference_weights(conv)
        cache.drop(key)
        with plain_context(conv.weight.device):
            return (*_cast(_fold(conv, bn), dtype), None)
    fold = cached_fold(cache, key, watched, inputs, bn.eps, lambda: _cast(_fold(conv, bn), dtype))
    return fold.weight, fold.bias, fold


def cached_fold(
    cache: FoldCache,
    key: str,
    watched: list[Tensor],
    inputs: list[Tensor],
    eps: float,
    compute: Callable[[], tuple[Tensor, Tensor | None]],
) -> Fold:
    """The cache's fold named ``key`` where it provably belongs to
    ``watched`` (the tensors whose versions prove it fresh), ``inputs``
    (those it reads; compared by value unless the cache is frozen) and
    ``eps``; else ``compute()``'s (weight, bias), made in a plain context
    and cached in its place. No tensor may be an inference tensor."""
    hit = cache.folds.get(key)
    if hit is not None and hit.fresh(watched, inputs, eps):
        return hit
    with plain_context(inputs[0].device):
        weight, bias = compute()
        values = None if cache.frozen else tuple(_bits(t).clone() for t in inputs)
    # Weak references prove identity: a replaced parameter can reuse the old
    # one's address and version, never its object while the cache refers to it.
    cache.drop(key)  # the prepacked and transformed forms belonged to the old fold
    fold = Fold(_stamp(watched, eps), weight, bias, tuple(weakref.ref(t) for t in watched), values)
    cache.folds[key] = fold
    return fold


def cached_pack(cache: FoldCache, key: str, stamp: Hashable, pack: Callable[[], Tensor]) -> Tensor:
    """The cache's prepacked form of the fold named ``key``, made by
    ``pack()`` in a plain context where there is none yet or it was made for
    another ``stamp`` (what the packing depends on: an input shape, say)."""
    entry = cache.packed.get(key)
    if entry is None or entry[0] != stamp:
        with plain_context(cache.folds[key].weight.device):
            entry = cache.packed[key] = (stamp, pack())
    return entry[1]
