"""The Triton backend: torch.ops.resnet_fast_triton, the resnet_fast ops
(same schemas, fake kernels and autograd as torch.ops.resnet_fast) on Triton
kernels, and an implicit-GEMM convolution with fused epilogues
(torch.ops.resnet_fast.triton_conv2d / triton_conv2d_stats).

Importing this package needs Triton. On a machine without a CUDA GPU the
kernels run on the CPU only under TRITON_INTERPRET=1, which must be set
before triton is first imported (tests/conftest.py does it for the tests).
"""

from .functional import add_relu, batch_norm_act, conv2d_act, conv_bn_act, conv_bn_act_train

__all__ = ["add_relu", "batch_norm_act", "conv2d_act", "conv_bn_act", "conv_bn_act_train"]
