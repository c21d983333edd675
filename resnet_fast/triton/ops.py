"""torch.ops.resnet_fast_triton: the resnet_fast ops on Triton kernels.

The namespace declares every op of the contract with the schema of the
torch.ops.resnet_fast op of the same name, with the same fake kernels and
autograd formulas (resnet_fast._ops.contract.declare_namespace). The kernels
are registered for the CUDA dispatch key, and for CPU tensors, which Triton
runs only under its interpreter (TRITON_INTERPRET=1, for tests).
"""

from collections.abc import Callable

import torch

from .._ops.contract import declare_namespace

NAMESPACE = "resnet_fast_triton"
_LIB = declare_namespace(NAMESPACE)

ops = torch.ops.resnet_fast_triton


def implements(name: str) -> Callable[[Callable], Callable]:
    """Registers the decorated function as the Triton kernel of op ``name``,
    for CUDA tensors and (under the interpreter) CPU tensors."""

    def register(fn: Callable) -> Callable:
        for key in ("CUDA", "CPU"):
            _LIB.impl(name, fn, key)
        return fn

    return register
