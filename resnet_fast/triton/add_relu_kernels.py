"""Triton kernel of add_relu (forward and backward share it).

Operands are seen as up to 4-D strided tensors; FLAT marks the common case of
three identically laid out dense tensors, walked as one contiguous range."""

import triton
import triton.language as tl

from ._store import to_dtype


@triton.jit
def _offsets(i, S1, S2, S3, s0, s1, s2, s3, FLAT: tl.constexpr):
    if FLAT:
        return i
    else:
        i3 = i % S3
        rest = i // S3
        i2 = rest % S2
        rest = rest // S2
        i1 = rest % S1
        i0 = rest // S1
        return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3


@triton.jit
def _add_relu_fwd_kernel(
    a_ptr, b_ptr, out_ptr,
    numel, S1, S2, S3,
    sa0, sa1, sa2, sa3,
    sb0, sb1, sb2, sb3,
    so0, so1, so2, so3,
    BACKWARD: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK: tl.constexpr,
    EXPLICIT_RNE: tl.constexpr,
):  # fmt: skip
    """Forward: out = relu(a + b). BACKWARD: out = a * [b > 0], with a the
    upstream gradient and b the forward's output."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    a = tl.load(a_ptr + _offsets(i, S1, S2, S3, sa0, sa1, sa2, sa3, FLAT), mask=mask)
    b = tl.load(b_ptr + _offsets(i, S1, S2, S3, sb0, sb1, sb2, sb3, FLAT), mask=mask)
    if BACKWARD:
        out = tl.where(b > 0, a, tl.zeros_like(a))
    else:
        # Summed in fp32 (fp64) and rounded once, as torch.relu(a + b) does.
        wide = tl.float64 if a.dtype == tl.float64 else tl.float32
        out = tl.maximum(a.to(wide) + b.to(wide), 0.0)
    o = _offsets(i, S1, S2, S3, so0, so1, so2, so3, FLAT)
    tl.store(out_ptr + o, to_dtype(out, out_ptr.dtype.element_ty, EXPLICIT_RNE), mask=mask)
