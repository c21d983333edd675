"""Eval-mode conv + BN with BN folded into the convolution, folded weights
cached per module and recomputed whenever an input tensor changes.

A cached fold is keyed by the identity (data_ptr) and version counter of the
conv weight and of every BN tensor, and by dtype and device; switching a
block to training drops its cache (nn.BatchNorm2d's own running-stat update
does not bump version counters). Folds that need gradients (eval-mode
fine-tuning) or happen under torch.compile are never cached. A cached fold
that runs through oneDNN is also kept prepacked in oneDNN's weight layout,
per input shape.
"""

import torch
from torch import Tensor, nn

from .._conv_eval import conv_folded_act, fold_bn, pack_for_onednn
from ..functional import add_relu


def _fold_inputs(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list[Tensor]:
    return [
        t
        for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if t is not None
    ]


def folded_weights(
    conv: nn.Conv2d, bn: nn.BatchNorm2d, cache: dict, key: str
) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv followed by eval-mode bn, from `cache` when fresh."""
    inputs = _fold_inputs(conv, bn)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if needs_grad or torch.compiler.is_compiling():
        return fold_bn(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
        )
    stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in inputs) + (bn.eps,)
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    weight, bias = fold_bn(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )
    cache[key] = (stamp, weight, bias)
    cache.pop(key + "/packed", None)  # the prepacked copy belonged to the old fold
    return weight, bias


def can_fold(bn: nn.Module) -> bool:
    """Eval-mode BN that uses running statistics (foldable)."""
    return isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_mean is not None


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
    folded weights and a fused epilogue."""
    weight, bias = folded_weights(conv, bn, cache, key)
    hit = cache.get(key)
    packed = None
    if hit is not None and hit[1] is weight:  # a cached fold: prepack it once too

        def packed() -> Tensor:
            stamp = (weight.data_ptr(), weight._version, tuple(x.shape), x.dtype)
            entry = cache.get(key + "/packed")
            if entry is None or entry[0] != stamp:
                w = pack_for_onednn(
                    weight, x, conv.stride, conv.padding, conv.dilation, conv.groups
                )
                entry = cache[key + "/packed"] = (stamp, w)
            return entry[1]

    return conv_folded_act(
        x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, residual, relu,
        add_relu, packed,
    )  # fmt: skip


def foldable_downsample(downsample: nn.Module | None) -> bool:
    """torchvision's projection shortcut: Sequential(Conv2d, BatchNorm2d)."""
    return (
        isinstance(downsample, nn.Sequential)
        and len(downsample) == 2
        and isinstance(downsample[0], nn.Conv2d)
        and can_fold(downsample[1])
    )


class FoldingMixin(nn.Module):
    """A module that runs some conv + BN pairs folded in eval mode, caching
    the folded weights; training mode drops the cache."""

    def train(self, mode: bool = True):
        self.__dict__.setdefault("_fold_cache", {}).clear()
        return super().train(mode)

    def __getstate__(self):
        # The cache is derived data (and may hold oneDNN tensors, which do not
        # pickle): torch.save and copy.deepcopy leave it behind.
        state = super().__getstate__()
        state.pop("_fold_cache", None)
        return state

    def _conv_bn(self, conv, bn, x, key, residual=None, relu=True):
        cache = self.__dict__.setdefault("_fold_cache", {})
        return conv_bn_eval(conv, bn, x, cache, key, residual, relu)
