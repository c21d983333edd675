"""Eval-mode 1x1 and 3x3 convolutions with BN folded in: which algorithm
runs them, as tuned in the model.

Three candidates compute the same convolution (and the bias, residual add
and ReLU of the folded block) with different arithmetic and speed:

- "onednn": oneDNN's direct convolution, prepacked (folded.py), the default;
- "winograd": Winograd F(4x4, 3x3) (winograd.py; 3x3 of stride 1 only; off
  with ``RESNET_FAST_WINOGRAD=0``), fastest on maps of 8x8 and more;
- "taps": one matrix product per kernel tap (taps.py; off with
  ``RESNET_FAST_TAPS=0``), fastest on maps of 2x2 and 4x4, where most of a
  padded convolution is padding.

Which is fastest in a model is not what each is alone (a layer's buffers
displace the next layer's data from the caches), so the choice is timed in
the model by resnet_fast.tune (settle.py), per :func:`choice_key`, and
stored; until then, and where nothing may be timed, oneDNN's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import measured, taps, winograd
from .spec import float32_channels_last

KIND = "eval_conv"
"""The kind of the measured choice (measured.py)."""

DEFAULT = "onednn"
"""The candidate kept until another is measured faster."""


def candidates(key: tuple) -> tuple[str, ...]:
    """The candidates for ``key`` (:func:`choice_key`), the default first:
    Winograd for 3x3 kernels of stride 1, tap by tap for all; each where
    enabled (``RESNET_FAST_WINOGRAD``, ``RESNET_FAST_TAPS``)."""
    _, _, kernel, stride, *_ = key
    found = [DEFAULT]
    if kernel == 3 and stride == 1 and winograd.ENABLED:
        found.append("winograd")
    if taps.ENABLED:
        found.append("taps")
    return tuple(found)


def eligible(input: Tensor, conv: nn.Conv2d, residual: Tensor | None) -> bool:
    """Whether the eval-mode ``conv`` (its geometry; the weight run may be a
    folded copy) of ``input`` [N, C_in, H, W] [+ ``residual``] can run as
    another candidate than the default: a 3x3 kernel with padding 1 (zeros)
    or a 1x1 kernel without padding, stride 1 or 2, no dilation, one group;
    float32 channels_last operands on the CPU, no gradient needed."""
    k = conv.weight.shape[2]
    if tuple(conv.weight.shape[2:]) != (k, k) or k not in (1, 3):
        return False
    if tuple(conv.padding) != (k // 2, k // 2) or conv.padding_mode != "zeros":
        return False
    if tuple(conv.stride) not in ((1, 1), (2, 2)):
        return False
    if tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        return False
    operands = (input,) if residual is None else (input, residual)
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return False
    return float32_channels_last(*operands)


def choice_key(
    input: Tensor, weight: Tensor, stride: int, residual: Tensor | None, relu: bool
) -> tuple:
    """The measured choice among the candidates for an eval-mode convolution
    of ``input`` [N, C_in, H, W] by ``weight`` [C_out, C_in, k, k] with
    ``stride`` (1 or 2)."""
    return (
        KIND, tuple(input.shape), weight.shape[2], stride, weight.shape[0], input.dtype,
        residual is not None, relu,
    )  # fmt: skip


def chosen(key: tuple, device: torch.device) -> str:
    """The candidate measured fastest for ``key`` (:func:`choice_key`) where
    the model runs it (settle.py); the default until then."""
    choice = measured.choose(key, DEFAULT, None, device)
    return choice if choice in candidates(key) else DEFAULT


def transform(choice: str, weight: Tensor) -> Tensor:
    """The form of the folded ``weight`` [C_out, C_in, k, k] that ``choice``
    (not the default) takes."""
    return winograd.weight_tiles(weight) if choice == "winograd" else taps.weight_taps(weight)


def bind(
    choice: str, weight: Tensor, stride: int, bias: Tensor | None, relu: bool
) -> Callable[[Tensor, Tensor | None], Tensor]:
    """act(conv2d(input, folded weight, bias, stride, padding=k // 2)
    [+ residual]) by ``choice`` (not the default; one of :func:`candidates`),
    with ``weight = transform(choice, folded)``, as a call of (input,
    residual).

    The call's arguments:
        input: [N, C_in, H, W] dense channels_last.
        residual: [N, C_out, H_out, W_out] dense channels_last, or None.

    It returns [N, C_out, H_out, W_out], channels_last.
    """
    if choice == "winograd":
        return lambda x, r: winograd.conv3x3(x, weight, bias, r, relu)
    return lambda x, r: taps.conv(x, weight, bias, r, relu, stride)
