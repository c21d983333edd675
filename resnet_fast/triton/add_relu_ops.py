"""add_relu_fwd / add_relu_bwd of torch.ops.resnet_fast_triton (see ops.py)
on one Triton kernel:

add_relu_fwd(input, other) -> relu(input + other), laid out like input
add_relu_bwd(grad_out, output) -> grad_out * (output > 0)
"""

import warnings

import torch
import triton
from torch import Tensor

from .._ops import checks
from . import configs
from .add_relu_kernels import _add_relu_fwd_kernel
from .interpreter import triton_interpreting
from .ops import implements

_kernel = triton.autotune(configs.ELEMENTWISE, key=["numel"])(_add_relu_fwd_kernel)
_warned_copy = False


def _dense(t: Tensor) -> bool:
    """Whether t's elements fill a gap-free range of its storage."""
    expected = 1
    for stride, size in sorted((s, n) for n, s in zip(t.shape, t.stride(), strict=True) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _dense_alike(*tensors: Tensor) -> bool:
    first = tensors[0]
    return _dense(first) and all(t.stride() == first.stride() for t in tensors[1:])


def _as4(t: Tensor) -> tuple[list[int], list[int]]:
    """Shape and strides of t padded in front to 4 dimensions."""
    pad = 4 - t.dim()
    return [1] * pad + list(t.shape), [0] * pad + list(t.stride())


def _launch(a: Tensor, b: Tensor, backward: bool) -> Tensor:
    # Laid out like the activation: input forward, output backward.
    out = torch.empty_like(b if backward else a)
    if out.numel() == 0:
        return out
    if not _dense_alike(a, b, out) and a.dim() > 4:
        global _warned_copy
        if not _warned_copy:
            _warned_copy = True
            warnings.warn(
                "resnet_fast triton add_relu: operands of more than 4 dimensions in different "
                "layouts are copied to one layout first (slower)",
                RuntimeWarning,
                stacklevel=4,
            )
        a, b = a.contiguous(), b.contiguous()
        out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    flat = _dense_alike(a, b, out)
    if flat:
        shape = [1, 1, 1, a.numel()]
        sa = sb = so = [0, 0, 0, 1]
    else:
        shape, sa = _as4(a)
        sb, so = _as4(b)[1], _as4(out)[1]
    numel = a.numel()
    _kernel[lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)](
        a, b, out, numel, shape[1], shape[2], shape[3], *sa, *sb, *so,
        BACKWARD=backward, FLAT=flat, EXPLICIT_RNE=triton_interpreting(),
    )  # fmt: skip
    return out


@implements("add_relu_fwd")
def add_relu_fwd(input: Tensor, other: Tensor) -> Tensor:
    checks.check_elementwise_pair(input, "input", other, "other")
    return _launch(input, other, backward=False)


@implements("add_relu_bwd")
def add_relu_bwd(grad_out: Tensor, output: Tensor) -> Tensor:
    checks.check_elementwise_pair(output, "output", grad_out, "grad_out")
    return _launch(grad_out, output, backward=True)
