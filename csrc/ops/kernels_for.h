// The kernel table that runs a tensor's ops, and the one way host code turns
// a kernel's error into an exception.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "../common/bn_kernels.h"

namespace resnet_fast {

// The table for input's device, defined once per library:
//   resnet_fast._C (csrc/kernels_for.cpp): CPU tensors: cpu::bn_kernels();
//     CUDA tensors: cuda::bn_kernels() (CUDA builds).
//   resnet_fast._cuda_emulated (csrc/cuda_emulated/library.cpp, test-only):
//     CPU tensors: cuda::bn_kernels(), run by the CUDA-on-CPU emulation.
// The registrations only route tensors of those devices here.
const BnKernels& kernels_for(const at::Tensor& input);

// Raises what the kernel step `step` answered, if it failed.
inline void check_kernel(KernelError error, const char* step) {
  TORCH_CHECK(error == nullptr, "resnet_fast: ", step, ": ", error);
}

}  // namespace resnet_fast
