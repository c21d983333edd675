"""What every Triton launcher here shares: dtype mapping, [N, C, H, W]
strides, and a few launch-size helpers."""

import torch
import triton
import triton.language as tl
from torch import Tensor

from .interpreter import triton_interpreting


def tl_acc(dtype: torch.dtype):
    """resnet_fast._numerics.acc_dtype as a Triton dtype (a constexpr
    argument of the kernels)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


# The largest element offset the kernels address in int32.
_INT32_MAX = 2**31 - 1


def offset_dtype(*tensors: Tensor):
    """The integer dtype of the element offsets a kernel computes into these
    tensors (an ``IDX`` constexpr argument of the kernels).

    tl.int32 when every element of every tensor lies within int32 of its
    base (sum over dimensions of (size - 1) * stride), else tl.int64. A tile
    of 32-bit offsets takes one register per element instead of two, and
    its arithmetic half the instructions; it matters most where the loads do
    not vectorize (no unit stride), and every element has its own offset.
    Lanes past a tensor's end are masked off and never dereferenced, so
    their offsets may wrap.
    """
    largest = max(
        sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True)) for t in tensors
    )
    return tl.int32 if largest <= _INT32_MAX else tl.int64


def strides4(t: Tensor) -> tuple[int, int, int, int]:
    """(n, c, h, w) strides in elements of an [N, C, H, W] tensor.

    Size-1 dimensions get stride 0: their index is always 0, and a zero lets
    Triton's specialization see the other strides' contiguity unchanged."""
    return tuple(s if n > 1 else 0 for n, s in zip(t.shape, t.stride(), strict=True))


def channels_inner(*tensors: Tensor) -> bool:
    """Whether to tile with channels as the fast axis (channels_last-like
    operands) rather than the spatial rows (NCHW-like operands).

    Only decides coalescing on a GPU; the kernels are correct for any
    strides either way."""
    first = tensors[0]
    return first.stride(1) == 1 and first.shape[1] > 1 or first.shape[2] * first.shape[3] == 1


def rows_per_program(rows: int, channel_blocks: int, quantum: int = 256) -> int:
    """Rows one reduction program covers: enough programs to fill a GPU
    (about 1024 in flight), each a multiple of ``quantum`` (the largest
    BLOCK_R of any autotuning config) so partial buffers do not depend on
    which config the autotuner picks."""
    if triton_interpreting():
        # One program along the rows: the interpreter pays per program.
        return triton.cdiv(max(rows, 1), quantum) * quantum
    target = max(1, 1024 // max(channel_blocks, 1))
    per = triton.cdiv(rows, target)
    return max(quantum, triton.cdiv(per, quantum) * quantum)
