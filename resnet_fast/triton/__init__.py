"""The Triton backend: fused BN / add / ReLU kernels and an implicit-GEMM
convolution with fused epilogues, as torch.library.triton_op ops
(torch.ops.resnet_fast.triton_*).

Importing this package needs Triton. On a machine without a CUDA GPU the
kernels run on the CPU only under TRITON_INTERPRET=1, which must be set
before triton is first imported (tests/conftest.py does it for the tests).
"""

from .functional import (
    add_relu,
    batch_norm_act,
    batch_statistics,
    conv2d_act,
    conv_bn_act,
    conv_bn_act_train,
)

__all__ = [
    "add_relu",
    "batch_norm_act",
    "batch_statistics",
    "conv2d_act",
    "conv_bn_act",
    "conv_bn_act_train",
]
