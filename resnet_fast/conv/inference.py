"""Eval-mode conv + BN as one convolution with the BN folded in (folded.py),
the folded weights cached per module and recomputed whenever an input
tensor changes.

A cached fold is keyed by the identity, storage pointer, version counter,
dtype and device of the conv weight and bias, of every BN tensor and of BN's
num_batches_tracked (nn.BatchNorm2d's native running-stat update does not
bump the running stats' version counters, but its num_batches_tracked
increment does), and by eps. The key is complete on its own: eval() keeps
the cache, and a change made in any mode, under torch.inference_mode()
included, is seen by the next call.

The fold itself is computed outside inference mode and outside autocast, so
the cached tensors are ordinary tensors whatever context the first call ran
in. Under autocast the folded convolution runs in autocast's dtype, as
conv2d would, from a copy of the fold in that dtype cached beside it.
Weights that are themselves inference tensors (a model built under
torch.inference_mode()) carry no version counter: their
fold is recomputed on every call, with a warning once. Folds that need
gradients (eval-mode fine-tuning) or happen under torch.compile are never
cached. A cached fold that runs through oneDNN is also kept prepacked in
oneDNN's weight layout, per input shape, and one that runs as Winograd
(winograd.py) is kept transformed.
"""

import contextlib
import warnings
import weakref

import torch
from torch import Tensor, nn

from .._ops.fused import add_relu
from . import winograd
from .folded import conv_folded_act, fold_bn, pack_for_onednn

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
    cache: dict,
    key: str,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv followed by eval-mode bn, from `cache` when fresh.

    Args:
        dtype: the dtype to return them in (autocast's); None for conv.weight's.

    Returns:
        (weight [C_out, C_in / groups, kH, kW], bias [C_out]), folded in
        float32 (float64 for float64 weights), then cast to `dtype`.
    """
    inputs = _fold_inputs(conv, bn)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if needs_grad or torch.compiler.is_compiling():
        return _cast(_fold(conv, bn), dtype)
    key = _dtype_key(key, dtype)
    watched = inputs if bn.num_batches_tracked is None else [*inputs, bn.num_batches_tracked]
    if any(t.is_inference() for t in watched):
        _warn_inference_weights(conv)
        for derived in ("", "/packed", "/winograd"):
            cache.pop(key + derived, None)
        with _plain_context(conv.weight.device):
            return _cast(_fold(conv, bn), dtype)
    stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in watched) + (bn.eps,)
    hit = cache.get(key)
    # An equal stamp has one entry per watched tensor, so the lengths match.
    if hit is not None and hit[0] == stamp:
        if all(r() is t for r, t in zip(hit[3], watched, strict=True)):
            return hit[1], hit[2]
    with _plain_context(conv.weight.device):
        weight, bias = _cast(_fold(conv, bn), dtype)
    # Weak references prove identity: a replaced parameter can reuse the old
    # one's address and version, never its object while the cache refers to it.
    cache[key] = (stamp, weight, bias, tuple(weakref.ref(t) for t in watched))
    for derived in ("/packed", "/winograd"):  # belonged to the old fold
        cache.pop(key + derived, None)
    return weight, bias


def conv_bn_eval(
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    x: Tensor,
    cache: dict,
    key: str,
    residual: Tensor | None = None,
    relu: bool = True,
) -> Tensor:
    """act(bn(conv(x)) [+ residual]) in eval mode, as one convolution with the
    folded weights and a fused epilogue. Under autocast it runs in autocast's
    dtype, as conv2d would."""
    dtype = autocast_dtype(x, conv.weight)
    if dtype is not None:
        x = x.to(dtype)
        residual = None if residual is None else residual.to(dtype)
    weight, bias = folded_weights(conv, bn, cache, key, dtype)
    key = _dtype_key(key, dtype)
    hit = cache.get(key)
    packed = None
    if hit is not None and hit[1] is weight:  # a cached fold: prepack it once too

        def packed() -> Tensor:
            stamp = (weight.data_ptr(), weight._version, tuple(x.shape), x.dtype)
            entry = cache.get(key + "/packed")
            if entry is None or entry[0] != stamp:
                with _plain_context(weight.device):
                    w = pack_for_onednn(
                        weight, x, conv.stride, conv.padding, conv.dilation, conv.groups
                    )
                entry = cache[key + "/packed"] = (stamp, w)
            return entry[1]

    def direct() -> Tensor:
        return conv_folded_act(
            x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, residual, relu,
            add_relu, packed,
        )  # fmt: skip

    if packed is None or not winograd.eligible(x, conv, residual):
        return direct()

    def by_winograd() -> Tensor:
        entry = cache.get(key + "/winograd")
        if entry is None or entry[0] is not weight:
            with _plain_context(weight.device):
                entry = cache[key + "/winograd"] = (weight, winograd.weight_tiles(weight))
        return winograd.conv3x3(x, entry[1], bias, residual, relu)

    candidates = lambda: {"onednn": direct, "winograd": by_winograd}  # noqa: E731
    return by_winograd() if winograd.chosen(x, weight, residual, relu, candidates) else direct()
