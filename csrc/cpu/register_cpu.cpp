// The CPU kernels of every op of torch.ops.resnet_fast: the op families'
// host code (csrc/ops/, which runs kernels_for(input): the CPU table for CPU
// tensors) and the CPU-only convolutions.
#include <torch/library.h>

#include "../ops/op_families.h"
#include "conv_ops.h"

TORCH_LIBRARY_IMPL(resnet_fast, CPU, m) {
  resnet_fast::register_bn_fused(m);
  resnet_fast::register_bn_stages(m);
  resnet_fast::register_add_relu(m);
  resnet_fast::cpu::register_winograd(m);
  resnet_fast::cpu::register_taps_conv(m);
}
