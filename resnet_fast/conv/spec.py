"""A convolution's static arguments and output size, which algorithms can
take it, and the operand checks of the CPU convolution ops' fake kernels:
shared by the convolution algorithms of this package."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ConvSpec(NamedTuple):
    """A convolution's static arguments, as F.conv2d takes them (pairs)."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of one spatial dimension (as F.conv2d computes it)."""
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def output_hw(input: Tensor, weight: Tensor, spec: ConvSpec) -> tuple[int, int]:
    """(H_out, W_out) of ``input`` [N, C_in, H, W] convolved by ``weight``
    [C_out, C_in / groups, kH, kW]."""

    def size(d: int) -> int:  # d: 0 for height, 1 for width
        n, k = input.shape[2 + d], weight.shape[2 + d]
        return output_size(n, k, spec.stride[d], spec.padding[d], spec.dilation[d])

    return size(0), size(1)


def same_size_3x3(weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """A 3x3 kernel, stride 1, padding 1, no dilation, one group: the
    convolutions that keep the map's size, which Winograd computes."""
    return (
        tuple(weight.shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
    )


def float32_channels_last(*tensors: Tensor) -> bool:
    """float32 dense channels_last 4-D CPU tensors."""
    return all(
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        for t in tensors
    )


def check_wide(t: Tensor, name: str) -> None:
    """float32 or float64, as the CPU convolution ops take (named ``name``)."""
    if t.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"resnet_fast: {name} must be float32 or float64; got {t.dtype}")


def check_conv_operands(
    input: Tensor,
    weight: Tensor,
    parts: int,
    name: str,
    bias: Tensor | None,
    residual: Tensor | None,
    stride: int = 1,
) -> Tensor:
    """The fake kernel of the CPU convolution ops (winograd_conv3x3, taps.py's
    taps_conv): checks their operands as the C++ does
    (csrc/cpu/conv_common.cpp) and returns an empty output.

    Args:
        input: [N, C_in, H, W] dense channels_last, float32 or float64.
        weight: [parts, C_in, C_out], the op's form of the weight (``name``).
        bias: [C_out] or None.
        residual: [N, C_out, H_out, W_out] or None.
        stride: 1 or 2 (padding 1 for 3x3, 0 for 1x1):
            H_out = ceil(H / stride).

    Returns:
        An empty [N, C_out, H_out, W_out] channels_last tensor.
    """
    if stride not in (1, 2):
        raise RuntimeError(f"resnet_fast: stride must be 1 or 2; got {stride}")
    check_wide(input, "input")
    if input.dim() != 4 or not input.is_contiguous(memory_format=torch.channels_last):
        raise RuntimeError("resnet_fast: input must be dense channels_last [N, C, H, W]")
    n, c, h, w = input.shape
    if weight.dim() != 3 or weight.shape[0] != parts or weight.shape[1] != c:
        raise RuntimeError(
            f"resnet_fast: {name} must be [{parts}, C_in, C_out] with "
            f"C_in = {c}; got {tuple(weight.shape)}"
        )
    shape = (n, weight.shape[2], -(-h // stride), -(-w // stride))
    if residual is not None and tuple(residual.shape) != shape:
        raise RuntimeError(
            f"resnet_fast: residual must be {list(shape)}; got {tuple(residual.shape)}"
        )
    return torch.empty(
        shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last
    )
