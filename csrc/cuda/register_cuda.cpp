// The CUDA kernels of the ops of torch.ops.resnet_fast (CUDA builds): the op
// families' host code (csrc/ops/, which runs kernels_for(input): the CUDA
// table for CUDA tensors).
#include <torch/library.h>

#include "../ops/op_families.h"

TORCH_LIBRARY_IMPL(resnet_fast, CUDA, m) {
  resnet_fast::register_bn_fused(m);
  resnet_fast::register_bn_stages(m);
  resnet_fast::register_add_relu(m);
}
