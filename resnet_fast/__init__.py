"""resnet_fast: fused BatchNorm / residual-add / ReLU ops for ResNet training
and inference in PyTorch.

Public API:
    resnet_fast.functional   batch_norm_relu, batch_norm_add_relu, add_relu,
                             conv_bn_relu, fold_bn
    resnet_fast.reference    the pure-PyTorch definitions (test oracle)
    resnet_fast.use_backend  context manager: "cpu", "cuda", "triton", "reference"
    resnet_fast.build_info   what this build contains
"""

from . import _ops, functional, reference  # noqa: F401  (_ops registers autograd and fakes)
from ._backend import BACKENDS, current_backend, use_backend
from ._native import build_info

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "build_info",
    "current_backend",
    "functional",
    "reference",
    "use_backend",
]
