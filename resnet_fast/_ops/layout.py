"""The memory format every backend writes an [N, C, H, W] output in: the
rule of csrc/common/tensor_geometry.cpp (harmonize_layout), for the fake
kernels and the Python backends (Triton, the reference), so that every
backend lays out its outputs alike."""

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format


def _rows_ok(t: Tensor) -> bool:
    return t.shape[1] == 1 or t.stride(1) == 1


def _planar_ok(t: Tensor) -> bool:
    return t.shape[3] == 1 or t.stride(3) == 1


def output_memory_format(input: Tensor) -> torch.memory_format:
    """The memory format the kernels write for an [N, C, H, W] ``input``."""
    suggested = suggest_memory_format(input) == torch.channels_last
    if _rows_ok(input) and (suggested or input.shape[2] * input.shape[3] == 1):
        return torch.channels_last
    if _planar_ok(input):
        return torch.contiguous_format
    if _rows_ok(input):
        return torch.channels_last
    return torch.channels_last if suggested else torch.contiguous_format


def empty_activation(input: Tensor) -> Tensor:
    """An uninitialized [N, C, H, W] tensor like ``input``, in the memory
    format every backend's kernels write (output_memory_format)."""
    return torch.empty(input.shape, dtype=input.dtype, device=input.device).contiguous(
        memory_format=output_memory_format(input)
    )
