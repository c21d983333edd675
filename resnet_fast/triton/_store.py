"""Conversion of fp32 / fp64 results to the output dtype, identical on a GPU
and under Triton's interpreter.

On a GPU, ``x.to(tl.bfloat16)`` rounds to nearest even. Triton's CPU
interpreter (3.x) truncates instead, even when asked for "rtne", which
doubles the rounding error of every bf16 output. Under the interpreter the
kernels therefore round explicitly (RNE on the fp32 bit pattern); the
conversion after it is exact. On a GPU EXPLICIT_RNE is False and this is the
plain cast.
"""

import triton
import triton.language as tl


@triton.jit
def to_dtype(y, dtype: tl.constexpr, EXPLICIT_RNE: tl.constexpr):
    if EXPLICIT_RNE and dtype == tl.bfloat16:
        bits = y.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        y = bits.to(tl.float32, bitcast=True)
    return y.to(dtype)
