// The CPU kernel table for this processor (see cpu_kernels.cpp).
#pragma once

#include <string>

#include "kernels/params.h"

namespace resnet_fast::cpu {

// The ISA build in use; selected once, at the first call.
const KernelTable& kernels();

// Comma-separated ISA builds compiled into this extension.
std::string compiled_capabilities();

}  // namespace resnet_fast::cpu
