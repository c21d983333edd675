"""The Triton backend: torch.ops.resnet_fast_triton, the resnet_fast ops
(same schemas, fake kernels and autograd as torch.ops.resnet_fast) on Triton
kernels, and an implicit-GEMM convolution with fused epilogues
(torch.ops.resnet_fast_triton.conv2d / conv2d_stats).

Importing this package imports nothing; ``resnet_fast.triton.backend``
(which needs Triton) registers every kernel, as
``resnet_fast._ops.backends.get("triton").ops`` does on first use. On a
machine without a CUDA GPU the kernels run on the CPU only under
TRITON_INTERPRET=1, which must be set before triton is first imported
(tests/conftest.py does it for the tests).
"""
