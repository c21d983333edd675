// The op families' registrations, one function per host file of this folder:
// each registers its ops' kernels (for every device alike) on the library of
// a TORCH_LIBRARY_IMPL block (csrc/cpu/register_cpu.cpp,
// csrc/cuda/register_cuda.cpp, csrc/cuda_emulated/library.cpp). The schemas
// are csrc/registration.cpp's.
#pragma once

#include <torch/library.h>

namespace resnet_fast {

void register_bn_fused(torch::Library& m);   // bn_act_*, bn_add_act_* (bn_fused.cpp)
void register_bn_stages(torch::Library& m);  // bn_stats, bn_apply, bn_*_bwd_* (bn_stages.cpp)
void register_add_relu(torch::Library& m);   // add_relu_* (add_relu.cpp)

}  // namespace resnet_fast
