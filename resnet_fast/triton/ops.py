"""torch.ops.resnet_fast_triton: the resnet_fast ops on Triton kernels.

The namespace declares every op of the contract (resnet_fast._ops.OP_NAMES)
with the schema of the torch.ops.resnet_fast op of the same name, read from
the C++ declaration (csrc/registration.cpp), so the two cannot drift; the
fake kernels and the autograd formulas are the same functions
(resnet_fast._ops.register_contract). The kernels are registered for the
CUDA dispatch key, and for CPU tensors, which Triton runs only under its
interpreter (TRITON_INTERPRET=1, for tests).

A backend chosen at call time (resnet_fast.use_backend("triton") on a build
that also has the CUDA kernels) cannot be a dispatch key of the same op, so
Triton has its own namespace with the same ops instead: callers pick the
namespace (resnet_fast._backend.op_namespace) and call the same op names
with the same arguments.
"""

from collections.abc import Callable

import torch

from .. import _ops

NAMESPACE = "resnet_fast_triton"
_LIB = torch.library.Library(NAMESPACE, "DEF")  # noqa: TOR901 (kept alive by the module)
for _name in _ops.OP_NAMES:
    _LIB.define(str(getattr(_ops.ops, _name).default._schema).split("::", 1)[1])
_ops.register_contract(NAMESPACE)

ops = torch.ops.resnet_fast_triton


def implements(name: str) -> Callable[[Callable], Callable]:
    """Registers the decorated function as the Triton kernel of op ``name``,
    for CUDA tensors and (under the interpreter) CPU tensors."""

    def register(fn: Callable) -> Callable:
        for key in ("CUDA", "CPU"):
            _LIB.impl(name, fn, key)
        return fn

    return register
