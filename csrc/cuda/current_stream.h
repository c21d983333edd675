// The stream the CUDA kernel table (bn_kernels_cuda.cpp) launches on.
#pragma once

#include <cuda_runtime.h>

namespace resnet_fast::cuda {

// The current stream of the current device, defined once per library: torch's
// (c10::cuda::getCurrentCUDAStream) in the CUDA build of resnet_fast._C
// (current_stream.cpp); none (nullptr) in the test-only library, whose
// CUDA-on-CPU emulation launches synchronously (csrc/cuda_emulated/library.cpp).
cudaStream_t current_stream();

}  // namespace resnet_fast::cuda
