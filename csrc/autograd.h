// The autograd formulas of the resnet_fast ops (autograd.cpp).
#pragma once

#include <string>

namespace resnet_fast {

// Registers the autograd kernels of bn_act_fwd, bn_add_act_fwd and
// add_relu_fwd at the Autograd key of namespace `ns`, whose ops (all of
// registration.cpp's schemas) must already be declared. Once per namespace.
void register_autograd(const std::string& ns);

}  // namespace resnet_fast
