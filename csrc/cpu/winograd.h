// The Winograd F(4x4, 3x3) convolution ops, a CPU algorithm (winograd.cpp).
#pragma once

#include <torch/library.h>

namespace resnet_fast::cpu {

// Registers winograd_weight and winograd_conv3x3 on a CPU library block.
void register_winograd(torch::Library& m);

}  // namespace resnet_fast::cpu
