"""resnet_fast: fused BatchNorm / residual-add / ReLU ops for ResNet training
and inference in PyTorch.

Public API:
    resnet_fast.functional   batch_norm_relu, batch_norm_add_relu, add_relu,
                             conv_bn_relu, fold_bn
    resnet_fast.nn           BasicBlock, Bottleneck, BatchNormReLU2d, BatchNormAddReLU2d
    resnet_fast.models       resnet18..152, resnext, wide_resnet, CIFAR ResNets,
                             pre-activation ResNets (preact_resnet18..164)
    resnet_fast.convert      swap torchvision-style blocks for fused ones (revert undoes it)
    resnet_fast.convert_sync_batchnorm  synchronized BN across processes (DDP), fused kept
    resnet_fast.freeze       declare a model's tensors constant for deployment (eval folds
                             kept without comparing values on each call)
    resnet_fast.tune         time the eval-mode convolution choices in the model, on an
                             example batch, and store them (before serving)
    resnet_fast.distributed  sync_batch_norm: the functional synchronized BN
    resnet_fast.reference    the pure-PyTorch definitions (test oracle)
    resnet_fast.use_backend  context manager: "cpu", "cuda", "triton", "reference"
    resnet_fast.build_info   what this build contains

Private subpackages: _native (building and loading the C++/CUDA library),
_ops (the dispatch point and the ops' contract), conv (convolution
algorithms), lean (memory-lean autograd nodes), graph_fusion (convert()'s
graph route), triton (the Triton backend), cli (the resnet-fast command) and
harness (its measurements).
"""

from . import distributed, functional, models, nn, reference  # noqa: F401
from ._native import build_info
from ._ops import contract, reference_ops  # noqa: F401  (torch.ops.resnet_fast's contract; the reference's ops)
from ._ops.backends import BACKENDS, current_backend, use_backend
from .conv.settle import tune
from .convert import convert, revert
from .nn.folding import freeze
from .nn.sync_batchnorm import convert_sync_batchnorm

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "build_info",
    "convert",
    "convert_sync_batchnorm",
    "current_backend",
    "distributed",
    "freeze",
    "functional",
    "models",
    "nn",
    "reference",
    "revert",
    "tune",
    "use_backend",
]
