// The ISA build of the CPU kernels that this processor runs (see
// isa_choice.cpp).
#pragma once

#include <string>

#include "kernels/isa_kernels.h"

namespace resnet_fast::cpu {

// The ISA build in use; selected once, at the first call.
const IsaKernels& isa_kernels();

// Comma-separated ISA builds compiled into this extension.
std::string compiled_capabilities();

}  // namespace resnet_fast::cpu
