// The CPU-only convolution ops (no GPU kernels: on a GPU, cuDNN chooses its
// own algorithms): Winograd F(4x4, 3x3) (winograd.cpp) and the tap-by-tap
// 1x1 and 3x3 convolution (taps_conv.cpp).
#pragma once

#include <torch/library.h>

namespace resnet_fast::cpu {

// Registers winograd_weight and winograd_conv3x3 on a CPU library block.
void register_winograd(torch::Library& m);

// Registers taps_conv and taps_weight_grad on a CPU library block.
void register_taps_conv(torch::Library& m);

}  // namespace resnet_fast::cpu
