"""A convolution's static arguments and output size, shared by the
convolution algorithms of this package."""

from __future__ import annotations

from typing import NamedTuple

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
